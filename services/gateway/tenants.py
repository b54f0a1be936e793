"""The tenants this gateway serves, from the keys service, remembered for a few seconds.

Found tenants are remembered for ``TESSERA_TENANT_CACHE_SECONDS`` (tenants are never deleted),
unknown ones for ``TESSERA_UNKNOWN_TENANT_CACHE_SECONDS``: a stream of requests naming one
costs one keys-service call per few seconds, not one each, and each counts against the client's
address (``edge``). A malformed id is unknown without any call.
"""

from __future__ import annotations

from services.gateway import edge
from shared.authz import DEFAULT_MAX_LIFETIME
from shared.cache import TtlCache
from shared.clients.keys import KeysClient, Tenant
from shared.ids import is_tenant_id


class Tenants:
    """Cached tenant settings, through one :class:`KeysClient`."""

    def __init__(self, keys: KeysClient, ttl: float, negative_ttl: float) -> None:
        self._keys = keys
        self._cache: TtlCache[str, Tenant] = TtlCache(ttl, negative_ttl=negative_ttl)

    async def get(self, tenant: str) -> Tenant | None:
        """The tenant's settings, or None when there is no such tenant."""
        edge.admit()
        found = (
            await self._cache.get(tenant, lambda: self._keys.tenant(tenant))
            if is_tenant_id(tenant)
            else None
        )
        if found is None:
            edge.charge()
        return found

    async def max_lifetime(self, tenant: str) -> int:
        """The tenant's maximum credential lifetime in seconds (CONTRACTS.md §0)."""
        found = await self.get(tenant)
        return found.lifetime_limit if found is not None else DEFAULT_MAX_LIFETIME
