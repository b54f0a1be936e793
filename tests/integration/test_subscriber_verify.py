"""Local JWT verification by the subscriber: JWKS caching, refetch limits, revoked tokens and keys.

The JWKS comes from a small HTTP server in the test serving the keys service's route shape (so
each fetch can be counted); the revocation service and RabbitMQ are real.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from shared.bus.amqp import declare_topology
from shared.bus.envelope import Envelope
from shared.settings import AmqpNames
from shared.subscriber import InvalidToken, Subscriber, SubscriberConfig, VerifierUnavailable
from tests.integration.revocation_support import (
    RevocationService,
    jwt_body,
    private_env,
    revoke,
    start_revocation,
)

pytestmark = pytest.mark.integration


@dataclass
class KeyServer:
    """Serves ``/internal/tenants/{tenant}/jwks`` from ``keys`` and counts each request."""

    keys: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    max_age: int = 300
    hits: Counter[str] = field(default_factory=Counter)
    server: TestServer | None = None

    async def start(self) -> None:
        async def jwks(request: web.Request) -> web.Response:
            self.hits[request.path] += 1
            tenant = request.match_info["tenant"]
            if tenant not in self.keys:
                return web.json_response({"error": "unknown_tenant"}, status=404)
            return web.json_response(
                {"keys": self.keys[tenant]},
                headers={"Cache-Control": f"public, max-age={self.max_age}"},
            )

        app = web.Application()
        app.router.add_get("/internal/tenants/{tenant}/jwks", jwks)
        self.server = TestServer(app)
        await self.server.start_server()

    @property
    def template(self) -> str:
        assert self.server is not None
        return (
            str(self.server.make_url("/internal/tenants/{tenant}/jwks"))
            .replace("%7B", "{")
            .replace("%7D", "}")
        )


def new_key(kid: str) -> tuple[rsa.RSAPrivateKey, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid=kid, alg="RS256", use="sig")
    return key, jwk


def sign(key: rsa.RSAPrivateKey, kid: str, tenant: str = "acme", **claims: Any) -> str:
    body = {
        "jti": str(uuid.uuid4()),
        "sub": f"alice@{tenant}",
        "tapis/tenant_id": tenant,
        "exp": int(time.time()) + 600,
        **claims,
    }
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
async def service(tessera_env: dict[str, str]) -> AsyncIterator[RevocationService]:
    running = await start_revocation(private_env(tessera_env))
    yield running
    await running.close()


@pytest.fixture
async def keys() -> AsyncIterator[KeyServer]:
    server = KeyServer()
    await server.start()
    yield server
    assert server.server is not None
    await server.server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def _names(service: RevocationService) -> AmqpNames:
    # The subscriber's own exchange: key.revoked events the test sends reach only it.
    return AmqpNames(
        exchange=f"{service.names.exchange}.verify",
        dead_letter_exchange=f"{service.names.dead_letter_exchange}.verify",
        queue_prefix=f"{service.names.queue_prefix}verify.",
    )


@pytest.fixture
async def subscriber(
    service: RevocationService, keys: KeyServer, session: aiohttp.ClientSession
) -> AsyncIterator[Subscriber]:
    sub = Subscriber(
        SubscriberConfig(
            revocations_url=service.revocations_url,
            jwks_url_template=keys.template,
            amqp_url=service.env["TESSERA_AMQP_URL"],
            amqp_names=_names(service),
            name="verify",
            jwks_refetch_interval=0.5,
        ),
        session,
    )
    await sub.start()
    yield sub
    await sub.close()


async def test_valid_token_verifies_and_is_refused_once_revoked(
    service: RevocationService,
    keys: KeyServer,
    subscriber: Subscriber,
    session: aiohttp.ClientSession,
) -> None:
    key, jwk = new_key("k1")
    keys.keys["acme"] = [jwk]
    token = sign(key, "k1")
    claims = await subscriber.verify_jwt(token)
    assert claims["sub"] == "alice@acme"

    # The subscriber follows its own exchange here, so it learns this one from the feed poll
    # or from apply(); the gateway applies its own revoke replies the same way.
    status, reply = await revoke(session, service, jwt_body(jti=claims["jti"]))
    assert status == 200
    subscriber.apply(reply["revocations"][0])
    with pytest.raises(InvalidToken) as refused:
        await subscriber.verify_jwt(token)
    assert refused.value.reason == "revoked"


async def test_jwks_is_fetched_once_per_max_age(keys: KeyServer, subscriber: Subscriber) -> None:
    key, jwk = new_key("k1")
    keys.keys["acme"] = [jwk]
    for _ in range(20):
        await subscriber.verify_jwt(sign(key, "k1"))
    assert keys.hits["/internal/tenants/acme/jwks"] == 1


async def test_unknown_kids_refetch_at_most_once_per_interval(
    keys: KeyServer, subscriber: Subscriber
) -> None:
    key, jwk = new_key("k1")
    keys.keys["acme"] = [jwk]
    await subscriber.verify_jwt(sign(key, "k1"))
    for n in range(30):
        with pytest.raises(InvalidToken) as refused:
            await subscriber.verify_jwt(sign(key, f"forged-{n}"))
        assert refused.value.reason == "unknown_kid"
    assert keys.hits["/internal/tenants/acme/jwks"] <= 2

    # A key published after the cache was filled is picked up on the next allowed refetch.
    new, new_jwk = new_key("k2")
    keys.keys["acme"] = [jwk, new_jwk]
    token = sign(new, "k2")
    deadline = time.monotonic() + 5
    while True:
        try:
            await subscriber.verify_jwt(token)
            break
        except InvalidToken:
            assert time.monotonic() < deadline, "new key never picked up"
            await _pause()


async def _pause() -> None:
    """One step of a poll with a deadline."""
    await asyncio.sleep(0.1)


async def test_revoked_key_refuses_its_tokens_at_once(
    service: RevocationService, keys: KeyServer, subscriber: Subscriber
) -> None:
    key, jwk = new_key("k-doomed")
    other, other_jwk = new_key("k-fine")
    keys.keys["acme"] = [jwk, other_jwk]
    token = sign(key, "k-doomed")
    await subscriber.verify_jwt(token)

    connection = await aio_pika.connect(service.env["TESSERA_AMQP_URL"])
    try:
        channel = await connection.channel()
        exchange = await declare_topology(channel, _names(service))
        event = Envelope(type="key.revoked", source="keys", tenant="acme", data={"kid": "k-doomed"})
        await exchange.publish(aio_pika.Message(event.to_json()), routing_key=event.routing_key)
    finally:
        await connection.close()

    async def refused() -> bool:
        try:
            await subscriber.verify_jwt(token)
        except InvalidToken as exc:
            return exc.reason == "unknown_kid"
        return False

    deadline = time.monotonic() + 5
    while not await refused():
        assert time.monotonic() < deadline, "revoked key still verifies"
        await _pause()
    # Still listed by the (stale) JWKS, but never trusted again; other keys keep working.
    await subscriber.verify_jwt(sign(other, "k-fine"))


async def test_tenant_and_kid_never_reach_the_url(keys: KeyServer, subscriber: Subscriber) -> None:
    key, jwk = new_key("k1")
    keys.keys["acme"] = [jwk]
    for tenant in ("../acme", "acme/../../x", "ACME", "a" * 100):
        with pytest.raises(InvalidToken) as refused:
            await subscriber.verify_jwt(sign(key, "k1", tenant=tenant))
        assert refused.value.reason == "unknown_tenant"
    with pytest.raises(InvalidToken):
        await subscriber.verify_jwt(sign(key, "../../jwks?x=", tenant="acme"))
    assert set(keys.hits) <= {"/internal/tenants/acme/jwks"}


async def test_unknown_tenant_is_refused(keys: KeyServer, subscriber: Subscriber) -> None:
    key, _ = new_key("k1")
    with pytest.raises(InvalidToken) as refused:
        await subscriber.verify_jwt(sign(key, "k1", tenant="nobody"))
    assert refused.value.reason == "unknown_tenant"


async def test_unreachable_jwks_without_a_cache_is_unavailable_not_invalid(
    service: RevocationService, session: aiohttp.ClientSession
) -> None:
    sub = Subscriber(
        SubscriberConfig(
            revocations_url=service.revocations_url,
            jwks_url_template="http://127.0.0.1:9/internal/tenants/{tenant}/jwks",
            amqp_url=service.env["TESSERA_AMQP_URL"],
            amqp_names=_names(service),
            name="verify-down",
        ),
        session,
    )
    await sub.start()
    try:
        key, _ = new_key("k1")
        with pytest.raises(VerifierUnavailable):
            await sub.verify_jwt(sign(key, "k1"))
    finally:
        await sub.close()
