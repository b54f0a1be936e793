"""Which token records the gateway counts as revoked."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from services.gateway.auth import Authenticator, record_expired
from services.gateway.backends import Backends
from services.gateway.ratelimit import Limits, RateLimiter
from services.gateway.settings import Settings
from shared.pki import init_pki
from shared.subscriber import Subscriber, SubscriberConfig

NOWHERE = "https://127.0.0.1:9"


@pytest.fixture
async def auth(tmp_path: Path) -> AsyncIterator[Authenticator]:
    # No socket is opened: nothing here starts the subscriber or calls a service.
    init_pki(tmp_path)
    async with aiohttp.ClientSession() as session:
        env = {
            "TESSERA_AMQP_URL": "amqp://127.0.0.1:9/",
            "TESSERA_ISSUER_URL": NOWHERE,
            "TESSERA_TLS_DIR": str(tmp_path),
        }
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
        yield Authenticator(Backends(session, Settings.from_env(env)), subscriber, 5.0, limits)


def _record(**fields: object) -> dict[str, object]:
    return {"id": str(uuid.uuid4()), "display_id": None, "name": "n", **fields}


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
            "token_id": listed["id"],
            "jti": None,
            "display_id": None,
            "expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            "revoked_at": datetime.now(UTC).isoformat(),
        }
    )
    assert auth.record_revoked(listed)
    assert auth.record_revoked({**listed, "revoked_at": None})
    assert not auth.record_revoked(_record())


def test_a_record_is_expired_once_its_expiry_has_passed() -> None:
    now = datetime.now(UTC)
    assert record_expired(_record(expires_at=(now - timedelta(seconds=1)).isoformat()))
    assert not record_expired(_record(expires_at=(now + timedelta(minutes=1)).isoformat()))
    assert not record_expired(_record(expires_at=None))  # never expires
