"""Recording revocations: sequence, rows and outbox events in the caller's transaction."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.revocation import store
from services.revocation.domain import Revocation, Target
from services.revocation.events import token_revoked
from shared.bus.outbox import add_events


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
