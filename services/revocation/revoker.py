"""Recording revocations: sequence, rows and outbox events in the caller's transaction."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.revocation import store
from services.revocation.domain import Revocation, Target, new_revocation
from services.revocation.events import token_revoked
from shared.bus.outbox import add_event


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

    Call inside a transaction. The sequence row is locked first, so concurrent revokes of the
    same token serialise and the second one finds the first's row instead of a unique
    violation, and seqs become visible in commit order.
    """
    async with conn.transaction():
        seq = await store.lock_sequence(conn)
        ids = list(dict.fromkeys(t.token_id for t in targets))
        known = {r.token_id: r for r in await store.fetch_by_token_ids(conn, tenant, ids)}
        results: list[Revocation] = []
        created = 0
        for target in targets:
            existing = known.get(target.token_id)
            if existing is not None:
                results.append(existing)
                continue
            seq += 1
            revocation = new_revocation(seq, tenant, target, reason, now)
            await store.insert_revocation(conn, revocation, actor)
            await add_event(conn, token_revoked(revocation))
            known[target.token_id] = revocation
            results.append(revocation)
            created += 1
        if created:
            await store.store_sequence(conn, seq)
    return results, created
