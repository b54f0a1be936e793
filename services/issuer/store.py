"""All SQL of the issuer: one function per query; the caller owns the transaction."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

COLUMNS = (
    "id, display_id, tenant, subject, kind, name, permissions, created_at, expires_at,"
    " last_used_at, revoked_at, created_by, family_id, kid"
)
_ACTIVE = "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"


async def lock_owner(conn: asyncpg.Connection, tenant: str, subject: str) -> None:
    """Serialise creates of one owner until the transaction ends (quota checks)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"{tenant}/{subject}"
    )


async def insert_within_quota(
    conn: asyncpg.Connection, token: dict[str, Any], quota: int
) -> asyncpg.Record | None:
    """Insert an opaque token unless its owner already has ``quota`` active ones (None then).

    One round trip for the check and the insert; the caller holds the owner's lock.
    """
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""INSERT INTO tokens (id, display_id, tenant, subject, kind, name, permissions,
                                created_at, expires_at, created_by, secret_hash)
            SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11
            WHERE (SELECT count(*) FROM (
                       SELECT 1 FROM tokens WHERE tenant = $3 AND subject = $4
                       AND kind IN ('opaque', 'databricks', 'jobmanager') AND {_ACTIVE}
                       LIMIT $12) active) < $12
            RETURNING {COLUMNS}""",
        token["id"],
        token.get("display_id"),
        token["tenant"],
        token["subject"],
        token["kind"],
        token.get("name"),
        token.get("permissions", []),
        token["created_at"],
        token.get("expires_at"),
        token.get("created_by"),
        token["secret_hash"],
        quota,
    )
    return row


async def insert_token(conn: asyncpg.Connection, token: dict[str, Any]) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        f"""INSERT INTO tokens (id, display_id, tenant, subject, kind, name, permissions,
                                created_at, expires_at, created_by, family_id, kid, secret_hash)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
            RETURNING {COLUMNS}""",
        token["id"],
        token.get("display_id"),
        token["tenant"],
        token["subject"],
        token["kind"],
        token.get("name"),
        token.get("permissions", []),
        token["created_at"],
        token.get("expires_at"),
        token.get("created_by"),
        token.get("family_id"),
        token.get("kid"),
        token.get("secret_hash"),
    )
    return row


async def fetch_by_hash(
    conn: asyncpg.Connection, hashes: list[bytes], kinds: tuple[str, ...], *, lock: bool = False
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""SELECT {COLUMNS}, secret_hash, used_at, replaced_by FROM tokens
            WHERE secret_hash = ANY($1::bytea[]) AND kind = ANY($2::text[])
            {"FOR UPDATE" if lock else ""}""",
        hashes,
        list(kinds),
    )
    return row


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
    """Newest first; ``after`` is the keyset cursor (the last row of the previous page)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""SELECT {COLUMNS} FROM tokens
            WHERE tenant = $1 AND ($2::text IS NULL OR subject = $2) AND kind = ANY($3::text[])
              AND ($4 OR {_ACTIVE})
              AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6::uuid))
            ORDER BY created_at DESC, id DESC OFFSET $7 LIMIT $8""",
        tenant,
        subject,
        kinds,
        include_inactive,
        after[0] if after else None,
        after[1] if after else None,
        offset,
        limit,
    )
    return rows


async def mark_used(
    conn: asyncpg.Connection, token_id: uuid.UUID, now: datetime, pair: dict[str, Any]
) -> None:
    await conn.execute(
        "UPDATE tokens SET used_at = $2, replaced_by = $3 WHERE id = $1", token_id, now, pair
    )


async def revoke_family(conn: asyncpg.Connection, family_id: uuid.UUID, now: datetime) -> int:
    result: str = await conn.execute(
        "UPDATE tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
        family_id,
        now,
    )
    return int(result.split()[-1])


async def mark_revoked(
    conn: asyncpg.Connection, tenant: str, token_id: uuid.UUID, revoked_at: datetime
) -> None:
    await conn.execute(
        "UPDATE tokens SET revoked_at = $3 WHERE tenant = $1 AND id = $2 AND revoked_at IS NULL",
        tenant,
        token_id,
        revoked_at,
    )
