"""The subscriber: a revocation follower and a JWT verifier over its set, as one object.

:class:`Subscriber` is what docs/subscriber.md shows: it follows revocations as
:class:`~shared.subscriber.follower.RevocationFollower` does (start, close, apply,
is_revoked, seq, lag_seconds, listeners) and verifies JWTs with a
:class:`~shared.subscriber.verifier.JwtVerifier` that asks the follower's set and hears its
key events. Either half can be used alone.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from shared.subscriber.config import SubscriberConfig
from shared.subscriber.follower import RevocationFollower
from shared.subscriber.verifier import JwtVerifier


class Subscriber(RevocationFollower):
    """Holds the revocation set current and verifies Tessera JWTs locally.

    It is the follower itself (its state is the subscriber's) with a verifier beside it.
    """

    def __init__(self, config: SubscriberConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(config, session)
        self.verifier = JwtVerifier(config, session, self.is_revoked)
        self.add_key_listener(self.verifier.on_key_event)

    async def verify_jwt(self, token: str) -> dict[str, Any]:
        """The claims of a valid, unrevoked Tessera JWT, or :class:`InvalidToken`."""
        return await self.verifier.verify(token)

    def keys_changed(self, tenant: str) -> None:
        """Refetch the tenant's JWKS on next use (``key.rotated`` events do this too)."""
        self.verifier.keys_changed(tenant)
