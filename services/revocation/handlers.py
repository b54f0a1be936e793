"""HTTP handlers: parse the request, call domain and store, reply. No SQL here."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from services.revocation import store
from services.revocation.appkeys import ISSUER
from services.revocation.domain import (
    BULK_SELECTORS,
    Revocation,
    RevokeCommand,
    Target,
    owned_by,
    parse_int,
    parse_revoke,
    parse_tenant_filter,
    target_of,
)
from services.revocation.errors import UnknownToken
from services.revocation.service import record_revocations, tell_issuer
from shared.callers import GATEWAY, OPERATOR, Callers
from shared.callers import ISSUER as ISSUER_SERVICE
from shared.db import unit_of_work
from shared.errors import BadRequest
from shared.http import JSON, json_response, read_json_object
from shared.service import POOL

routes = web.RouteTableDef()
# Who may call what (shared.callers): revocations come from the gateway (its callers' revokes)
# and the operator; the feed is read by Tessera's own subscribers (outside subscribers use the
# gateway's public /v1/revocations).
CALLERS: Callers = {
    "POST /internal/revocations": frozenset({GATEWAY, OPERATOR}),
    "GET /internal/revocations": frozenset({GATEWAY, ISSUER_SERVICE}),
    "GET /internal/revocations/snapshot": frozenset({GATEWAY, ISSUER_SERVICE}),
}
# The revoke request's one-token selectors and the issuer client's lookup argument for each.
LOOKUP = {"token_id": "token_id", "display_id": "display_id", "token": "value"}
MAX_SEQ = 2**62
FEED_LIMIT = 1000
# Snapshot pages may be larger than feed pages: a bootstrap of a million entries is a
# hundred requests instead of a thousand.
SNAPSHOT_LIMIT = 10000
# format=compact: each entry is an array of these, for subscribers bootstrapping large sets.
COMPACT_FIELDS = '["seq","token_id","jti","display_id","expires_at_epoch"]'


def parse_format(raw: str | None) -> bool:
    """True for ``format=compact``; the default (``full``) is Revocation objects."""
    if raw in (None, "", "full"):
        return False
    if raw == "compact":
        return True
    raise BadRequest("format must be full or compact")


def owned_by_subject(revocations: list[Revocation], owner: str | None) -> list[Revocation]:
    return [r for r in revocations if owner is None or r.subject == owner]


async def resolve_targets(request: web.Request, command: RevokeCommand) -> list[Target]:
    """The tokens a command names; the issuer is asked for every selector but ``jwt``."""
    if command.jwt is not None:
        return [command.jwt]
    issuer = request.app[ISSUER]
    if command.selector in BULK_SELECTORS:
        records = await issuer.active(command.tenant, **{command.selector: command.value})
        return owned_by([target_of(r, command.tenant) for r in records], command.owner)
    record = await issuer.lookup(command.tenant, **{LOOKUP[command.selector]: command.value})
    if record is None:
        raise UnknownToken("no such token")
    target = target_of(record, command.tenant)
    if command.owner is not None and target.subject != command.owner:
        raise UnknownToken("no such token")
    return [target]


@routes.post("/internal/revocations")
async def revoke(request: web.Request) -> web.Response:
    """``RevokeToken``: resolve what the selector names (at the issuer, before any
    transaction), commit the revocations with their ``token.revoked`` events, then tell the
    issuer, all before the answer: when a revoke call returns, the issuer's lookups, lists and
    quotas already count it. Everyone else learns from the events."""
    command = parse_revoke(await read_json_object(request))
    targets = await resolve_targets(request, command)
    async with unit_of_work(request.app[POOL]) as conn:
        if not targets and command.selector == "family_id":
            # Nothing active is left of the family: if we revoked it before, that is the
            # answer (revoking twice is one revocation); otherwise the family is unknown.
            revocations = owned_by_subject(
                await store.fetch_by_family(conn, command.tenant, command.value), command.owner
            )
            if not revocations:
                raise UnknownToken("no active token in this refresh family")
            created = 0
        else:
            revocations, created = await record_revocations(
                conn,
                command.tenant,
                targets,
                reason=command.reason,
                actor=command.actor,
                now=datetime.now(UTC),
            )
    # Again for revocations made before: telling twice is harmless, and heals a lost notice.
    await tell_issuer(request.app[ISSUER], revocations)
    return json_response({"revocations": [r.to_json() for r in revocations], "created": created})


@routes.get("/internal/revocations")
async def feed(request: web.Request) -> web.Response:
    query = request.query
    since = parse_int(query.get("since"), "since", 0, 0, MAX_SEQ)
    limit = parse_int(query.get("limit"), "limit", FEED_LIMIT, 1, FEED_LIMIT)
    tenant = parse_tenant_filter(query.get("tenant"))
    async with request.app[POOL].acquire() as conn:
        # Read the sequence first: every seq up to it has committed (the counter row lock
        # orders commits), so the page below can have no hole that fills in later.
        current = await store.fetch_current_seq(conn)
        pruned_through = await store.fetch_pruned_through(conn)
        rows = await store.fetch_feed(conn, since, current, limit, tenant)
    full = len(rows) == limit
    next_since = rows[-1].seq if full else max(since, current)
    return json_response(
        {
            "revocations": [r.to_json() for r in rows],
            "next_since": next_since,
            "current_seq": current,
            # Seqs at or below this may have been pruned (their tokens expired): a hole there
            # is not a missed revocation.
            "pruned_through": pruned_through,
        }
    )


@routes.get("/internal/revocations/snapshot")
async def snapshot(request: web.Request) -> web.Response:
    query = request.query
    tenant = parse_tenant_filter(query.get("tenant"))
    after_seq = parse_int(query.get("after_seq"), "after_seq", 0, 0, MAX_SEQ)
    limit = parse_int(query.get("limit"), "limit", FEED_LIMIT, 1, SNAPSHOT_LIMIT)
    compact = parse_format(query.get("format"))
    async with request.app[POOL].acquire() as conn, conn.transaction(isolation="repeatable_read"):
        await store.use_utc(conn)
        current = await store.fetch_current_seq(conn)
        as_of = parse_int(query.get("as_of"), "as_of", current, 0, MAX_SEQ)
        if as_of > current:
            raise BadRequest(f"as_of {as_of} is ahead of the current seq {current}")
        page, last_seq, count = await store.fetch_snapshot_json(
            conn, after_seq, as_of, limit, tenant, datetime.now(UTC), compact=compact
        )
    next_after = last_seq if count == limit else None
    # The rows arrive as JSON text from PostgreSQL; splicing it in avoids decoding and
    # re-encoding a large page in Python.
    body = f'{{"as_of":{as_of},"next_after_seq":{"null" if next_after is None else next_after},'
    if compact:
        body += f'"format":"compact","fields":{COMPACT_FIELDS},"entries":{page}}}'
    else:
        body += f'"revocations":{page}}}'
    response = web.Response(body=body.encode())
    response.headers["Content-Type"] = JSON
    return response
