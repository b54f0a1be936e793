"""Pruning revocations whose token has expired, so the set stays bounded.

Safe with several replicas: each round runs under a transaction-scoped advisory lock that only
one replica gets (the others skip the round), and rows are claimed with SKIP LOCKED.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from services.revocation import store

log = structlog.get_logger("tessera.revocation.pruning")
BATCH = 10_000


async def prune_expired(pool: asyncpg.Pool, now: datetime, grace: float) -> int | None:
    """Delete revocations of tokens expired more than ``grace`` seconds before ``now``.

    Returns how many were deleted, or None when another replica holds the pruning lock.
    """
    before = now - timedelta(seconds=grace)
    deleted = 0
    while True:
        # One batch per transaction keeps locks short on a large backlog.
        async with pool.acquire() as conn, conn.transaction():
            if not await store.try_prune_lock(conn):
                return deleted or None
            count, last = await store.delete_expired(conn, before, BATCH)
            if last is not None:
                await store.raise_pruned_through(conn, last)
        deleted += count
        if count < BATCH:
            return deleted


async def run_pruner(pool: asyncpg.Pool, interval: float, grace: float) -> None:
    """Prune every ``interval`` seconds until cancelled; a failed round is logged and retried."""
    while True:
        try:
            deleted = await prune_expired(pool, datetime.now(UTC), grace)
            if deleted:
                log.info("pruned expired revocations", deleted=deleted)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("pruning failed, will retry", error=type(exc).__name__)
        await asyncio.sleep(interval)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
