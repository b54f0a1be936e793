"""The signing cache: opened active keys and the published JWKS of every tenant, in memory.

Signing touches no database on the hot path. The cache is rebuilt from the database after every
key change here and every maintenance tick (so replicas converge within one tick). A key's
``max_exp`` watermark is moved ahead of the latest ``exp`` it signs before the signature is
returned, with an hour of slack so that only one signature in many writes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import jwt

from services.keys import store
from services.keys.crypto import Keyring, PrivateKey, private_from_der
from services.keys.domain import NEVER, is_published, latest_exp
from services.keys.errors import UnknownTenant

WATERMARK_SLACK = timedelta(hours=1)


@dataclass
class OpenKey:
    kid: str
    alg: str
    private: PrivateKey = field(repr=False)
    watermark: datetime | None


class Signer:
    def __init__(self, pool: asyncpg.Pool, keyring: Keyring) -> None:
        self._pool = pool
        self._keyring = keyring
        self._opened: dict[str, PrivateKey] = {}
        self._active: dict[str, OpenKey] = {}
        self._jwks: dict[str, list[dict[str, Any]]] = {}
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Reload keys from the database; opens (decrypts) each key once."""
        async with self._lock, self._pool.acquire() as conn:
            rows = await store.fetch_all_keys(conn)
        now = datetime.now(UTC)
        active: dict[str, OpenKey] = {}
        jwks: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            if row["state"] == "active":
                private = self._opened.get(row["kid"])
                if private is None:
                    der = self._keyring.decrypt(row["kid"], bytes(row["sealed_key"]), row["kek_id"])
                    private = self._opened[row["kid"]] = private_from_der(der)
                previous = self._active.get(row["tenant"])
                watermark = row["max_exp"]
                if previous and previous.kid == row["kid"] and previous.watermark:
                    watermark = max(watermark or previous.watermark, previous.watermark)
                active[row["tenant"]] = OpenKey(row["kid"], row["alg"], private, watermark)
            if is_published(row["state"], row["retired_at"], row["max_exp"], now):
                jwks.setdefault(row["tenant"], []).append(row["public_jwk"])
        self._active, self._jwks = active, jwks
        live = {key.kid for key in active.values()}
        self._opened = {kid: key for kid, key in self._opened.items() if kid in live}

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

    async def sign(
        self, tenant: str, claim_sets: list[dict[str, Any]]
    ) -> tuple[list[str], OpenKey]:
        """Sign each claim set with the tenant's active key, in order."""
        key = await self._active_key(tenant)
        until = latest_exp(claim_sets)
        if key.watermark is None or until > key.watermark:
            mark = until if until >= NEVER else until + WATERMARK_SLACK
            async with self._pool.acquire() as conn:
                await store.raise_max_exp(conn, key.kid, mark)
            key.watermark = mark
        headers = {"kid": key.kid, "typ": "JWT"}
        tokens = [
            jwt.encode(claims, key.private, algorithm=key.alg, headers=headers)
            for claims in claim_sets
        ]
        return tokens, key
