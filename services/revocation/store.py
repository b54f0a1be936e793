"""All SQL of the revocation service: one function per query, the caller owns the transaction."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.revocation.domain import Revocation, Target, new_revocation

_COLUMNS = (
    "seq, tenant, token_id, jti, display_id, subject, kind, family_id, expires_at, revoked_at,"
    " reason, kid"
)
# Any constant works; it only has to be the same in every replica.
PRUNE_LOCK = 7_345_210_301


def _revocation(row: asyncpg.Record) -> Revocation:
    return Revocation(**dict(row))


async def fetch_current_seq(conn: asyncpg.Connection) -> int:
    seq: int = await conn.fetchval("SELECT seq FROM revocation_counter WHERE singleton")
    return seq


async def fetch_pruned_through(conn: asyncpg.Connection) -> int:
    seq: int = await conn.fetchval("SELECT pruned_through FROM revocation_pruning WHERE singleton")
    return seq


async def fetch_by_token_ids(
    conn: asyncpg.Connection, tenant: str, token_ids: list[str]
) -> list[Revocation]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM revocations WHERE tenant = $1 AND token_id = ANY($2::text[])",
        tenant,
        token_ids,
    )
    return [_revocation(row) for row in rows]


async def fetch_by_family(
    conn: asyncpg.Connection, tenant: str, family_id: str
) -> list[Revocation]:
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM revocations WHERE tenant = $1 AND family_id = $2
            ORDER BY seq""",
        tenant,
        family_id,
    )
    return [_revocation(row) for row in rows]


async def insert_revocations(
    conn: asyncpg.Connection,
    tenant: str,
    targets: list[Target],
    reason: str | None,
    actor: str | None,
    now: datetime,
) -> list[Revocation]:
    """Insert one revocation per target with the next seqs, in one statement.

    The counter row is updated first, inside the statement: its row lock is held until the
    transaction ends, so seqs become visible in order. A target revoked concurrently raises
    ``UniqueViolationError`` (the caller retries; the rollback returns the seqs).
    """
    rows = await conn.fetch(
        """WITH counter AS (
               UPDATE revocation_counter SET seq = seq + $2 WHERE singleton
               RETURNING seq - $2 AS base)
           INSERT INTO revocations (seq, tenant, token_id, jti, display_id, subject, kind,
                                    family_id, kid, expires_at, revoked_at, reason, actor)
           SELECT counter.base + t.ord, $1, t.token_id, t.jti, t.display_id, t.subject, t.kind,
                  t.family_id, t.kid, t.expires_at, $11, $12, $13
           FROM counter, unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                                $8::text[], $9::text[], $10::timestamptz[])
                WITH ORDINALITY AS t(token_id, jti, display_id, subject, kind, family_id, kid,
                                     expires_at, ord)
           RETURNING seq, token_id""",
        tenant,
        len(targets),
        [t.token_id for t in targets],
        [t.jti for t in targets],
        [t.display_id for t in targets],
        [t.subject for t in targets],
        [t.kind for t in targets],
        [t.family_id for t in targets],
        [t.kid for t in targets],
        [t.expires_at for t in targets],
        now,
        reason,
        actor,
    )
    seqs = {row["token_id"]: row["seq"] for row in rows}
    return [
        new_revocation(seqs[t.token_id], tenant, t, reason, now)
        for t in sorted(targets, key=lambda t: seqs[t.token_id])
    ]


async def fetch_feed(
    conn: asyncpg.Connection, since: int, upto: int, limit: int, tenant: str | None
) -> list[Revocation]:
    """Revocations with ``since < seq <= upto`` in seq order, at most ``limit``."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM revocations
            WHERE seq > $1 AND seq <= $2 AND ($4::text IS NULL OR tenant = $4)
            ORDER BY seq LIMIT $3""",
        since,
        upto,
        limit,
        tenant,
    )
    return [_revocation(row) for row in rows]


_SNAPSHOT_PAGE = """
    FROM (SELECT seq, tenant, token_id, jti, display_id, subject, kind, family_id,
                 expires_at, revoked_at, reason
          FROM revocations
          WHERE seq > $1 AND seq <= $2 AND ($4::text IS NULL OR tenant = $4)
            AND (expires_at IS NULL OR expires_at > $5)
          ORDER BY seq LIMIT $3) r"""
# Each row as [seq, token_id, jti, display_id, expiry in epoch seconds rounded up].
_COMPACT_ROW = (
    "json_build_array(r.seq, r.token_id, r.jti, r.display_id,"
    " ceil(extract(epoch FROM r.expires_at))::bigint)"
)


async def fetch_snapshot_json(
    conn: asyncpg.Connection,
    after_seq: int,
    as_of: int,
    limit: int,
    tenant: str | None,
    now: datetime,
    *,
    compact: bool = False,
) -> tuple[str, int | None, int]:
    """One snapshot page rendered as a JSON array by PostgreSQL (fast for big bootstraps).

    Returns (json array text, last seq on the page or None, rows on the page). Full rows are
    Revocation objects (the caller sets the session time zone to UTC so timestamps render as
    ``…+00:00``); compact rows are arrays, see ``_COMPACT_ROW``.
    """
    item = _COMPACT_ROW if compact else "r"
    row = await conn.fetchrow(
        f"""SELECT coalesce(json_agg({item} ORDER BY r.seq), '[]'::json)::text AS page,
                   max(r.seq) AS last_seq, count(*) AS n {_SNAPSHOT_PAGE}""",
        after_seq,
        as_of,
        limit,
        tenant,
        now,
    )
    return row["page"], row["last_seq"], row["n"]


async def use_utc(conn: asyncpg.Connection) -> None:
    """Render timestamps in UTC for the rest of this transaction."""
    await conn.execute("SET LOCAL TIME ZONE 'UTC'")


async def try_prune_lock(conn: asyncpg.Connection) -> bool:
    """Only one replica prunes at a time; the others skip this round."""
    got: bool = await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", PRUNE_LOCK)
    return got


async def delete_expired(
    conn: asyncpg.Connection, before: datetime, limit: int
) -> tuple[int, int | None]:
    """Delete up to ``limit`` revocations of tokens expired before ``before``.

    Returns (how many, the highest seq deleted or None).
    """
    row = await conn.fetchrow(
        """WITH gone AS (
               DELETE FROM revocations WHERE seq IN (
                   SELECT seq FROM revocations WHERE expires_at < $1
                   ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
               RETURNING seq)
           SELECT count(*) AS n, max(seq) AS last FROM gone""",
        before,
        limit,
    )
    return row["n"], row["last"]


async def raise_pruned_through(conn: asyncpg.Connection, seq: int) -> None:
    await conn.execute(
        """UPDATE revocation_pruning SET pruned_through = greatest(pruned_through, $1)
           WHERE singleton""",
        seq,
    )
