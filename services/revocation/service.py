"""Recording revocations: sequence, rows and outbox events in the caller's transaction; then,
after the commit, telling the issuer."""

from __future__ import annotations

import asyncio
from datetime import datetime

import asyncpg
import structlog

from services.revocation import store
from services.revocation.domain import Revocation, Target, token_revoked
from shared.bus.outbox import add_events
from shared.clients.issuer import IssuerClient
from shared.errors import TesseraError

log = structlog.get_logger("tessera.revocation")
# How long a revoke's answer waits for the issuer to note it (tell_issuer).
ISSUER_NOTICE_TIMEOUT = 2.0


async def record_revocations(
    conn: asyncpg.Connection,
    tenant: str,
    targets: list[Target],
    *,
    reason: str | None,
    actor: str | None,
    now: datetime,
) -> tuple[list[Revocation], int]:
    """Revoke each target once; returns (the revocation of each target, how many are new).

    A target already revoked keeps its revocation (revoking twice is one revocation). If a
    concurrent request revokes the same token between our check and our insert, the unique
    constraint stops us; the retry then finds that request's revocation.
    """
    try:
        return await _record(conn, tenant, targets, reason=reason, actor=actor, now=now)
    except asyncpg.UniqueViolationError:
        return await _record(conn, tenant, targets, reason=reason, actor=actor, now=now)


async def _record(
    conn: asyncpg.Connection,
    tenant: str,
    targets: list[Target],
    *,
    reason: str | None,
    actor: str | None,
    now: datetime,
) -> tuple[list[Revocation], int]:
    unique = list({t.token_id: t for t in targets}.values())
    async with conn.transaction():
        known = {
            r.token_id: r
            for r in await store.fetch_by_token_ids(conn, tenant, [t.token_id for t in unique])
        }
        fresh = [t for t in unique if t.token_id not in known]
        if fresh:
            revocations = await store.insert_revocations(conn, tenant, fresh, reason, actor, now)
            await add_events(conn, [token_revoked(revocation) for revocation in revocations])
            known.update((revocation.token_id, revocation) for revocation in revocations)
    return [known[t.token_id] for t in targets], len(fresh)


async def tell_issuer(issuer: IssuerClient, revocations: list[Revocation]) -> None:
    """Have the issuer count committed revocations now, not only once their ``token.revoked``
    events reach it. Best effort, for at most ``ISSUER_NOTICE_TIMEOUT`` seconds: the
    revocations hold regardless (a revoked credential is refused by every verifier from the
    events) and the events will tell the issuer too. Call it with no transaction open."""
    if not revocations:
        return
    try:
        async with asyncio.timeout(ISSUER_NOTICE_TIMEOUT):
            await issuer.mark_revoked([r.to_json() for r in revocations])
    except (TesseraError, TimeoutError) as exc:
        log.warning(
            "issuer not told of a revocation; its event will",
            tokens=len(revocations),
            error=getattr(exc, "message", None) or type(exc).__name__,
        )
