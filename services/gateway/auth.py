"""Authenticating callers: JWTs locally (subscriber library), opaque tokens via the issuer.

An opaque token's principal is cached for a few seconds, keyed by a hash of the token (never
the token itself); a revocation empties its entry at once, and every answer, cached or not, is
checked against the subscriber's revocation set.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import structlog
from prometheus_client import Counter

from services.gateway import edge
from services.gateway.errors import DialectError, current_dialect
from services.gateway.principal import Principal, from_claims
from services.gateway.ratelimit import Limits
from shared.authz import Action, Target, allowed
from shared.clients.issuer import IssuerClient
from shared.clients.revocation import RevocationClient, VerifiedJwt
from shared.errors import Unauthenticated, Unavailable
from shared.logging import bind_actor
from shared.subscriber import InvalidToken, Subscriber, VerifierUnavailable
from shared.tokens import classify

log = structlog.get_logger("tessera.gateway")
AUTH_FAILURES = Counter(
    "tessera_authentication_failures_total",
    "Credentials refused by the gateway, by dialect and reason",
    ["dialect", "reason"],
)


def require(
    principal: Principal, action: Action, target: Target | None, refusal: DialectError
) -> None:
    """Raise ``refusal`` (the dialect's answer, which reveals nothing) unless
    :func:`shared.authz.allowed` lets ``principal`` perform ``action`` on ``target``; the
    reason is logged, never sent."""
    decision = allowed(principal, action, target)
    if not decision:
        log.info("refused", action=str(action), actor=principal.actor, reason=decision.reason)
        raise refusal


class Authenticator:
    def __init__(
        self,
        issuer: IssuerClient,
        revocation: RevocationClient,
        subscriber: Subscriber,
        cache_seconds: float,
        limits: Limits,
    ) -> None:
        self._issuer = issuer
        self._revocation = revocation
        self._limits = limits
        self._subscriber = subscriber
        self._ttl = cache_seconds
        self._cache: dict[bytes, tuple[float, Principal]] = {}
        self._by_token_id: dict[str, bytes] = {}
        subscriber.add_listener(self._forget)

    def _forget(self, revocation: dict[str, Any]) -> None:
        key = self._by_token_id.pop(str(revocation.get("token_id")), None)
        if key is not None:
            self._cache.pop(key, None)

    def revoked(self, principal: Principal) -> bool:
        return self._subscriber.is_revoked(principal.token_id) or bool(
            principal.display_id and self._subscriber.is_revoked(principal.display_id)
        )

    async def authenticate(self, token: str) -> Principal:
        """The caller behind a credential, or :class:`Unauthenticated` (counted by dialect
        and reason in ``tessera_authentication_failures_total``, and against the client's
        address by the pre-authentication limit, which refuses it first once used up)."""
        edge.admit()
        try:
            return await self._authenticate(token)
        except Unauthenticated as exc:
            edge.charge()
            AUTH_FAILURES.labels(current_dialect.get(), exc.details.get("reason", "invalid")).inc()
            raise

    async def _authenticate(self, token: str) -> Principal:
        form = classify(token)
        if form == "jwt":
            principal = await self._jwt(token)
        elif form in ("opaque", "databricks"):
            principal = await self._opaque(token)
        else:
            raise Unauthenticated(
                "the credential is not one Tessera issued", details={"reason": "malformed"}
            )
        if self.revoked(principal):
            raise Unauthenticated("the credential has been revoked", details={"reason": "revoked"})
        bind_actor(principal.actor)
        self._limits.check(principal.tenant, principal.subject)
        return principal

    async def verify_jwt(self, token: str) -> dict[str, Any]:
        """A valid Tessera JWT's claims, or :class:`Unauthenticated` (503 if keys are down);
        limited and charged per client address like :meth:`authenticate`."""
        edge.admit()
        try:
            return await self._subscriber.verify_jwt(token)
        except VerifierUnavailable:
            raise Unavailable("signing keys are unavailable") from None
        except InvalidToken as exc:
            edge.charge()
            raise Unauthenticated(
                f"invalid token: {exc.reason}", details={"reason": exc.reason}
            ) from None

    async def refresh_token_tenant(self, token: str) -> str | None:
        """The tenant of a valid, unrevoked refresh JWT; None for anything else."""
        if classify(token) != "jwt":
            return None
        try:
            claims = await self.verify_jwt(token)
        except Unauthenticated:
            return None
        if claims.get("tapis/token_type") != "refresh" or self._subscriber.is_revoked(
            str(claims.get("jti"))
        ):
            return None
        return str(claims.get("tapis/tenant_id"))

    async def _jwt(self, token: str) -> Principal:
        return from_claims(await self.verify_jwt(token))

    async def _opaque(self, token: str) -> Principal:
        key = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached and cached[0] > now:
            remembered = cached[1]
            if remembered.expires_at is None or remembered.expires_at.timestamp() > time.time():
                return remembered
        principal = await self._issuer.authenticate(token)
        if principal is None:
            self._cache.pop(key, None)
            raise Unauthenticated(
                "invalid credential: unknown, expired or revoked", details={"reason": "unknown"}
            )
        if len(self._cache) > 100_000:
            self._cache.clear()
            self._by_token_id.clear()
        self._cache[key] = (now + self._ttl, principal)
        self._by_token_id[principal.token_id] = key
        return principal

    async def revoke(
        self,
        tenant: str,
        *,
        reason: str,
        actor: str,
        token_id: str | None = None,
        jwt: VerifiedJwt | None = None,
    ) -> list[dict[str, Any]]:
        """Revoke one token (by its id, or a JWT verified here) through the revocation
        service, which has told the issuer before it answers; the revocations it answers take
        effect here at once.

        Other gateways learn of them from their ``token.revoked`` events, milliseconds later;
        this one must not: a client that deletes a token and at once uses it, or deletes it
        again, must already see the first delete."""
        revoked = await self._revocation.revoke(
            tenant, token_id=token_id, jwt=jwt, reason=reason, actor=actor
        )
        for revocation in revoked.revocations:
            self._subscriber.apply(revocation)
            self._forget(revocation)
        return revoked.revocations
