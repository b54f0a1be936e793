"""The signing cache: opened keys and the published JWKS of every tenant, in memory.

Signing touches no database on the hot path. The cache is rebuilt from the database after every
key change here and every maintenance tick (so replicas converge within one tick). Active and
pending keys are opened (decrypted) once, when first seen, and kept in memory: a promotion or a
rewrap under a new KEK never needs the KEK again while the process runs. A key's ``max_exp``
watermark is moved ahead of the latest ``exp`` it signs before the signature is returned.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.keys import store
from services.keys.crypto import JwsSigner, Keyring, private_from_der
from services.keys.domain import ClaimSets, is_published, next_watermark
from services.keys.errors import UnknownTenant
from shared.errors import Unavailable


@dataclass
class OpenKey:
    kid: str
    alg: str
    jws: JwsSigner = field(repr=False)
    # The recorded max_exp, in epoch seconds (None: nothing signed yet).
    watermark: float | None


class Signer:
    def __init__(self, pool: asyncpg.Pool, keyring: Keyring) -> None:
        self._pool = pool
        self._keyring = keyring
        self._opened: dict[str, JwsSigner] = {}
        self._active: dict[str, OpenKey] = {}
        self._jwks: dict[str, list[dict[str, Any]]] = {}
        self._lock = asyncio.Lock()

    def _open(self, row: asyncpg.Record) -> JwsSigner:
        jws = self._opened.get(row["kid"])
        if jws is None:
            der = self._keyring.decrypt(row["kid"], bytes(row["sealed_key"]), row["kek_id"])
            jws = self._opened[row["kid"]] = JwsSigner(
                private_from_der(der), row["alg"], row["kid"]
            )
        return jws

    async def refresh(self) -> None:
        """Reload keys from the database; raises KeyDecryptionError if a key cannot be opened."""
        async with self._lock, self._pool.acquire() as conn:
            rows = await store.fetch_all_keys(conn)
        now = datetime.now(UTC)
        active: dict[str, OpenKey] = {}
        jwks: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            if row["state"] in ("active", "pending"):
                jws = self._open(row)
            if row["state"] == "active":
                watermark = row["max_exp"].timestamp() if row["max_exp"] else None
                previous = self._active.get(row["tenant"])
                if previous and previous.kid == row["kid"] and previous.watermark:
                    watermark = max(watermark or previous.watermark, previous.watermark)
                active[row["tenant"]] = OpenKey(row["kid"], row["alg"], jws, watermark)
            if is_published(row["state"], row["retired_at"], row["max_exp"], now):
                jwks.setdefault(row["tenant"], []).append(row["public_jwk"])
        self._active, self._jwks = active, jwks
        live = {r["kid"] for r in rows if r["state"] in ("active", "pending")}
        self._opened = {kid: jws for kid, jws in self._opened.items() if kid in live}

    def jwks(self, tenant: str) -> list[dict[str, Any]] | None:
        return self._jwks.get(tenant)

    async def _active_key(self, tenant: str) -> OpenKey:
        key = self._active.get(tenant)
        if key is None:
            await self.refresh()  # created a moment ago, perhaps by another replica
            key = self._active.get(tenant)
            if key is None:
                raise UnknownTenant(f"unknown tenant {tenant!r}")
        return key

    async def sign(self, tenant: str, claims: ClaimSets) -> tuple[list[str], OpenKey]:
        """Sign each claim set with the tenant's active key, in order."""
        for _ in range(2):
            key = await self._active_key(tenant)
            mark = next_watermark(claims.latest_exp, key.watermark)
            if mark is not None:
                async with self._pool.acquire() as conn:
                    live = await store.raise_max_exp(
                        conn, key.kid, datetime.fromtimestamp(mark, UTC)
                    )
                if not live:
                    # Revoked (by another replica) since the last refresh: never sign with it.
                    await self.refresh()
                    continue
                key.watermark = mark
            return [key.jws.token(payload) for payload in claims.payloads], key
        raise Unavailable("the signing key changed twice during the request; retry")
