"""Every new token goes in through here: group commit for creates, and a rotation's new pair.

Every new token is a durable insert plus its ``token.issued`` event. Alone, that is several
round trips and a WAL flush per token; under load, the :class:`~shared.batching.Batcher` lets
the creates that queued while earlier ones committed go out together: every token and its
event in one statement (``store.insert_tokens``), alone when no create has a quota (atomic
without a transaction: one round trip) or in a unit of work with the owners' locks and quota
counts. Each create still gets its own answer: a quota refusal fails that create only, and if
the batch as a whole is refused by the database (a constraint, bad data) each create is tried
again on its own. A refresh rotation inserts its new pair in its own transaction (it must commit
with the old token's use), through the same insert (:meth:`TokenWriter.insert_within`).

Quotas without counting every time: ``owner_usage`` keeps an upper bound of each owner's active
opaque tokens (it grows with each create and is only set back to a count). While the bound plus
what a batch asks stays within the quota, every create fits without a count; otherwise the
owner's tokens are counted and the bound reset. The arithmetic is :func:`demand`,
:func:`to_count` and :func:`admit`, free of I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.issuer import store
from services.issuer.errors import QuotaReached
from services.issuer.events import token_issued
from services.issuer.store import Owner
from shared.authz import namespace_of
from shared.batching import Batcher
from shared.bus.outbox import Cause, event_values, wake_relays
from shared.db import after_commit, unit_of_work

Row = dict[str, Any]


@dataclass(frozen=True)
class Write:
    """Tokens to insert together; ``quota``: their owner's limit of active opaque tokens."""

    tokens: list[Row]
    quota: int | None
    cause: Cause

    @property
    def owner(self) -> Owner:
        first = self.tokens[0]
        return first["tenant"], first["subject"], namespace_of(first["kind"])


def stored_row(token: Row) -> Row:
    """A new token as the database now holds it, without its secret hash."""
    row: Row = {
        "display_id": None,
        "name": None,
        "permissions": [],
        "expires_at": None,
        "last_used_at": None,
        "revoked_at": None,
        "created_by": None,
        "family_id": None,
        "kid": None,
    }
    row.update((k, v) for k, v in token.items() if k != "secret_hash")
    return row


@dataclass(frozen=True)
class Demand:
    """What a batch asks of the owners with a quota: how many new tokens each, and the lowest
    quota among each owner's writes."""

    asked: dict[Owner, int]
    quota: dict[Owner, int]


def demand(writes: list[Write]) -> Demand:
    """The :class:`Demand` of a batch; writes without a quota ask nothing."""
    asked: dict[Owner, int] = {}
    quota: dict[Owner, int] = {}
    for write in writes:
        if write.quota is None:
            continue
        asked[write.owner] = asked.get(write.owner, 0) + len(write.tokens)
        quota[write.owner] = min(quota.get(write.owner, write.quota), write.quota)
    return Demand(asked, quota)


def to_count(wanted: Demand, bounds: Mapping[Owner, int]) -> list[Owner]:
    """The owners whose bound, with the batch added (``bounds``), passes their quota: only a
    count can tell whether their creates fit. The others' fit whatever the count."""
    return [owner for owner in sorted(wanted.asked) if bounds[owner] > wanted.quota[owner]]


def admit(
    writes: list[Write], active: Mapping[Owner, int]
) -> tuple[list[QuotaReached | None], dict[Owner, int]]:
    """In order, whether each write fits its owner's quota (None) or not, given each owner's
    active tokens before the batch (``active``: a bound, or a count where it matters); and each
    owner's active tokens once the admitted writes are in."""
    taken = dict(active)
    decisions: list[QuotaReached | None] = []
    for write in writes:
        if write.quota is not None:
            owner = write.owner
            if taken[owner] + len(write.tokens) > write.quota:
                decisions.append(
                    QuotaReached(f"{owner[1]} already has {write.quota} active tokens, the quota")
                )
                continue
            taken[owner] += len(write.tokens)
        decisions.append(None)
    return decisions, taken


class TokenWriter:
    """The one way new tokens reach the database, each with its ``token.issued`` event."""

    def __init__(self, pool: asyncpg.Pool, *, max_batch: int = 64, max_in_flight: int = 1):
        self._pool = pool
        self._batcher: Batcher[Write, list[Row]] = Batcher(
            self._write_batch,
            max_batch=max_batch,
            max_in_flight=max_in_flight,
            weight=lambda write: len(write.tokens),
        )

    async def insert(self, tokens: list[Row], *, quota: int | None = None) -> list[Row]:
        """Insert one owner's new tokens with their events, durably; their stored rows.

        With ``quota``, refuse (:class:`QuotaReached`) when the owner already has that many
        active opaque tokens."""
        return await self._batcher.submit(Write(tokens, quota, Cause.current()))

    async def insert_within(self, conn: asyncpg.Connection, tokens: list[Row]) -> list[Row]:
        """Insert tokens with their events in the caller's unit of work, at once (no batch, no
        quota): a refresh rotation's new pair, which commits with the old token's use."""
        cause = Cause.current()
        rows = [stored_row(token) for token in tokens]
        await self._insert(conn, [(t, row, cause) for t, row in zip(tokens, rows, strict=True)])
        return rows

    async def _write_batch(self, writes: list[Write]) -> list[list[Row] | Exception]:
        try:
            return await self._commit(writes)
        except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError):
            if len(writes) == 1:
                raise
        # One bad write must not fail the others: each again, in a transaction of its own.
        results: list[list[Row] | Exception] = []
        for write in writes:
            try:
                results.extend(await self._commit([write]))
            except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
                results.append(exc)
        return results

    async def _commit(self, writes: list[Write]) -> list[list[Row] | Exception]:
        if all(write.quota is None for write in writes):
            # Nothing to lock or count: the tokens and their events are one statement, atomic
            # without a transaction.
            async with self._pool.acquire() as conn:
                return await self._commit_batch(conn, writes)
        async with unit_of_work(self._pool) as conn:
            return await self._commit_batch(conn, writes)

    async def _commit_batch(
        self, conn: asyncpg.Connection, writes: list[Write]
    ) -> list[list[Row] | Exception]:
        active, counted = await self._active_bounds(conn, writes)
        decisions, after = admit(writes, active)
        results: list[list[Row] | Exception] = []
        accepted: list[tuple[Row, Row, Cause]] = []
        for write, refused in zip(writes, decisions, strict=True):
            if refused is not None:
                results.append(refused)
                continue
            rows = [stored_row(token) for token in write.tokens]
            accepted.extend(
                (token, row, write.cause) for token, row in zip(write.tokens, rows, strict=True)
            )
            results.append(rows)
        if counted:
            await store.set_usage(conn, {owner: after[owner] for owner in counted})
        await self._insert(conn, accepted)
        return results

    @staticmethod
    async def _insert(conn: asyncpg.Connection, accepted: list[tuple[Row, Row, Cause]]) -> None:
        """The one insert of new tokens: the rows and their events, in one statement (in the
        caller's unit of work, or on its own); the relay is woken once it has committed."""
        if accepted:
            await store.insert_tokens(
                conn,
                [token for token, _, _ in accepted],
                [event_values(token_issued(row), cause) for _, row, cause in accepted],
            )
            after_commit(conn, wake_relays)

    @staticmethod
    async def _active_bounds(
        conn: asyncpg.Connection, writes: list[Write]
    ) -> tuple[dict[Owner, int], list[Owner]]:
        """Lock the owners with a quota; for each, a bound of their active tokens before the
        batch that is exact where it matters (:func:`to_count`). Also: who was counted."""
        wanted = demand(writes)
        if not wanted.asked:
            return {}, []
        owners = sorted(wanted.asked)
        await store.lock_owners(conn, owners)
        bounds = await store.add_usage(conn, wanted.asked)
        active = {owner: bounds[owner] - wanted.asked[owner] for owner in owners}
        over = to_count(wanted, bounds)
        if over:
            active.update(await store.count_active(conn, over, max(wanted.quota.values())))
        return active, over
