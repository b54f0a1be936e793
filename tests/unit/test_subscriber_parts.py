"""The subscriber's two halves: the follower parses events into typed ones, the verifier hears
key events through it. No socket is opened: messages are handed to the follower as the queue
would hand them."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from structlog.testing import capture_logs

from shared.bus.envelope import Envelope
from shared.bus.events import KeyRevoked, KeyRotated, TokenRevoked
from shared.subscriber import InvalidToken, RevocationFollower, Subscriber, SubscriberConfig

CONFIG = SubscriberConfig(
    revocations_url="http://127.0.0.1:9/internal/revocations",
    jwks_url_template="http://127.0.0.1:9/{tenant}",
    amqp_url="amqp://127.0.0.1:9/",
    name="unit",
)


@dataclass
class Message:
    """What the follower reads of an AMQP delivery."""

    body: bytes


def _revoked(**overrides: Any) -> TokenRevoked:
    token_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "token_id": token_id,
        "jti": token_id,
        "display_id": None,
        "subject": "alice",
        "kind": "jwt_access",
        "family_id": None,
        "expires_at": now + timedelta(hours=1),
        "revoked_at": now,
        "reason": "logout",
    }
    return TokenRevoked(**{**fields, **overrides})


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def follower(session: aiohttp.ClientSession) -> RevocationFollower:
    follower = RevocationFollower(CONFIG, session)
    follower._bootstrapped = True  # as if the (empty) snapshot had been loaded
    return follower


async def test_a_revocation_event_reaches_listeners_in_the_feeds_revocation_shape(
    follower: RevocationFollower,
) -> None:
    seen: list[dict[str, Any]] = []
    follower.add_listener(seen.append)
    event = _revoked()
    await follower._on_message(Message(event.to_envelope("acme", seq=1).to_json()))
    assert follower.is_revoked(event.token_id) and follower.seq == 1
    assert seen == [{"seq": 1, "tenant": "acme", **event.to_payload()}]
    # The same revocation from the feed (or a revoke reply) is not new: listeners hear it once.
    assert not follower.apply(seen[0])
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("member", "value"),
    [("revoked_at", None), ("kind", "session"), ("display_id", "ABC"), ("token_id", "")],
)
async def test_a_malformed_revocation_event_is_ignored_and_changes_nothing(
    follower: RevocationFollower, member: str, value: Any
) -> None:
    seen: list[dict[str, Any]] = []
    follower.add_listener(seen.append)
    good = _revoked().to_envelope("acme", seq=1)
    envelope = Envelope(
        type=good.type,
        source=good.source,
        tenant="acme",
        seq=1,
        data={**good.data, member: value},
    )
    with capture_logs() as logs:
        await follower._on_message(Message(envelope.to_json()))
    assert not follower.is_revoked(good.data["token_id"]) and follower.size == 0
    assert follower.seq == 0 and seen == []
    [warning] = [entry for entry in logs if entry["log_level"] == "warning"]
    assert warning["event"] == "unparseable event ignored"
    assert warning["reason"].startswith(f"token.revoked.v1: {member} ")


async def test_key_events_reach_key_listeners_typed_and_a_failing_one_stops_nothing(
    follower: RevocationFollower,
) -> None:
    heard: list[tuple[str, KeyRevoked | KeyRotated]] = []

    def broken(tenant: str, event: KeyRevoked | KeyRotated) -> None:
        raise RuntimeError("listener bug")

    follower.add_key_listener(broken)
    follower.add_key_listener(lambda tenant, event: heard.append((tenant, event)))
    rotated = KeyRotated(
        kid="acme-2", alg="RS256", previous_kid="acme-1", activates_at=datetime.now(UTC)
    )
    for event in (KeyRevoked(kid="acme-1"), rotated):
        await follower._on_message(Message(event.to_envelope("acme").to_json()))
    assert heard == [("acme", KeyRevoked(kid="acme-1")), ("acme", rotated)]
    assert follower.size == 0 and follower.seq == 0


async def test_the_subscribers_verifier_refuses_a_revoked_keys_tokens_at_once(
    session: aiohttp.ClientSession,
) -> None:
    sub = Subscriber(CONFIG, session)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"jti": str(uuid.uuid4()), "tapis/tenant_id": "acme", "exp": int(time.time()) + 60}
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "acme-1"})
    revoked = KeyRevoked(kid="acme-1").to_envelope("acme")
    await sub._on_message(Message(revoked.to_json()))
    # Refused for its key, before any JWKS is asked for (there is no keys service here).
    with pytest.raises(InvalidToken) as refused:
        await sub.verify_jwt(token)
    assert refused.value.reason == "key_revoked"
