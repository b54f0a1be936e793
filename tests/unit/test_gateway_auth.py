"""What a revocation made through this gateway changes here at once, and token expiry."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from services.gateway.auth import Authenticator
from services.gateway.ratelimit import Limits, RateLimiter
from shared.authz import Kind, Principal
from shared.clients.issuer import IssuerClient, TokenRecord
from shared.clients.revocation import RevocationClient, Revoked
from shared.subscriber import Subscriber, SubscriberConfig

NOWHERE = "https://127.0.0.1:9"


class AnsweringRevocation(RevocationClient):
    """A revocation service that answers each revoke with one revocation (no socket)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        super().__init__(session, NOWHERE)
        self.asked: list[dict[str, Any]] = []

    async def revoke(self, tenant: str, **selector: Any) -> Revoked:
        self.asked.append({"tenant": tenant, **selector})
        token_id = selector["token_id"]
        revocation = {
            "seq": len(self.asked),
            "tenant": tenant,
            "token_id": token_id,
            "jti": None,
            "display_id": None,
            "expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            "revoked_at": datetime.now(UTC).isoformat(),
        }
        return Revoked([revocation], 1)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def subscriber(session: aiohttp.ClientSession) -> Subscriber:
    # No socket is opened: nothing here starts the subscriber or calls a service.
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
    return subscriber


async def test_a_revocation_made_here_is_refused_here_at_once_without_waiting_for_its_event(
    session: aiohttp.ClientSession, subscriber: Subscriber
) -> None:
    revocation = AnsweringRevocation(session)
    limits = Limits(RateLimiter(0, 1), RateLimiter(0, 1))
    auth = Authenticator(IssuerClient(session, NOWHERE), revocation, subscriber, 5.0, limits)
    token_id = str(uuid.uuid4())
    principal = Principal(Kind.USER, "acme", "alice", token_id=token_id)
    assert not auth.revoked(principal)
    await auth.revoke("acme", token_id=token_id, reason="deleted", actor="alice@acme")
    assert revocation.asked == [
        {
            "tenant": "acme",
            "token_id": token_id,
            "jwt": None,
            "reason": "deleted",
            "actor": "alice@acme",
        }
    ]
    assert auth.revoked(principal)


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


def test_a_record_is_expired_once_its_expiry_has_passed() -> None:
    now = datetime.now(UTC)
    assert _record(expires_at=(now - timedelta(seconds=1)).isoformat()).expired()
    assert not _record(expires_at=(now + timedelta(minutes=1)).isoformat()).expired()
    assert not _record(expires_at=None).expired()  # never expires
