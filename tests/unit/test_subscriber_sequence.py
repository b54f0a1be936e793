"""How a subscriber applies revocations: at once, once, and with a seq it can trust."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY

from shared.subscriber import Subscriber, SubscriberConfig


@pytest.fixture
async def subscriber() -> AsyncIterator[Subscriber]:
    # No socket is opened: nothing here starts the subscriber.
    async with aiohttp.ClientSession() as session:
        sub = Subscriber(
            SubscriberConfig(
                revocations_url="http://127.0.0.1:9/internal/revocations",
                jwks_url_template="http://127.0.0.1:9/{tenant}",
                amqp_url="amqp://127.0.0.1:9/",
                name="unit",
            ),
            session,
        )
        sub._bootstrapped = True  # as if the (empty) snapshot had been loaded
        yield sub


def _revocation(seq: int, **overrides: Any) -> dict[str, Any]:
    token_id = str(uuid.uuid4())
    body = {
        "seq": seq,
        "tenant": "acme",
        "token_id": token_id,
        "jti": token_id,
        "display_id": None,
        "expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        "revoked_at": datetime.now(UTC).isoformat(),
    }
    body.update(overrides)
    return body


def test_in_order_revocations_advance_the_seq(subscriber: Subscriber) -> None:
    for seq in (1, 2, 3):
        assert subscriber.apply(_revocation(seq))
    assert subscriber.seq == 3


def test_duplicates_and_shuffled_deliveries_apply_once_and_end_current(
    subscriber: Subscriber,
) -> None:
    revocations = [_revocation(seq) for seq in range(1, 51)]
    seen: list[str] = []
    subscriber.add_listener(lambda r: seen.append(r["token_id"]))
    deliveries = revocations * 3
    random.Random(3).shuffle(deliveries)
    for revocation in deliveries:
        subscriber.apply(revocation)
    assert sorted(seen) == sorted(r["token_id"] for r in revocations)
    assert subscriber.seq == 50
    assert all(subscriber.is_revoked(r["token_id"]) for r in revocations)


def test_a_gap_holds_the_seq_back_but_the_later_revocation_applies_at_once(
    subscriber: Subscriber,
) -> None:
    subscriber.apply(_revocation(1))
    later = _revocation(3)
    subscriber.apply(later)
    assert subscriber.is_revoked(later["token_id"])
    assert subscriber.seq == 1
    assert subscriber.lag_seconds >= 0.0 and subscriber._ahead == {3}
    subscriber.apply(_revocation(2))
    assert subscriber.seq == 3 and not subscriber._ahead


def test_an_expired_revocation_is_not_held_but_counts_for_the_seq(subscriber: Subscriber) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    revocation = _revocation(1, expires_at=past)
    assert not subscriber.apply(revocation)
    assert not subscriber.is_revoked(revocation["token_id"])
    assert subscriber.seq == 1


def test_a_failing_listener_does_not_stop_the_others(subscriber: Subscriber) -> None:
    seen: list[int] = []

    def broken(_: dict[str, Any]) -> None:
        raise RuntimeError("listener bug")

    subscriber.add_listener(broken)
    subscriber.add_listener(lambda r: seen.append(r["seq"]))
    subscriber.apply(_revocation(1))
    assert seen == [1]


def test_a_revocation_without_token_id_is_refused(subscriber: Subscriber) -> None:
    with pytest.raises(ValueError):
        subscriber.apply({"seq": 1, "expires_at": None})
    assert subscriber.seq == 0


def test_lag_is_zero_only_when_current_and_connected(subscriber: Subscriber) -> None:
    assert subscriber.lag_seconds > 0  # no broker connection: not known to be current
    subscriber._queue.up = True
    assert subscriber.lag_seconds == 0.0
    subscriber.apply(_revocation(5))  # seqs 1..4 are missing
    assert subscriber.lag_seconds > 0 and subscriber.seq == 0


def test_propagation_and_lag_are_exported_as_metrics(subscriber: Subscriber) -> None:
    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"subscriber": "unit"}) or 0.0

    before = sample("tessera_revocation_propagation_seconds_count")
    revocation = _revocation(1)
    subscriber.apply(revocation)
    subscriber.apply(revocation)  # a duplicate is not a second propagation
    assert sample("tessera_revocation_propagation_seconds_count") == before + 1
    assert sample("tessera_subscriber_seq") == 1
    subscriber._queue.up = True
    assert sample("tessera_subscriber_lag_seconds") == 0.0
