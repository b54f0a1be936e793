"""Tenant settings from the keys service, cached for a few seconds, and signing through it."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import ClientSession

from services.issuer.errors import UnknownTenant
from shared.http import call_service, raise_for_service_error


class KeysClient:
    def __init__(self, session: ClientSession, base_url: str, cache_seconds: int) -> None:
        self._session = session
        self._base = base_url
        self._ttl = cache_seconds
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    async def tenant(self, tenant: str) -> dict[str, Any]:
        """The tenant's settings (issuer, lifetimes, quota), or :class:`UnknownTenant`."""
        cached = self._cache.get(tenant)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        status, body = await call_service(
            self._session, "GET", f"{self._base}/internal/tenants/{tenant}", service="keys"
        )
        if status == 404:
            raise UnknownTenant(f"unknown tenant {tenant!r}")
        raise_for_service_error(status, body, "keys")
        self._cache[tenant] = (time.monotonic() + self._ttl, body)
        return dict(body)

    async def sign(self, tenant: str, claim_sets: list[dict[str, Any]]) -> tuple[list[str], str]:
        """Signed tokens, in order, and the kid that signed them."""
        status, body = await call_service(
            self._session,
            "POST",
            f"{self._base}/internal/tenants/{tenant}/sign",
            service="keys",
            json_body={"claims": claim_sets},
        )
        if status == 404:
            raise UnknownTenant(f"unknown tenant {tenant!r}")
        raise_for_service_error(status, body, "keys")
        return list(body["tokens"]), str(body["kid"])
