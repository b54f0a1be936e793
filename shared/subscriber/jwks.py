"""Local JWT verification against each tenant's cached JWKS.

The algorithm comes from the JWK, never from the token header; ``none`` and HS* are refused
whatever a JWKS says. ``kid`` is only a dictionary key, never part of a URL or path, and the
tenant (taken from the unverified ``tapis/tenant_id`` claim) must match a strict pattern before
it goes into the JWKS URL, quoted. An unknown ``kid`` triggers a refetch, at most once per
``refetch_interval`` per tenant, so forged kids cannot hammer the keys service; an unknown
tenant is remembered as such for ``refetch_interval`` too, and every per-tenant map is bounded.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt
import structlog

from shared.ids import is_tenant_id
from shared.subscriber.config import InvalidToken, VerifierUnavailable

log = structlog.get_logger("tessera.subscriber.jwks")

ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_MAX_AGE = re.compile(r"max-age=(\d+)")
MAX_TOKEN_BYTES = 16 * 1024
# Tenants whose keys (or unknown-ness) are kept, and tenants with a fetch lock at once.
MAX_TENANTS = 10_000


@dataclass
class TenantKeys:
    """One tenant's public keys by kid, when they were fetched and until when they are fresh
    (``time.monotonic`` seconds)."""

    keys: dict[str, jwt.PyJWK]
    fetched_at: float
    expires_at: float
    # The tenant's token issuer, when the JWKS names it (Tessera's does: an extra member of
    # the JWK Set, which RFC 7517 lets other readers ignore); tokens must carry it as iss.
    issuer: str | None = None


@dataclass
class JwksCache:
    """Per-tenant JWKS, kept for the response's max-age; refetched on an unknown kid."""

    session: aiohttp.ClientSession
    url_template: str
    headers: Mapping[str, str] = field(default_factory=dict)
    default_max_age: float = 300.0
    refetch_interval: float = 5.0
    _tenants: dict[str, TenantKeys] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # Tenants the keys service did not know, until when: no call for them before then.
    _unknown: dict[str, float] = field(default_factory=dict)
    # Kids announced revoked: never trusted again, even if a stale JWKS still lists them.
    _revoked_kids: set[str] = field(default_factory=set)

    def drop_kid(self, kid: str, tenant: str | None = None) -> None:
        """Forget a revoked key at once: every token it signed is refused from now on.

        The tenant's JWKS is refetched on next use: when the revoked key was signing, the
        key taking over may not have been published before.
        """
        self._revoked_kids.add(kid)
        for entry in self._tenants.values():
            entry.keys.pop(kid, None)
        if tenant is not None:
            self.invalidate(tenant)

    def invalidate(self, tenant: str) -> None:
        """Refetch the tenant's JWKS on next use, whatever its max-age and the refetch limit
        say: a key was just added (an immediate rotation signs with it at once)."""
        self._unknown.pop(tenant, None)
        entry = self._tenants.get(tenant)
        if entry is not None:
            entry.expires_at = entry.fetched_at = float("-inf")

    def kid_revoked(self, kid: str) -> bool:
        """Whether ``kid`` was announced revoked (its tokens are refused whatever a JWKS says)."""
        return kid in self._revoked_kids

    def issuer(self, tenant: str) -> str | None:
        """The ``iss`` the tenant's tokens must carry, when its cached JWKS names one."""
        entry = self._tenants.get(tenant)
        return entry.issuer if entry is not None else None

    async def key(self, tenant: str, kid: str) -> jwt.PyJWK | None:
        """The tenant's key ``kid``, fetching the JWKS when stale or when the kid is unknown."""
        if kid in self._revoked_kids:
            return None
        now = time.monotonic()
        if self._unknown.get(tenant, now) > now:
            raise InvalidToken("unknown_tenant")
        entry = self._tenants.get(tenant)
        if entry is None or now >= entry.expires_at:
            entry = await self._refresh(tenant, entry)
        found = entry.keys.get(kid)
        if found is None and now - entry.fetched_at >= self.refetch_interval:
            entry = await self._refresh(tenant, entry)
            found = entry.keys.get(kid)
        return found

    async def _refresh(self, tenant: str, stale: TenantKeys | None) -> TenantKeys:
        lock = self._locks.get(tenant)
        if lock is None:
            if len(self._locks) >= MAX_TENANTS:
                raise VerifierUnavailable("too many tenants' keys being fetched at once")
            lock = self._locks[tenant] = asyncio.Lock()
        try:
            async with lock:
                return await self._refresh_locked(tenant, stale)
        finally:
            # A lock nobody holds is dropped, so names tried once do not pile up; a waiter
            # still queued on it keeps its reference, at worst one duplicate fetch follows.
            if not lock.locked() and self._locks.get(tenant) is lock:
                del self._locks[tenant]

    async def _refresh_locked(self, tenant: str, stale: TenantKeys | None) -> TenantKeys:
        current = self._tenants.get(tenant)
        if current is not None and current is not stale:
            return current  # another caller refreshed it while we waited
        try:
            fresh = await self._fetch(tenant)
        except InvalidToken:
            if len(self._unknown) >= MAX_TENANTS:
                self._unknown.clear()
            self._unknown[tenant] = time.monotonic() + self.refetch_interval
            raise
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.warning("jwks fetch failed", tenant=tenant, error=type(exc).__name__)
            if stale is not None:
                # Keep verifying with the keys we had; retry after the refetch interval.
                stale.fetched_at = stale.expires_at = time.monotonic()
                stale.expires_at += self.refetch_interval
                return stale
            raise VerifierUnavailable() from None
        if stale is None and len(self._tenants) >= MAX_TENANTS:
            self._tenants.clear()  # bounded; entries are refetched on next use
        self._tenants[tenant] = fresh
        self._unknown.pop(tenant, None)
        return fresh

    async def _fetch(self, tenant: str) -> TenantKeys:
        if not is_tenant_id(tenant):
            raise InvalidToken("unknown_tenant")
        url = self.url_template.format(tenant=quote(tenant, safe=""))
        async with self.session.get(url, headers=dict(self.headers)) as resp:
            if resp.status == 404:
                raise InvalidToken("unknown_tenant")
            if resp.status != 200:
                raise aiohttp.ClientResponseError(
                    resp.request_info, resp.history, status=resp.status
                )
            body = await resp.json(content_type=None)
            max_age = _max_age(resp.headers.get("Cache-Control"), self.default_max_age)
        now = time.monotonic()
        issuer = body.get("issuer") if isinstance(body, dict) else None
        return TenantKeys(
            parse_jwks(body, self._revoked_kids),
            now,
            now + max_age,
            issuer if isinstance(issuer, str) else None,
        )


def _max_age(cache_control: str | None, default: float) -> float:
    match = _MAX_AGE.search(cache_control or "")
    return float(match.group(1)) if match else default


def parse_jwks(body: Any, revoked: set[str] | frozenset[str] = frozenset()) -> dict[str, jwt.PyJWK]:
    """``{kid: key}`` of the usable signature keys in a JWKS; anything else is skipped."""
    if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
        raise ValueError("not a JWKS")
    keys: dict[str, jwt.PyJWK] = {}
    for jwk in body["keys"]:
        if not isinstance(jwk, dict):
            continue
        kid, alg = jwk.get("kid"), jwk.get("alg")
        if not isinstance(kid, str) or kid in revoked or jwk.get("use", "sig") != "sig":
            continue
        if alg is not None and alg not in ALLOWED_ALGORITHMS:
            continue  # "none", HS* and anything unknown never verify a Tessera token
        try:
            key = jwt.PyJWK(jwk)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        if key.algorithm_name in ALLOWED_ALGORITHMS:
            keys[kid] = key
    return keys


def unverified_parts(token: str) -> tuple[str, str]:
    """(tenant, kid) from a token's unverified claims and header, or :class:`InvalidToken`."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
        raise InvalidToken("malformed")
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except (jwt.PyJWTError, RecursionError):
        # RecursionError: a header or payload of deeply nested JSON (json.loads recurses).
        raise InvalidToken("malformed") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
        raise InvalidToken("algorithm_refused")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 256:
        raise InvalidToken("unknown_kid")
    tenant = claims.get("tapis/tenant_id")
    if not is_tenant_id(tenant):
        raise InvalidToken("unknown_tenant")
    return tenant, kid


def verify_signature(
    token: str, key: jwt.PyJWK, tenant: str, leeway: float, issuer: str | None = None
) -> dict[str, Any]:
    """The verified claims; the algorithm is the key's own, ``exp`` and ``jti`` required, and
    ``iss`` must be the tenant's issuer when that is known."""
    required = ["exp", "jti", "iss"] if issuer else ["exp", "jti"]
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[key.algorithm_name],
            options={"require": required, "verify_aud": False},
            issuer=issuer,
            leeway=leeway,
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("expired") from None
    except jwt.InvalidIssuerError:
        raise InvalidToken("wrong_issuer") from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken("missing_claim", f"missing claim {exc.claim}") from None
    except jwt.InvalidAlgorithmError:
        raise InvalidToken("algorithm_refused") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken("bad_signature") from None
    except jwt.PyJWTError:
        raise InvalidToken("malformed") from None
    if claims.get("tapis/tenant_id") != tenant:
        raise InvalidToken("unknown_tenant")
    if not isinstance(claims["jti"], str):
        raise InvalidToken("missing_claim", "jti must be a string")
    return claims
