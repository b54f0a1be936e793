"""All SQL of the issuer: one function per query; the caller owns the transaction."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from services.issuer.domain import RECORD_ORDER
from shared.bus.outbox import EVENT_COLUMNS
from shared.db import columns

COLUMNS = ", ".join(RECORD_ORDER)
_ACTIVE = "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"


# A new token: every field of its record but those set by later use, and its keyed hash.
_INSERT_COLUMNS = (
    *(field for field in RECORD_ORDER if field not in ("last_used_at", "revoked_at")),
    "secret_hash",
)


def _insert_args(token: dict[str, Any]) -> list[Any]:
    defaults: dict[str, Any] = {"permissions": []}
    return [token.get(column, defaults.get(column)) for column in _INSERT_COLUMNS]


_COLUMN_TYPES = {
    "id": "uuid",
    "created_at": "timestamptz",
    "expires_at": "timestamptz",
    "family_id": "uuid",
    "secret_hash": "bytea",
    # Arrays of arrays must be rectangular in PostgreSQL: each token's list goes as JSON.
    "permissions": "text",
}
_NEW_VALUES = ", ".join(
    "ARRAY(SELECT jsonb_array_elements_text(permissions::jsonb))" if c == "permissions" else c
    for c in _INSERT_COLUMNS
)
_NEW_ARRAYS = ", ".join(
    f"${n}::{_COLUMN_TYPES.get(c, 'text')}[]" for n, c in enumerate(_INSERT_COLUMNS, start=1)
)
_INSERT_MANY = f"""INSERT INTO tokens ({", ".join(_INSERT_COLUMNS)})
    SELECT {_NEW_VALUES} FROM unnest({_NEW_ARRAYS}) AS new({", ".join(_INSERT_COLUMNS)})"""


# New tokens and their events (outbox and audit rows) in one statement: atomic without a
# transaction, so a batch without a quota is one round trip instead of four (BEGIN, the tokens,
# the events, COMMIT). The events' part is shared.bus.outbox.add_events's, over the same columns.
_EVENT_ARRAYS = ", ".join(
    f"${n}::{sql_type}[]"
    for n, sql_type in enumerate(EVENT_COLUMNS.values(), start=len(_INSERT_COLUMNS) + 1)
)
_INSERT_WITH_EVENTS = f"""
    WITH new_tokens AS ({_INSERT_MANY}),
    events AS (
        SELECT * FROM unnest({_EVENT_ARRAYS})
        WITH ORDINALITY AS e({", ".join(EVENT_COLUMNS)}, n)),
    queued AS (
        INSERT INTO outbox (event_id, routing_key, body, request_id, created_at)
        SELECT event_id, routing_key, body, request_id, occurred_at FROM events ORDER BY n),
    audited AS (
        INSERT INTO audit_log
            (event_id, occurred_at, tenant, action, source, actor, request_id, data)
        SELECT event_id, occurred_at, tenant, action, source, actor, request_id, data
        FROM events ORDER BY n)
    SELECT 1"""


async def insert_tokens(
    conn: asyncpg.Connection, tokens: list[dict[str, Any]], events: list[tuple[object, ...]]
) -> None:
    """Insert new tokens and their events (each :func:`shared.bus.outbox.event_values`), in
    this order, in one statement; see services.issuer.writer, the only caller, which wakes the
    outbox relay once the statement has committed."""
    rows = [_insert_args(token) for token in tokens]
    permissions = _INSERT_COLUMNS.index("permissions")
    for row in rows:
        row[permissions] = json.dumps(row[permissions])
    await conn.execute(
        _INSERT_WITH_EVENTS,
        *columns(rows, len(_INSERT_COLUMNS)),
        *columns(events, len(EVENT_COLUMNS)),
    )


# An owner of opaque tokens, for quotas: (tenant, subject, namespace), where the namespace is
# "jobmanager" for jobmanager identities and "user" for everyone else (shared.authz).
Owner = tuple[str, str, str]
# The kinds of token each namespace's quota counts.
_NAMESPACE_KINDS = (
    "CASE WHEN o.namespace = 'jobmanager' THEN ARRAY['jobmanager']"
    " ELSE ARRAY['opaque', 'databricks'] END"
)


async def lock_owners(conn: asyncpg.Connection, owners: list[Owner]) -> None:
    """Serialise creates of these owners until the transaction ends. Locks are taken in one
    global order, so two batches never deadlock."""
    await conn.execute(
        """SELECT pg_advisory_xact_lock(k) FROM (
               SELECT DISTINCT hashtextextended(o, 0) AS k
               FROM unnest($1::text[]) AS o ORDER BY k) AS locks""",
        [f"{tenant}/{subject}/{namespace}" for tenant, subject, namespace in owners],
    )


def _usage_columns(usage: dict[Owner, int]) -> list[list[Any]]:
    """Tenants, subjects, namespaces and counts, in the owners' sorted order (the order locks
    are taken)."""
    return columns(((*owner, usage[owner]) for owner in sorted(usage)), 4)


async def add_usage(conn: asyncpg.Connection, usage: dict[Owner, int]) -> dict[Owner, int]:
    """Add new tokens to each owner's usage bound (owner_usage); the bounds after adding."""
    rows = await conn.fetch(
        """INSERT INTO owner_usage AS u (tenant, subject, namespace, issued)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[])
           ON CONFLICT (tenant, subject, namespace)
           DO UPDATE SET issued = u.issued + excluded.issued
           RETURNING tenant, subject, namespace, issued""",
        *_usage_columns(usage),
    )
    return {(row["tenant"], row["subject"], row["namespace"]): row["issued"] for row in rows}


async def count_active(
    conn: asyncpg.Connection, owners: list[Owner], limit: int
) -> dict[Owner, int]:
    """Each owner's active opaque tokens of its namespace, counted (up to ``limit``)."""
    rows = await conn.fetch(
        f"""SELECT o.tenant, o.subject, o.namespace, (
                SELECT count(*) FROM (
                    SELECT 1 FROM tokens
                    WHERE tokens.tenant = o.tenant AND tokens.subject = o.subject
                      AND kind = ANY({_NAMESPACE_KINDS}) AND {_ACTIVE}
                    LIMIT $4) AS a) AS active
            FROM unnest($1::text[], $2::text[], $3::text[]) AS o(tenant, subject, namespace)""",
        *columns(owners, 3),
        limit,
    )
    return {(row["tenant"], row["subject"], row["namespace"]): row["active"] for row in rows}


async def set_usage(conn: asyncpg.Connection, usage: dict[Owner, int]) -> None:
    """Reset owners' usage bounds to a counted value."""
    await conn.execute(
        """UPDATE owner_usage AS u SET issued = n.issued
           FROM unnest($1::text[], $2::text[], $3::text[], $4::int[])
                AS n(tenant, subject, namespace, issued)
           WHERE u.tenant = n.tenant AND u.subject = n.subject AND u.namespace = n.namespace""",
        *_usage_columns(usage),
    )


async def fetch_by_hash(
    conn: asyncpg.Connection, hashes: list[bytes], kinds: tuple[str, ...]
) -> asyncpg.Record | None:
    """The token of these kinds with one of these keyed hashes (refresh tokens, with their
    retried copies and a lock, come from :func:`fetch_refresh`)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""SELECT {COLUMNS}, secret_hash FROM tokens
            WHERE secret_hash = ANY($1::bytea[]) AND kind = ANY($2::text[])""",
        hashes,
        list(kinds),
    )
    return row


async def fetch_refresh(
    conn: asyncpg.Connection, hashes: list[bytes], *, lock: bool = True
) -> asyncpg.Record | None:
    """The refresh token with one of these keyed hashes (its own, or a grace retry's copy),
    locked until the transaction ends (unless ``lock`` is false: a plain read)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""SELECT {COLUMNS}, secret_hash, used_at, replaced_by, retries FROM tokens
            WHERE kind = 'jwt_refresh' AND (
                secret_hash = ANY($1::bytea[])
                OR id = (SELECT token_id FROM refresh_aliases
                         WHERE secret_hash = ANY($1::bytea[]) LIMIT 1))
            LIMIT 1{" FOR UPDATE" if lock else ""}""",
        hashes,
    )
    return row


async def count_retry(conn: asyncpg.Connection, token_id: uuid.UUID) -> None:
    await conn.execute("UPDATE tokens SET retries = retries + 1 WHERE id = $1", token_id)


async def add_refresh_alias(
    conn: asyncpg.Connection, secret_hash: bytes, token_id: uuid.UUID
) -> None:
    """Accept another signature of the same refresh token (a grace retry's copy)."""
    await conn.execute(
        """INSERT INTO refresh_aliases (secret_hash, token_id) VALUES ($1, $2)
           ON CONFLICT DO NOTHING""",
        secret_hash,
        token_id,
    )


async def touch_last_used(conn: asyncpg.Connection, token_id: uuid.UUID) -> None:
    """Record use at most once a minute per token."""
    await conn.execute(
        """UPDATE tokens SET last_used_at = now() WHERE id = $1
           AND (last_used_at IS NULL OR last_used_at < now() - interval '60 seconds')""",
        token_id,
    )


async def fetch_one(
    conn: asyncpg.Connection, tenant: str, column: str, value: Any
) -> asyncpg.Record | None:
    assert column in ("id", "display_id")
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {COLUMNS} FROM tokens WHERE tenant = $1 AND {column} = $2", tenant, value
    )
    return row


async def fetch_active_by(
    conn: asyncpg.Connection, tenant: str, column: str, value: Any
) -> list[asyncpg.Record]:
    assert column in ("subject", "family_id", "kid")
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {COLUMNS} FROM tokens WHERE tenant = $1 AND {column} = $2 AND {_ACTIVE}",
        tenant,
        value,
    )
    return rows


async def fetch_page(
    conn: asyncpg.Connection,
    *,
    tenant: str,
    subject: str | None,
    kinds: list[str],
    include_inactive: bool,
    after: tuple[datetime, uuid.UUID] | None,
    offset: int,
    limit: int,
) -> list[asyncpg.Record]:
    """Newest first; ``after`` is the keyset cursor (the last row of the previous page).

    The WHERE clause holds only the conditions asked for: a prepared statement with
    ``($2 IS NULL OR subject = $2)`` gets a generic plan that cannot use the owner index, and
    then a per-user list walks every token of the tenant."""
    args: list[Any] = [tenant, kinds]
    where = ["tenant = $1", "kind = ANY($2::text[])"]
    if subject is not None:
        args.append(subject)
        where.append(f"subject = ${len(args)}")
    if not include_inactive:
        where.append(_ACTIVE)
    if after is not None:
        args += [after[0], after[1]]
        where.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)}::uuid)")
    args += [offset, limit]
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""SELECT {COLUMNS} FROM tokens WHERE {" AND ".join(where)}
            ORDER BY created_at DESC, id DESC OFFSET ${len(args) - 1} LIMIT ${len(args)}""",
        *args,
    )
    return rows


async def fetch_owner_lists(
    conn: asyncpg.Connection, lists: list[tuple[str, str, list[str], int]]
) -> list[list[asyncpg.Record]]:
    """Several owners' active tokens of some kinds, newest first, in one query: for each
    (tenant, subject, kinds, limit), in the order asked."""
    rows = await conn.fetch(
        f"""SELECT q.n, t.* FROM unnest($1::text[], $2::text[], $3::text[], $4::int[])
                WITH ORDINALITY AS q(tenant, subject, kinds, lim, n)
            CROSS JOIN LATERAL (
                SELECT {COLUMNS} FROM tokens
                WHERE tokens.tenant = q.tenant AND tokens.subject = q.subject
                  AND kind = ANY(string_to_array(q.kinds, ',')) AND {_ACTIVE}
                ORDER BY created_at DESC, id DESC LIMIT q.lim) AS t
            ORDER BY q.n, t.created_at DESC, t.id DESC""",
        [tenant for tenant, _, _, _ in lists],
        [subject for _, subject, _, _ in lists],
        [",".join(kinds) for _, _, kinds, _ in lists],
        [limit for _, _, _, limit in lists],
    )
    result: list[list[asyncpg.Record]] = [[] for _ in lists]
    for row in rows:
        result[row["n"] - 1].append(row)
    return result


async def mark_used(
    conn: asyncpg.Connection, token_id: uuid.UUID, now: datetime, pair: dict[str, Any]
) -> None:
    await conn.execute(
        "UPDATE tokens SET used_at = $2, replaced_by = $3 WHERE id = $1", token_id, now, pair
    )


async def revoke_family(
    conn: asyncpg.Connection, family_id: uuid.UUID, now: datetime
) -> list[asyncpg.Record]:
    """Revoke a refresh family's live tokens; the ones it revoked."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""UPDATE tokens SET revoked_at = $2
            WHERE family_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)
            RETURNING {COLUMNS}""",
        family_id,
        now,
    )
    return rows


async def mark_revoked(
    conn: asyncpg.Connection, marks: Sequence[tuple[str, uuid.UUID, datetime]]
) -> int:
    """Set ``revoked_at`` of each (tenant, token id, revoked at), in one statement; tokens
    already revoked keep their time, ids we never issued match nothing. Returns how many
    changed."""
    result: str = await conn.execute(
        """UPDATE tokens SET revoked_at = m.revoked_at
           FROM unnest($1::text[], $2::uuid[], $3::timestamptz[]) AS m(tenant, id, revoked_at)
           WHERE tokens.tenant = m.tenant AND tokens.id = m.id AND tokens.revoked_at IS NULL""",
        *columns(marks, 3),
    )
    return int(result.split()[-1])
