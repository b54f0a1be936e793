"""The subscriber library: a local revocation set fed by events, and local JWT verification.

Usable by any Python service (the gateway uses it too)::

    sub = Subscriber(SubscriberConfig(...), session)
    await sub.start()
    claims = await sub.verify_jwt(token)   # or raises InvalidToken(reason)
    sub.is_revoked(token_id)

See docs/subscriber.md for the configuration, the event contract and the feed.
"""

from shared.subscriber.config import InvalidToken, SubscriberConfig, VerifierUnavailable
from shared.subscriber.feed import FeedUnavailable
from shared.subscriber.subscriber import Subscriber

__all__ = [
    "FeedUnavailable",
    "InvalidToken",
    "Subscriber",
    "SubscriberConfig",
    "VerifierUnavailable",
]
