"""The issuer's use of the keys service: tenant settings cached for a few seconds, and
concurrent signing requests coalesced (``shared.clients.keys`` makes the calls)."""

from __future__ import annotations

import asyncio
from typing import Any

from services.issuer.errors import UnknownTenant
from shared.batching import Batcher
from shared.cache import TtlCache
from shared.clients.keys import KeysClient, Signed, Tenant
from shared.errors import TesseraError

SignCall = tuple[str, list[dict[str, Any]]]
# Claim sets per signing request; the keys service takes up to 32 (MAX_CLAIM_SETS).
SIGN_BATCH = 16


class TenantKeys:
    """Tenants and signatures for the issuer, through one :class:`KeysClient`."""

    def __init__(self, keys: KeysClient, cache_seconds: float) -> None:
        self._keys = keys
        self._tenants: TtlCache[str, Tenant] = TtlCache(cache_seconds)
        self._signer: Batcher[SignCall, Signed] = Batcher(
            self._sign_batch, max_batch=SIGN_BATCH, weight=lambda call: len(call[1])
        )

    async def tenant(self, tenant: str) -> Tenant:
        """The tenant's settings (issuer, lifetimes, quota), or :class:`UnknownTenant`."""
        found = await self._tenants.get(tenant, lambda: self._keys.tenant(tenant))
        if found is None:
            raise UnknownTenant(f"unknown tenant {tenant!r}")
        return found

    async def sign(self, tenant: str, claim_sets: list[dict[str, Any]]) -> Signed:
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
                signed = await self._keys.sign(
                    tenant, [claims for n in indexes for claims in calls[n][1]]
                )
            except TesseraError as exc:
                if len(indexes) == 1 or exc.status >= 500 or exc.code == "unknown_tenant":
                    for n in indexes:
                        results[n] = _own(exc, tenant)
                    return
                # Refused as a whole (bad claims, too large): each call on its own, so the
                # refusal reaches only the call that caused it.
                for n in indexes:
                    try:
                        results[n] = await self._keys.sign(tenant, calls[n][1])
                    except TesseraError as own:
                        results[n] = _own(own, tenant)
                return
            start = 0
            for n in indexes:
                count = len(calls[n][1])
                results[n] = Signed(signed.tokens[start : start + count], signed.kid)
                start += count

        await asyncio.gather(*(one_tenant(t, indexes) for t, indexes in by_tenant.items()))
        return results


def _own(exc: TesseraError, tenant: str) -> TesseraError:
    """The issuer's own error for an unknown tenant (the keys service's 404 is one)."""
    if exc.code == "unknown_tenant":
        return UnknownTenant(f"unknown tenant {tenant!r}")
    return exc
