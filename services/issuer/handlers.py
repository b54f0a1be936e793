"""HTTP handlers of the issuer: parse the request, call the issuing code or the store, reply."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import structlog
from aiohttp import web

from services.issuer import service, store
from services.issuer.appkeys import KEYS, SETTINGS, WRITER
from services.issuer.domain import (
    KINDS,
    RECORD_FIELDS,
    CreateJwt,
    CreateOpaque,
    decode_cursor,
    encode_cursor,
    is_active,
    record_fields,
    record_json,
)
from services.issuer.errors import UnknownToken
from services.issuer.events import revoked_mark
from shared.authz import OPERATOR as OPERATOR_PRINCIPAL
from shared.authz import Kind, Principal
from shared.callers import GATEWAY, OPERATOR, REVOCATION, Callers, caller_of
from shared.errors import BadRequest, Forbidden
from shared.http import json_response, read_json_object
from shared.service import POOL

log = structlog.get_logger("tessera.issuer")
routes = web.RouteTableDef()
# Who may call what (shared.callers): the gateway for its callers, the operator to mint first
# credentials and read records, the revocation service to resolve what it revokes and to say
# what it revoked.
CALLERS: Callers = {
    "POST /internal/tokens": frozenset({GATEWAY, OPERATOR}),
    "POST /internal/authenticate": frozenset({GATEWAY}),
    "POST /internal/jwt": frozenset({GATEWAY, OPERATOR}),
    "POST /internal/jwt/refresh": frozenset({GATEWAY}),
    "GET /internal/tokens": frozenset({GATEWAY, OPERATOR}),
    "POST /internal/tokens/lists": frozenset({GATEWAY}),
    "POST /internal/tokens/revoked": frozenset({REVOCATION}),
    "GET /internal/tokens/lookup": frozenset({GATEWAY, REVOCATION}),
    "GET /internal/tokens/active": frozenset({REVOCATION}),
}


@routes.post("/internal/tokens")
async def create_token(request: web.Request) -> web.Response:
    parsed = CreateOpaque.parse(await read_json_object(request))
    parsed = replace(parsed, minter=minter_of(caller_of(request), parsed.minter))
    record, value = await service.create_opaque(
        request.app[WRITER], request.app[KEYS], request.app[SETTINGS].pepper, parsed
    )
    return json_response({"token": record, "value": value})


@routes.post("/internal/authenticate")
async def authenticate(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    token = body.get("token")
    if not isinstance(token, str) or len(token) > 4096:
        raise BadRequest("token must be a string")
    principal = await service.authenticate(request.app[POOL], request.app[SETTINGS].pepper, token)
    return json_response(principal)


@routes.post("/internal/jwt")
async def create_jwt(request: web.Request) -> web.Response:
    parsed = CreateJwt.parse(await read_json_object(request))
    parsed = replace(parsed, minter=minter_of(caller_of(request), parsed.minter))
    result = await service.issue_jwt(
        request.app[WRITER], request.app[KEYS], request.app[SETTINGS].pepper, parsed
    )
    return json_response(result)


@routes.post("/internal/jwt/refresh")
async def refresh_jwt(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    token = body.get("refresh_token")
    if not isinstance(token, str) or len(token) > 16384:
        raise BadRequest("refresh_token must be a string")
    settings = request.app[SETTINGS]
    result = await service.refresh(
        request.app[POOL],
        request.app[WRITER],
        request.app[KEYS],
        settings.pepper,
        token,
        grace_seconds=settings.refresh_grace_seconds,
    )
    return json_response(result)


def minter_of(caller: str, sent: Principal) -> Principal:
    """Who mints, from who calls: the operator's certificate mints as the operator, whatever
    the body says; the gateway names the principal it authenticated, which may never be the
    operator (so it gets only what some authenticated principal could have: may_mint)."""
    if caller == OPERATOR:
        return OPERATOR_PRINCIPAL
    if sent.kind is Kind.OPERATOR:
        log.warning("operator minter refused", audit=True, caller=caller)
        raise Forbidden("only the operator may mint as the operator")
    return sent


def _tenant(request: web.Request) -> str:
    tenant = request.query.get("tenant", "")
    if not tenant:
        raise BadRequest("tenant is required")
    return tenant


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}")
    return int(raw)


@routes.get("/internal/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    kinds = request.query.get("kind", ",".join(KINDS)).split(",")
    if not set(kinds) <= set(KINDS):
        raise BadRequest(f"kind must be among {', '.join(KINDS)}")
    limit = _int(request, "limit", 20, 1, 1000)
    offset = _int(request, "offset", 0, 0, 10_000_000)
    cursor = request.query.get("cursor")
    after = decode_cursor(cursor) if cursor else None
    async with request.app[POOL].acquire() as conn:
        rows = await store.fetch_page(
            conn,
            tenant=tenant,
            subject=request.query.get("subject"),
            kinds=kinds,
            include_inactive=request.query.get("include_inactive") in ("1", "true"),
            after=after,
            offset=offset,
            limit=limit + 1,
        )
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more else None
    return json_response({"tokens": [record_json(r) for r in page], "next_cursor": next_cursor})


MAX_LISTS = 100


@routes.post("/internal/tokens/lists")
async def owner_lists(request: web.Request) -> web.Response:
    """Several owners' active tokens at once: the gateway coalesces concurrent list calls."""
    body = await read_json_object(request)
    lists = body.get("lists")
    if not isinstance(lists, list) or not 1 <= len(lists) <= MAX_LISTS:
        raise BadRequest(f"lists must hold 1 to {MAX_LISTS} queries")
    queries = []
    for query in lists:
        if not isinstance(query, dict):
            raise BadRequest("each query must be an object")
        tenant, subject, kinds, limit = (
            query.get("tenant"),
            query.get("subject"),
            query.get("kinds"),
            query.get("limit", 20),
        )
        if not isinstance(tenant, str) or not tenant or not isinstance(subject, str):
            raise BadRequest("each query needs a tenant and a subject")
        if not isinstance(kinds, list) or not kinds or not set(kinds) <= set(KINDS):
            raise BadRequest(f"kinds must be a list among {', '.join(KINDS)}")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise BadRequest("limit must be an integer from 1 to 1000")
        queries.append((tenant, subject, kinds, limit))
    fields = body.get("fields")
    if fields is not None and (
        not isinstance(fields, list) or not fields or not set(fields) <= RECORD_FIELDS
    ):
        raise BadRequest(f"fields must be a list among {', '.join(sorted(RECORD_FIELDS))}")
    async with request.app[POOL].acquire() as conn:
        found = await store.fetch_owner_lists(conn, queries)
    results = [
        {"tokens": [record_fields(r, fields) if fields else record_json(r) for r in rows]}
        for rows in found
    ]
    return json_response({"results": results})


@routes.post("/internal/tokens/revoked")
async def mark_revoked(request: web.Request) -> web.Response:
    """Count tokens revoked now, not only once their ``token.revoked`` events arrive: the
    revocation service calls this after committing each revoke and before answering it, so
    whoever asked for the revocation finds it in the next lookup, list or quota check here."""
    revocations = (await read_json_object(request)).get("revocations")
    if not isinstance(revocations, list) or not all(
        isinstance(r, dict) and isinstance(r.get("tenant"), str) for r in revocations
    ):
        raise BadRequest("revocations must be a list of Revocation objects")
    now = datetime.now(UTC)
    marks = [m for r in revocations if (m := revoked_mark(r["tenant"], r, now)) is not None]
    if not marks:
        return json_response({"marked": 0})
    async with request.app[POOL].acquire() as conn:
        return json_response({"marked": await store.mark_revoked(conn, marks)})


@routes.get("/internal/tokens/lookup")
async def lookup(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    query = request.query
    async with request.app[POOL].acquire() as conn:
        if "id" in query:
            try:
                row = await store.fetch_one(conn, tenant, "id", uuid.UUID(query["id"]))
            except ValueError:
                row = None
        elif "display_id" in query:
            row = await store.fetch_one(conn, tenant, "display_id", query["display_id"])
        elif "value" in query:
            hashes = request.app[SETTINGS].pepper.candidate_hashes(query["value"])
            row = await store.fetch_by_hash(conn, hashes, KINDS)
            row = row if row is not None and row["tenant"] == tenant else None
        else:
            raise BadRequest("give one of id, display_id or value")
    if row is None:
        raise UnknownToken("no such token")
    return json_response(record_json(row))


@routes.get("/internal/tokens/active")
async def active(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    query = request.query
    selectors = [name for name in ("subject", "family_id", "kid") if name in query]
    if len(selectors) != 1:
        raise BadRequest("give exactly one of subject, family_id or kid")
    column = selectors[0]
    value: object = query[column]
    if column == "family_id":
        try:
            value = uuid.UUID(query[column])
        except ValueError:
            return json_response({"tokens": []})
    now = datetime.now(UTC)
    async with request.app[POOL].acquire() as conn:
        rows = await store.fetch_active_by(conn, tenant, column, value)
    return json_response({"tokens": [record_json(r) for r in rows if is_active(r, now)]})
