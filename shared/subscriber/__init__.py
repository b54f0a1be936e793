"""The subscriber library: a local revocation set fed by events, and local JWT verification.

Usable by any Python service (the gateway uses it too)::

    sub = Subscriber(SubscriberConfig(...), session)
    await sub.start()
    claims = await sub.verify_jwt(token)   # or raises InvalidToken(reason)
    sub.is_revoked(token_id)

:class:`Subscriber` is the two halves together: a :class:`RevocationFollower` (the set, kept
current from the snapshot, the feed and the events) and a :class:`JwtVerifier` (JWKS and
signatures, asking the follower's set). See docs/subscriber.md for the configuration, the
event contract and the feed.
"""

from shared.subscriber.config import InvalidToken, SubscriberConfig, VerifierUnavailable
from shared.subscriber.feed import FeedUnavailable
from shared.subscriber.follower import RevocationFollower
from shared.subscriber.subscriber import Subscriber
from shared.subscriber.verifier import JwtVerifier

__all__ = [
    "FeedUnavailable",
    "InvalidToken",
    "JwtVerifier",
    "RevocationFollower",
    "Subscriber",
    "SubscriberConfig",
    "VerifierUnavailable",
]
