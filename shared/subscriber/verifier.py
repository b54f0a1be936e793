"""Local verification of Tessera JWTs: each tenant's JWKS, plus a revocation set it is given.

The verifier holds no revocations itself: it asks ``is_revoked`` (a
:class:`~shared.subscriber.follower.RevocationFollower`'s, in a
:class:`~shared.subscriber.Subscriber`) on every call, cached or not. Key events reach it
through :meth:`JwtVerifier.on_key_event`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog

from shared.bus.events import KeyRevoked, KeyRotated
from shared.subscriber.config import InvalidToken, SubscriberConfig
from shared.subscriber.jwks import JwksCache, unverified_parts, verify_signature
from shared.tokens import classify

log = structlog.get_logger("tessera.subscriber")


class JwtVerifier:
    """Verifies Tessera JWTs against the tenants' JWKS and refuses the revoked ones."""

    def __init__(
        self,
        config: SubscriberConfig,
        session: aiohttp.ClientSession,
        is_revoked: Callable[[str], bool],
    ) -> None:
        self.config = config
        self._is_revoked = is_revoked
        self._jwks = JwksCache(
            session,
            config.jwks_url_template,
            config.headers,
            default_max_age=config.jwks_default_max_age,
            refetch_interval=config.jwks_refetch_interval,
        )
        # token -> (valid until, kid, claims): see SubscriberConfig.verified_cache_seconds.
        self._verified: dict[str, tuple[float, str, dict[str, Any]]] = {}

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid, unrevoked Tessera JWT, or :class:`InvalidToken`."""
        now = time.time()
        hit = self._verified.get(token)
        if hit is not None:
            until, kid, claims = hit
            if now < until and not self._jwks.kid_revoked(kid):
                if self._is_revoked(claims["jti"]):
                    raise InvalidToken("revoked")
                return dict(claims)
            del self._verified[token]  # expired, or its key revoked: verify from scratch
        if classify(token) != "jwt":
            raise InvalidToken("not_a_jwt")
        tenant, kid = unverified_parts(token)
        key = await self._jwks.key(tenant, kid)
        if key is None:
            # A revoked (compromised) key is not unknown: say which, so operators can tell.
            raise InvalidToken("key_revoked" if self._jwks.kid_revoked(kid) else "unknown_kid")
        claims = verify_signature(token, key, tenant, self.config.leeway, self._jwks.issuer(tenant))
        if self._is_revoked(claims["jti"]):
            raise InvalidToken("revoked")
        self._remember(token, kid, claims, now)
        return claims

    def keys_changed(self, tenant: str) -> None:
        """Refetch the tenant's JWKS on next use (``key.rotated`` events do this too)."""
        self._jwks.invalidate(tenant)

    def on_key_event(self, tenant: str, event: KeyRevoked | KeyRotated) -> None:
        """A revoked key is never trusted again, so every token it signed is refused at once;
        a rotation makes the tenant's JWKS refetch now, not when a token the new key signed
        meets the refetch limit."""
        if isinstance(event, KeyRevoked):
            self._jwks.drop_kid(event.kid, tenant)
            log.info("signing key revoked", tenant=tenant, kid=event.kid)
        else:
            self._jwks.invalidate(tenant)

    def _remember(self, token: str, kid: str, claims: dict[str, Any], now: float) -> None:
        ttl = self.config.verified_cache_seconds
        if ttl <= 0:
            return
        if len(self._verified) >= self.config.verified_cache_size:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        # PyJWT accepts a token while now < exp + leeway; never remember it longer.
        until = min(now + ttl, float(claims["exp"]) + self.config.leeway)
        self._verified[token] = (until, kid, dict(claims))
