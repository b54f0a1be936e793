"""Token-bucket rate limits per principal and per tenant, kept in this gateway's memory.

Each replica limits on its own, so with N replicas a caller gets up to N times the rate: set
the limits per replica. A rate of 0 turns a limit off.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from shared.errors import RateLimited


@dataclass
class Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    def __init__(self, rate: float, burst: float, *, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._buckets: dict[str, Bucket] = {}
        self._max_keys = max_keys

    def _bucket(self, key: str, now: float) -> Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._buckets.clear()  # bounded memory; a reset only ever lets callers through
            bucket = self._buckets[key] = Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        return bucket

    def retry_after(self, key: str, now: float | None = None) -> float:
        """0 when a request for ``key`` may pass now (and takes its token), else the seconds
        until one may."""
        if self.rate <= 0:
            return 0.0
        bucket = self._bucket(key, time.monotonic() if now is None else now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def waiting(self, key: str, now: float | None = None) -> float:
        """Like :meth:`retry_after` but takes nothing: 0 while ``key`` has a token left."""
        if self.rate <= 0 or key not in self._buckets:
            return 0.0
        bucket = self._bucket(key, time.monotonic() if now is None else now)
        return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) / self.rate

    def charge(self, key: str, now: float | None = None) -> None:
        """Take one token from ``key`` (down to none): something it did counts against it."""
        if self.rate > 0:
            bucket = self._bucket(key, time.monotonic() if now is None else now)
            bucket.tokens = max(0.0, bucket.tokens - 1.0)


class Limits:
    """The principal limit and the tenant limit, checked together."""

    def __init__(self, principal: RateLimiter, tenant: RateLimiter) -> None:
        self.principal = principal
        self.tenant = tenant

    def check(self, tenant: str, principal: str) -> None:
        wait = self.principal.retry_after(f"{tenant}/{principal}") or self.tenant.retry_after(
            tenant
        )
        if wait:
            raise RateLimited(
                "too many requests: slow down and retry",
                details={"retry_after": math.ceil(wait)},
            )
