"""The keys service's API (docs/internal-api.md, "keys"): tenants, signing keys, signatures."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.authz import DEFAULT_MAX_LIFETIME
from shared.clients.base import ServiceClient, checked_tenant
from shared.errors import NotFound
from shared.ids import is_kid


@dataclass(frozen=True)
class Tenant:
    """A tenant's settings, as the keys service keeps them."""

    id: str
    issuer: str
    alg: str
    access_ttl: int
    refresh_ttl: int
    token_quota: int
    max_lifetime: int | None
    created_at: datetime

    @classmethod
    def from_json(cls, body: Any) -> Tenant:
        """KeyError / TypeError / ValueError for a body that is not a Tenant."""
        return cls(
            id=str(body["id"]),
            issuer=str(body["issuer"]),
            alg=str(body["alg"]),
            access_ttl=int(body["access_ttl"]),
            refresh_ttl=int(body["refresh_ttl"]),
            token_quota=int(body["token_quota"]),
            max_lifetime=int(body["max_lifetime"]) if body.get("max_lifetime") else None,
            created_at=datetime.fromisoformat(body["created_at"]),
        )

    @property
    def lifetime_limit(self) -> int:
        """The longest lifetime of any credential minted in the tenant, seconds."""
        return self.max_lifetime or DEFAULT_MAX_LIFETIME

    def to_json(self) -> dict[str, Any]:
        """The internal API's Tenant shape."""
        return {
            "id": self.id,
            "issuer": self.issuer,
            "alg": self.alg,
            "access_ttl": self.access_ttl,
            "refresh_ttl": self.refresh_ttl,
            "token_quota": self.token_quota,
            "max_lifetime": self.max_lifetime,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Signed:
    """Signed tokens, in the order of their claim sets, and the kid that signed them."""

    tokens: list[str] = field(repr=False)
    kid: str


@dataclass(frozen=True)
class Rotation:
    """A new signing key: signing at once (``immediate``) or from ``activates_at``."""

    kid: str
    alg: str
    public_key_pem: str
    activates_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The rotate endpoint's answer shape (``activates_at`` in ISO 8601)."""
        return {
            "kid": self.kid,
            "alg": self.alg,
            "public_key_pem": self.public_key_pem,
            "activates_at": self.activates_at.isoformat(),
        }


@dataclass(frozen=True)
class Jwks:
    """A tenant's JWK Set and the ``Cache-Control`` it was served with."""

    body: dict[str, Any]
    cache_control: str | None


def unknown_kid() -> NotFound:
    """The 404 ``unknown_kid`` for a key that does not exist or is already revoked."""
    return NotFound("unknown or already revoked key", code="unknown_kid")


class KeysClient(ServiceClient):
    """``/internal/tenants…`` of the keys service."""

    service = "keys"

    async def tenant(self, tenant: str) -> Tenant | None:
        """The tenant's settings; None when there is no such tenant (a malformed id: no call)."""
        try:
            body = await self.call("GET", "tenants", checked_tenant(tenant))
        except NotFound:
            return None
        return self._tenant(body)

    async def tenants(self) -> list[Tenant]:
        """Every tenant's settings."""
        body = await self.call("GET", "tenants")
        try:
            return [Tenant.from_json(t) for t in body["tenants"]]
        except (KeyError, TypeError, ValueError):
            raise self.unexpected() from None

    async def create_tenant(self, tenant: str, **settings: Any) -> Tenant:
        """A new tenant and its first signing key; ``settings`` are the optional fields of
        ``POST /internal/tenants`` (issuer, alg, access_ttl, …). Conflict if it exists."""
        body = await self.call("POST", "tenants", json={"id": tenant, **settings})
        return self._tenant(body)

    async def keys(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's signing keys (KeyView objects), for the operator."""
        body = await self.call("GET", "tenants", checked_tenant(tenant), "keys")
        if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
            raise self.unexpected()
        return list(body["keys"])

    async def sign(self, tenant: str, claim_sets: list[dict[str, Any]]) -> Signed:
        """Each claim set signed, in order, by the tenant's active key (one request)."""
        body = await self.call(
            "POST", "tenants", checked_tenant(tenant), "sign", json={"claims": claim_sets}
        )
        try:
            tokens, kid = [str(t) for t in body["tokens"]], str(body["kid"])
        except (KeyError, TypeError):
            raise self.unexpected() from None
        if len(tokens) != len(claim_sets):
            raise self.unexpected()
        return Signed(tokens, kid)

    async def rotate(self, tenant: str, *, immediate: bool) -> Rotation:
        """A new signing key for the tenant, signing at once when ``immediate``, else from its
        ``activates_at``. The keys service may refuse: 409 ``rotation_pending``, 429
        ``rotation_limited``."""
        body = await self.call(
            "POST",
            "tenants",
            checked_tenant(tenant),
            "keys",
            "rotate",
            json={"immediate": immediate},
        )
        try:
            return Rotation(
                kid=str(body["kid"]),
                alg=str(body["alg"]),
                public_key_pem=str(body["public_key_pem"]),
                activates_at=datetime.fromisoformat(body["activates_at"]),
            )
        except (KeyError, TypeError, ValueError):
            raise self.unexpected() from None

    async def revoke_key(self, tenant: str, kid: str) -> dict[str, Any]:
        """``{"kid", "revoked_at"}``; NotFound ``unknown_kid`` (a malformed kid: no call)."""
        if not is_kid(kid):
            raise unknown_kid()
        body = await self.call("POST", "tenants", checked_tenant(tenant), "keys", kid, "revoke")
        if not isinstance(body, dict):
            raise self.unexpected()
        return body

    async def jwks(self, tenant: str) -> Jwks | None:
        """The tenant's JWK Set; None when there is no such tenant."""
        try:
            body, headers = await self.call_with_headers(
                "GET", "tenants", checked_tenant(tenant), "jwks"
            )
        except NotFound:
            return None
        if not isinstance(body, dict):
            raise self.unexpected()
        return Jwks(body, headers.get("Cache-Control"))

    def _tenant(self, body: Any) -> Tenant:
        try:
            return Tenant.from_json(body)
        except (KeyError, TypeError, ValueError):
            raise self.unexpected() from None
