"""Tenant settings from the keys service, cached for a few seconds, and signing through it."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import ClientSession

from services.issuer.errors import UnknownTenant
from shared.batching import Batcher
from shared.cache import TtlCache
from shared.errors import TesseraError, Unavailable
from shared.http import call_service, raise_for_service_error
from shared.ids import InvalidIdentifier, tenant_url

SignCall = tuple[str, list[dict[str, Any]]]
Signed = tuple[list[str], str]
# Claim sets per signing request; the keys service takes up to 32 (MAX_CLAIM_SETS).
SIGN_BATCH = 16


class KeysClient:
    def __init__(self, session: ClientSession, base_url: str, cache_seconds: float) -> None:
        self._session = session
        self._base = base_url
        self._tenants: TtlCache[str, dict[str, Any]] = TtlCache(cache_seconds)
        self._signer: Batcher[SignCall, Signed] = Batcher(
            self._sign_batch, max_batch=SIGN_BATCH, weight=lambda call: len(call[1])
        )

    async def tenant(self, tenant: str) -> dict[str, Any]:
        """The tenant's settings (issuer, lifetimes, quota), or :class:`UnknownTenant`."""
        found = await self._tenants.get(tenant, lambda: self._fetch_tenant(tenant))
        if found is None:
            raise UnknownTenant(f"unknown tenant {tenant!r}")
        return dict(found)

    def _url(self, tenant: str, *rest: str) -> str:
        try:
            return tenant_url(self._base, tenant, *rest)
        except InvalidIdentifier:
            raise UnknownTenant(f"unknown tenant {tenant!r}") from None

    async def _fetch_tenant(self, tenant: str) -> dict[str, Any] | None:
        status, body = await call_service(self._session, "GET", self._url(tenant), service="keys")
        if status == 404:
            return None
        raise_for_service_error(status, body, "keys")
        return dict(body)

    async def sign(self, tenant: str, claim_sets: list[dict[str, Any]]) -> tuple[list[str], str]:
        """Signed tokens, in order, and the kid that signed them.

        Concurrent calls are coalesced: claim sets queued while earlier signing requests are in
        flight go to the keys service together, one request per tenant."""
        return await self._signer.submit((tenant, claim_sets))

    async def _sign_batch(self, calls: list[SignCall]) -> list[Signed | Exception]:
        by_tenant: dict[str, list[int]] = {}
        for n, (tenant, _) in enumerate(calls):
            by_tenant.setdefault(tenant, []).append(n)
        results: list[Signed | Exception] = [RuntimeError("not signed")] * len(calls)

        async def one_tenant(tenant: str, indexes: list[int]) -> None:
            try:
                tokens, kid = await self._sign_request(
                    tenant, [claims for n in indexes for claims in calls[n][1]]
                )
            except TesseraError as exc:
                if len(indexes) == 1 or exc.status >= 500 or isinstance(exc, UnknownTenant):
                    for n in indexes:
                        results[n] = exc
                    return
                # Refused as a whole (bad claims, too large): each call on its own, so the
                # refusal reaches only the call that caused it.
                for n in indexes:
                    try:
                        results[n] = await self._sign_request(tenant, calls[n][1])
                    except TesseraError as own:
                        results[n] = own
                return
            start = 0
            for n in indexes:
                count = len(calls[n][1])
                results[n] = (tokens[start : start + count], kid)
                start += count

        await asyncio.gather(*(one_tenant(t, indexes) for t, indexes in by_tenant.items()))
        return results

    async def _sign_request(
        self, tenant: str, claim_sets: list[dict[str, Any]]
    ) -> tuple[list[str], str]:
        status, body = await call_service(
            self._session,
            "POST",
            self._url(tenant, "sign"),
            service="keys",
            json_body={"claims": claim_sets},
        )
        if status == 404:
            raise UnknownTenant(f"unknown tenant {tenant!r}")
        raise_for_service_error(status, body, "keys")
        tokens = list(body["tokens"])
        if len(tokens) != len(claim_sets):
            raise Unavailable("the keys service answered with the wrong number of tokens")
        return tokens, str(body["kid"])
