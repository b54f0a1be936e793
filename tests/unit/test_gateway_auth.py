"""Which token records the gateway counts as revoked."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from services.gateway.auth import Authenticator
from services.gateway.ratelimit import Limits, RateLimiter
from shared.clients.issuer import IssuerClient, TokenRecord
from shared.clients.revocation import RevocationClient
from shared.subscriber import Subscriber, SubscriberConfig

NOWHERE = "https://127.0.0.1:9"


@pytest.fixture
async def auth() -> AsyncIterator[Authenticator]:
    # No socket is opened: nothing here starts the subscriber or calls a service.
    async with aiohttp.ClientSession() as session:
        subscriber = Subscriber(
            SubscriberConfig(
                revocations_url=f"{NOWHERE}/internal/revocations",
                jwks_url_template=f"{NOWHERE}/{{tenant}}",
                amqp_url="amqp://127.0.0.1:9/",
                name="unit",
            ),
            session,
        )
        subscriber._bootstrapped = True  # as if the (empty) snapshot had been loaded
        limits = Limits(RateLimiter(0, 1), RateLimiter(0, 1))
        issuer = IssuerClient(session, NOWHERE)
        yield Authenticator(issuer, RevocationClient(session, NOWHERE), subscriber, 5.0, limits)


def _record(**fields: object) -> TokenRecord:
    body = {
        "id": str(uuid.uuid4()),
        "tenant": "acme",
        "subject": "alice",
        "kind": "opaque",
        "created_at": datetime.now(UTC).isoformat(),
        **fields,
    }
    return TokenRecord.from_json(body)


async def test_a_record_is_revoked_by_the_issuers_word_or_by_a_revocation_seen_here(
    auth: Authenticator,
) -> None:
    listed = _record()  # list records carry no revoked_at
    assert not auth.record_revoked(listed)
    assert not auth.record_revoked(_record(revoked_at=None))
    assert auth.record_revoked(_record(revoked_at=datetime.now(UTC).isoformat()))
    # Another gateway's revocation, delivered here before the issuer has applied it.
    auth._subscriber.apply(
        {
            "seq": 1,
            "tenant": "acme",
            "token_id": listed.id,
            "jti": None,
            "display_id": None,
            "expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            "revoked_at": datetime.now(UTC).isoformat(),
        }
    )
    assert auth.record_revoked(listed)
    assert auth.record_revoked(replace(listed, revoked_at=None))
    assert not auth.record_revoked(_record())


def test_a_record_is_expired_once_its_expiry_has_passed() -> None:
    now = datetime.now(UTC)
    assert _record(expires_at=(now - timedelta(seconds=1)).isoformat()).expired()
    assert not _record(expires_at=(now + timedelta(minutes=1)).isoformat()).expired()
    assert not _record(expires_at=None).expired()  # never expires
