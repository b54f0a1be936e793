"""Key life cycle: a tenant's first key, rotation (delayed or immediate), revocation, promotion
of due pending keys, scheduled rotation and rewrapping under a new KEK.

Every change runs in one transaction holding the tenant's row lock, with its event in the
outbox. Keys are generated (slow for RSA) in a worker thread.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog

from services.keys import events, store
from services.keys.crypto import (
    Keyring,
    generate_private_key,
    private_from_der,
    private_to_der,
    public_jwk,
    public_pem,
)
from services.keys.domain import RotationLimits, check_rotation, new_kid
from services.keys.errors import RotationPending, TenantExists, UnknownKid, UnknownTenant
from shared.bus.outbox import add_events
from shared.db import unit_of_work

log = structlog.get_logger("tessera.keys")


@dataclass(frozen=True)
class NewKey:
    """A generated key: kid, algorithm, public PEM and the row to insert (private key sealed)."""

    kid: str
    alg: str
    public_pem: str
    row: dict[str, Any]


async def make_key(keyring: Keyring, tenant: str, alg: str) -> NewKey:
    """A new key pair, sealed under the current KEK, ready to insert."""
    private = await asyncio.to_thread(generate_private_key, alg)
    kid = new_kid()
    sealed, kek_id = keyring.encrypt(kid, private_to_der(private))
    pem = public_pem(private)
    row = {
        "kid": kid,
        "tenant": tenant,
        "alg": alg,
        "public_jwk": public_jwk(private, kid, alg),
        "public_pem": pem,
        "sealed_key": sealed,
        "kek_id": kek_id,
    }
    return NewKey(kid, alg, pem, row)


async def create_tenant(
    pool: asyncpg.Pool, keyring: Keyring, tenant: dict[str, Any]
) -> asyncpg.Record:
    """Create the tenant, its first key (active at once) and a ``tenant.created`` event in one
    transaction; the tenant's row, or :class:`TenantExists` when the id is taken."""
    key = await make_key(keyring, tenant["id"], tenant["alg"])
    now = datetime.now(UTC)
    async with unit_of_work(pool) as conn:
        row = await store.insert_tenant(conn, tenant)
        if row is None:
            raise TenantExists(f"tenant {tenant['id']!r} exists already")
        await store.insert_key(conn, {**key.row, "state": "active", "activates_at": now})
        await add_events(conn, [events.tenant_created(tenant["id"], tenant["alg"])])
    log.info("tenant created", tenant=tenant["id"], alg=tenant["alg"], kid=key.kid)
    return row


async def _tenant_alg(conn: asyncpg.Connection, tenant: str) -> str:
    if not await store.lock_tenant(conn, tenant):
        raise UnknownTenant(f"unknown tenant {tenant!r}")
    row = await store.fetch_tenant(conn, tenant)
    assert row is not None  # locked above
    return str(row["alg"])


async def rotate_locked(
    conn: asyncpg.Connection,
    keyring: Keyring,
    tenant: str,
    alg: str,
    *,
    immediate: bool,
    delay: int,
) -> tuple[NewKey, datetime]:
    """Rotate inside the caller's transaction, which holds the tenant's row lock."""
    now = datetime.now(UTC)
    key = await make_key(keyring, tenant, alg)
    if immediate:
        await store.drop_pending(conn, tenant, now)
        previous = await store.retire_active(conn, tenant, now)
        activates_at = now
        await store.insert_key(conn, {**key.row, "state": "active", "activates_at": now})
    else:
        pending = [k for k in await store.fetch_keys(conn, tenant) if k["state"] == "pending"]
        if pending:
            raise RotationPending(f"key {pending[0]['kid']} is already waiting to become active")
        active = [k for k in await store.fetch_keys(conn, tenant) if k["state"] == "active"]
        previous = active[0]["kid"] if active else None
        activates_at = now + timedelta(seconds=delay)
        await store.insert_key(conn, {**key.row, "state": "pending", "activates_at": activates_at})
    await add_events(conn, [events.key_rotated(tenant, key.kid, alg, previous, activates_at)])
    log.info("key rotated", tenant=tenant, kid=key.kid, previous_kid=previous, immediate=immediate)
    return key, activates_at


async def rotate(
    pool: asyncpg.Pool,
    keyring: Keyring,
    tenant: str,
    *,
    immediate: bool,
    delay: int,
    limits: RotationLimits | None = None,
) -> tuple[NewKey, datetime]:
    """A requested rotation, within ``limits`` (checked under the tenant's row lock, so
    concurrent requests cannot pass them together)."""
    async with unit_of_work(pool) as conn:
        alg = await _tenant_alg(conn, tenant)
        if limits is not None:
            check_rotation(await store.fetch_keys(conn, tenant), datetime.now(UTC), limits)
        return await rotate_locked(conn, keyring, tenant, alg, immediate=immediate, delay=delay)


async def revoke(pool: asyncpg.Pool, keyring: Keyring, tenant: str, kid: str) -> datetime:
    """Revoke a compromised key; if it was signing, another key takes over at once."""
    now = datetime.now(UTC)
    async with unit_of_work(pool) as conn:
        alg = await _tenant_alg(conn, tenant)
        was = await store.revoke_key(conn, tenant, kid, now)
        if was is None:
            raise UnknownKid(f"unknown or already revoked key {kid!r}")
        if was == "active":
            pending = [k for k in await store.fetch_keys(conn, tenant) if k["state"] == "pending"]
            if pending:
                await store.activate(conn, pending[0]["kid"], now)
            else:
                key = await make_key(keyring, tenant, alg)
                await store.insert_key(conn, {**key.row, "state": "active", "activates_at": now})
        await add_events(conn, [events.key_revoked(tenant, kid)])
    log.warning("signing key revoked", tenant=tenant, kid=kid)
    return now


async def promote_due(pool: asyncpg.Pool) -> int:
    """Make due pending keys active (the previous active key retires). Safe in any replica."""
    now = datetime.now(UTC)
    async with unit_of_work(pool) as conn:
        due = await store.fetch_due_pending(conn, now)
        for row in due:
            await store.retire_active(conn, row["tenant"], now)
            await store.activate(conn, row["kid"], now)
            log.info("pending key activated", tenant=row["tenant"], kid=row["kid"])
    return len(due)


async def scheduled_rotations(pool: asyncpg.Pool, keyring: Keyring, period: int, delay: int) -> int:
    """Rotate every tenant whose period has passed; the claim and the rotation share one
    transaction, so exactly one replica rotates each tenant once per period."""
    if period <= 0:
        return 0
    rotated = 0
    async with unit_of_work(pool) as conn:
        for tenant in await store.claim_due_rotations(conn, datetime.now(UTC), period):
            alg = await _tenant_alg(conn, tenant)
            try:
                async with conn.transaction():
                    await rotate_locked(conn, keyring, tenant, alg, immediate=False, delay=delay)
                rotated += 1
            except RotationPending:
                continue
    return rotated


async def rewrap(pool: asyncpg.Pool, keyring: Keyring) -> int:
    """Re-encrypt every private key not yet under the current KEK, in one transaction.

    Any key that cannot be opened stops the whole rewrap, so nothing is half done.
    """
    rewrapped = 0
    async with unit_of_work(pool) as conn:
        for row in await store.fetch_sealed_keys(conn):
            if row["kek_id"] == keyring.current.id:
                continue
            der = keyring.decrypt(row["kid"], bytes(row["sealed_key"]), row["kek_id"])
            private_from_der(der)  # refuse to write anything we could not read back
            blob, kek_id = keyring.encrypt(row["kid"], der)
            await store.update_sealed_key(conn, row["kid"], blob, kek_id)
            rewrapped += 1
    return rewrapped
