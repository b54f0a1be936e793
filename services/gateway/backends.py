"""Calls to the issuer, revocation and keys services (docs/internal-api.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import ClientError, ClientSession

from services.gateway import edge
from services.gateway.settings import Settings
from shared.authz import DEFAULT_MAX_LIFETIME
from shared.batching import Batcher
from shared.cache import TtlCache
from shared.errors import BadRequest, Unavailable
from shared.http import call_service, raise_for_service_error
from shared.ids import InvalidIdentifier, is_tenant_id, tenant_url

log = structlog.get_logger("tessera.gateway")
# How long a revocation's answer waits for the issuer to note it (Authenticator.revoke).
MARK_TIMEOUT = 2.0

# The revocation feed's two pages (GET /internal/revocations[/snapshot]).
FEED_PATHS = ("", "/snapshot")
# What the dialects' owner lists read of a TokenRecord.
LIST_FIELDS = ["id", "display_id", "name", "created_at", "expires_at"]


class Backends:
    def __init__(self, session: ClientSession, settings: Settings) -> None:
        self._session = session
        self._issuer = settings.issuer_url
        self._keys = settings.keys_url
        self._revocation = settings.revocation_url
        # Unknown tenants are remembered too, briefly: a stream of requests naming one costs
        # one keys-service call per few seconds, not one each.
        self._tenants: TtlCache[str, dict[str, Any]] = TtlCache(
            settings.tenant_cache_seconds, negative_ttl=settings.unknown_tenant_cache_seconds
        )
        self._owner_lists: Batcher[dict[str, Any], list[dict[str, Any]]] = Batcher(
            self._owner_lists_batch, max_batch=32, max_in_flight=1
        )

    async def _call(
        self,
        service: str,
        method: str,
        url: str,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        status, payload = await call_service(
            self._session, method, url, service=service, json_body=body, params=params
        )
        raise_for_service_error(status, payload, service)
        return payload

    # issuer
    async def authenticate(self, token: str) -> tuple[int, Any]:
        return await call_service(
            self._session,
            "POST",
            f"{self._issuer}/internal/authenticate",
            service="issuer",
            json_body={"token": token},
        )

    async def create_opaque(self, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "issuer", "POST", f"{self._issuer}/internal/tokens", fields
        )
        return result

    async def create_jwt(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "issuer", "POST", f"{self._issuer}/internal/jwt", body
        )
        return result

    async def refresh_jwt(self, token: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "issuer", "POST", f"{self._issuer}/internal/jwt/refresh", {"refresh_token": token}
        )
        return result

    async def owner_tokens(
        self, tenant: str, subject: str, kinds: list[str], limit: int
    ) -> list[dict[str, Any]]:
        """One owner's active tokens of these kinds, newest first, with the fields of
        LIST_FIELDS only. Concurrent calls are coalesced into one issuer request
        (POST /internal/tokens/lists)."""
        query = {"tenant": tenant, "subject": subject, "kinds": kinds, "limit": limit}
        return await self._owner_lists.submit(query)

    async def _owner_lists_batch(
        self, queries: list[dict[str, Any]]
    ) -> list[list[dict[str, Any]] | Exception]:
        result = await self._call(
            "issuer",
            "POST",
            f"{self._issuer}/internal/tokens/lists",
            {"lists": queries, "fields": LIST_FIELDS},
        )
        return [list(found["tokens"]) for found in result["results"]]

    async def list_tokens(self, **params: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "issuer", "GET", f"{self._issuer}/internal/tokens", params=params
        )
        return result

    async def lookup(self, tenant: str, **selector: str) -> dict[str, Any] | None:
        """The token record, or None when the issuer knows no such token in this tenant."""
        status, body = await call_service(
            self._session,
            "GET",
            f"{self._issuer}/internal/tokens/lookup",
            service="issuer",
            params={"tenant": tenant, **selector},
        )
        if status == 404:
            return None
        raise_for_service_error(status, body, "issuer")
        return dict(body)

    # revocation
    async def revoke(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        result = await self._call(
            "revocation", "POST", f"{self._revocation}/internal/revocations", body
        )
        return list(result["revocations"])

    async def mark_revoked(self, revocations: list[dict[str, Any]]) -> None:
        """Have the issuer count these tokens revoked now. Best effort, for at most
        MARK_TIMEOUT seconds: the revocations hold regardless and their events will tell it."""
        if not revocations:
            return
        try:
            async with asyncio.timeout(MARK_TIMEOUT):
                await self._call(
                    "issuer",
                    "POST",
                    f"{self._issuer}/internal/tokens/revoked",
                    {"revocations": revocations},
                )
        except Exception as exc:
            log.warning("issuer not told of a revocation; its event will", error=repr(exc))

    async def feed(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        if path not in FEED_PATHS:
            raise ValueError(f"no feed page {path!r}")
        result: dict[str, Any] = await self._call(
            "revocation", "GET", f"{self._revocation}/internal/revocations{path}", params=params
        )
        return result

    # keys
    async def tenant(self, tenant: str) -> dict[str, Any] | None:
        """The tenant's settings, or None when there is no such tenant. Found tenants are
        remembered for ``TESSERA_TENANT_CACHE_SECONDS`` (tenants are never deleted), unknown
        ones for ``TESSERA_UNKNOWN_TENANT_CACHE_SECONDS``. A malformed id is unknown without
        any call."""
        edge.admit()
        found = (
            await self._tenants.get(tenant, lambda: self._fetch_tenant(tenant))
            if is_tenant_id(tenant)
            else None
        )
        if found is None:
            edge.charge()
            return None
        return dict(found)

    async def max_lifetime(self, tenant: str) -> int:
        """The tenant's maximum credential lifetime in seconds (CONTRACTS.md §0)."""
        found = await self.tenant(tenant)
        if found is None:
            return DEFAULT_MAX_LIFETIME
        return int(found.get("max_lifetime") or DEFAULT_MAX_LIFETIME)

    async def _fetch_tenant(self, tenant: str) -> dict[str, Any] | None:
        status, body = await call_service(
            self._session, "GET", tenant_url(self._keys, tenant), service="keys"
        )
        if status == 404:
            return None
        raise_for_service_error(status, body, "keys")
        return dict(body)

    async def rotate_now(self, tenant: str) -> dict[str, Any]:
        try:
            url = tenant_url(self._keys, tenant, "keys", "rotate")
        except InvalidIdentifier:
            raise BadRequest(f"tenant {tenant} is not served here") from None
        result: dict[str, Any] = await self._call("keys", "POST", url, {"immediate": True})
        return result

    async def jwks(self, tenant: str) -> tuple[int, Any, str | None]:
        """(status, body, Cache-Control) of the tenant's JWKS; 404 for a malformed tenant id
        without any call."""
        try:
            url = tenant_url(self._keys, tenant, "jwks")
        except InvalidIdentifier:
            return 404, None, None
        try:
            async with self._session.get(url) as resp:
                return (
                    resp.status,
                    await resp.json(content_type=None),
                    resp.headers.get("Cache-Control"),
                )
        except (ClientError, TimeoutError, OSError, ValueError) as exc:
            log.warning("service unreachable", target="keys", error=type(exc).__name__)
            raise Unavailable("the keys service is unavailable") from None
