"""The subscriber's configuration and the one exception its verification raises."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.settings import AmqpNames


class InvalidToken(Exception):
    """A token that must be refused; ``reason`` is a short machine-readable word.

    Reasons: ``malformed``, ``not_a_jwt``, ``unknown_tenant``, ``unknown_kid``, ``key_revoked``,
    ``algorithm_refused``, ``bad_signature``, ``expired``, ``missing_claim``, ``wrong_issuer``,
    ``revoked``,
    ``jwks_unavailable`` (see :class:`VerifierUnavailable`).
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason


class VerifierUnavailable(InvalidToken):
    """The tenant's JWKS could not be fetched and none is cached: a 503, not the token's fault."""

    def __init__(self, message: str = "signing keys unavailable") -> None:
        super().__init__("jwks_unavailable", message)


@dataclass(frozen=True)
class SubscriberConfig:
    """Where a subscriber finds the feed, the JWKS and the broker.

    ``revocations_url`` is the feed (``GET <url>?since=``); the snapshot is ``<url>/snapshot``.
    ``jwks_url_template`` holds ``{tenant}``. ``headers`` go on every HTTP request (e.g. a
    bearer when following through the gateway). ``name`` labels the queue and the metrics.
    """

    revocations_url: str
    jwks_url_template: str
    # None: no broker (a subscriber outside the internal network follows the gateway's public
    # feed by polling it every ``poll_interval``).
    amqp_url: str | None = field(default=None, repr=False)
    amqp_names: AmqpNames = field(default_factory=AmqpNames)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    name: str = "subscriber"
    # Feed and snapshot page sizes (the feed allows up to 1000, the snapshot 10000).
    feed_page: int = 1000
    snapshot_page: int = 10000
    # A gap is filled from the feed after this pause, unless the missing events arrive first.
    gap_wait: float = 0.05
    # The feed is also polled this often, so even a lost last event is noticed.
    poll_interval: float = 5.0
    # Further behind than this many seqs, a subscriber re-bootstraps from the snapshot.
    rebootstrap_after: int = 100_000
    # Entries are dropped this long after their token expired (clock skew between services).
    expiry_grace: float = 60.0
    # JWKS: used when the response has no max-age, and the least time between refetches
    # triggered by an unknown kid (so a flood of forged kids cannot hammer the keys service).
    jwks_default_max_age: float = 300.0
    jwks_refetch_interval: float = 5.0
    # How long start() keeps trying to read the feed before it gives up.
    start_timeout: float = 30.0
    # Tolerance on exp, in seconds.
    leeway: float = 0.0
    # Verified JWTs are remembered this long (never past their exp), so a client sending the
    # same token again costs a dict lookup instead of a signature check; revocation of the
    # token or of its key is still checked on every use. 0 turns the cache off.
    verified_cache_seconds: float = 10.0
    verified_cache_size: int = 10_000
