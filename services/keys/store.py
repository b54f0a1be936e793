"""All SQL of the keys service: one function per query; the caller owns the transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

_TENANT = "id, issuer, alg, access_ttl, refresh_ttl, token_quota, max_lifetime, created_at"
_KEY = (
    "kid, tenant, alg, state, public_jwk, public_pem, sealed_key, kek_id, created_at,"
    " activates_at, retired_at, revoked_at, max_exp"
)


async def insert_tenant(conn: asyncpg.Connection, tenant: dict[str, Any]) -> asyncpg.Record | None:
    """Insert a tenant; None when the id exists already."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""INSERT INTO tenants (id, issuer, alg, access_ttl, refresh_ttl, token_quota,
                                 max_lifetime)
            VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING
            RETURNING {_TENANT}""",
        tenant["id"],
        tenant["issuer"],
        tenant["alg"],
        tenant["access_ttl"],
        tenant["refresh_ttl"],
        tenant["token_quota"],
        tenant["max_lifetime"],
    )
    return row


async def fetch_tenant(conn: asyncpg.Connection, tenant: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_TENANT} FROM tenants WHERE id = $1", tenant
    )
    return row


async def fetch_tenants(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(f"SELECT {_TENANT} FROM tenants ORDER BY id")
    return rows


async def lock_tenant(conn: asyncpg.Connection, tenant: str) -> bool:
    """Serialise key changes of one tenant; False when it does not exist."""
    return bool(await conn.fetchval("SELECT true FROM tenants WHERE id = $1 FOR UPDATE", tenant))


async def insert_key(conn: asyncpg.Connection, key: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO signing_keys
               (kid, tenant, alg, state, public_jwk, public_pem, sealed_key, kek_id, activates_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        key["kid"],
        key["tenant"],
        key["alg"],
        key["state"],
        key["public_jwk"],
        key["public_pem"],
        key["sealed_key"],
        key["kek_id"],
        key["activates_at"],
    )


async def fetch_keys(conn: asyncpg.Connection, tenant: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_KEY} FROM signing_keys WHERE tenant = $1 ORDER BY created_at", tenant
    )
    return rows


async def fetch_key(conn: asyncpg.Connection, tenant: str, kid: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_KEY} FROM signing_keys WHERE tenant = $1 AND kid = $2", tenant, kid
    )
    return row


async def fetch_all_keys(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every key not revoked, for the in-memory signing cache."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_KEY} FROM signing_keys WHERE state <> 'revoked'"
    )
    return rows


async def retire_active(conn: asyncpg.Connection, tenant: str, now: datetime) -> str | None:
    kid: str | None = await conn.fetchval(
        """UPDATE signing_keys SET state = 'retired', retired_at = $2
           WHERE tenant = $1 AND state = 'active' RETURNING kid""",
        tenant,
        now,
    )
    return kid


async def drop_pending(conn: asyncpg.Connection, tenant: str, now: datetime) -> str | None:
    """A pending key that will not be needed (an immediate rotation replaces it)."""
    kid: str | None = await conn.fetchval(
        """UPDATE signing_keys SET state = 'retired', retired_at = $2
           WHERE tenant = $1 AND state = 'pending' RETURNING kid""",
        tenant,
        now,
    )
    return kid


async def activate(conn: asyncpg.Connection, kid: str, now: datetime) -> None:
    await conn.execute(
        "UPDATE signing_keys SET state = 'active', activates_at = $2 WHERE kid = $1", kid, now
    )


async def fetch_due_pending(conn: asyncpg.Connection, now: datetime) -> list[asyncpg.Record]:
    """Pending keys whose activation time has come, locked for promotion."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT kid, tenant FROM signing_keys WHERE state = 'pending' AND activates_at <= $1
           FOR UPDATE SKIP LOCKED""",
        now,
    )
    return rows


async def revoke_key(conn: asyncpg.Connection, tenant: str, kid: str, now: datetime) -> str | None:
    """Mark a key revoked; returns its previous state (None if unknown or already revoked)."""
    state: str | None = await conn.fetchval(
        """UPDATE signing_keys k SET state = 'revoked', revoked_at = $3
           FROM (SELECT kid, state FROM signing_keys WHERE tenant = $1 AND kid = $2
                 AND state <> 'revoked' FOR UPDATE) old
           WHERE k.kid = old.kid RETURNING old.state""",
        tenant,
        kid,
        now,
    )
    return state


async def raise_max_exp(conn: asyncpg.Connection, kid: str, until: datetime) -> bool:
    """Move a key's watermark forward; False when the key is revoked (it must not sign)."""
    return bool(
        await conn.fetchval(
            """UPDATE signing_keys SET max_exp = GREATEST(max_exp, $2)
               WHERE kid = $1 AND state <> 'revoked' RETURNING true""",
            kid,
            until,
        )
    )


async def claim_due_rotations(
    conn: asyncpg.Connection, now: datetime, period_seconds: int
) -> list[str]:
    """Tenants due for a scheduled rotation, claimed in this transaction (one replica wins)."""
    rows = await conn.fetch(
        """UPDATE tenants SET last_rotated_at = $1
           WHERE id IN (SELECT id FROM tenants
                        WHERE last_rotated_at <= $1::timestamptz - $2::float8 * interval '1 second'
                        FOR UPDATE SKIP LOCKED)
           RETURNING id""",
        now,
        float(period_seconds),
    )
    return [r["id"] for r in rows]


async def fetch_sealed_keys(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT kid, sealed_key, kek_id FROM signing_keys ORDER BY kid FOR UPDATE"
    )
    return rows


async def update_sealed_key(conn: asyncpg.Connection, kid: str, blob: bytes, kek_id: str) -> None:
    await conn.execute(
        "UPDATE signing_keys SET sealed_key = $2, kek_id = $3 WHERE kid = $1", kid, blob, kek_id
    )
