import pytest

from services.gateway.ratelimit import Limits, RateLimiter
from shared.errors import RateLimited


def test_bucket_allows_the_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate=2, burst=3)
    assert [limiter.retry_after("k", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.retry_after("k", now=0.0) == pytest.approx(0.5)
    assert limiter.retry_after("k", now=0.5) == 0.0  # one token back after 1/rate seconds
    assert limiter.retry_after("other", now=0.5) == 0.0  # keys are independent


def test_zero_rate_is_off() -> None:
    limiter = RateLimiter(rate=0, burst=1)
    assert all(limiter.retry_after("k", now=0.0) == 0.0 for _ in range(1000))


def test_tenant_limit_applies_across_principals() -> None:
    limits = Limits(RateLimiter(100, 100), RateLimiter(1, 2))
    limits.check("t", "a")
    limits.check("t", "b")
    with pytest.raises(RateLimited) as caught:
        limits.check("t", "c")
    assert caught.value.details["retry_after"] >= 1
    limits.check("u", "a")  # another tenant is not affected
