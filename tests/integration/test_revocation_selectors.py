"""Selectors resolved through the issuer, and the key.revoked consumer.

The issuer here is a small HTTP server speaking the issuer's two lookup routes of
docs/internal-api.md over its own token records, so each selector's resolution can be checked
exactly; PostgreSQL and RabbitMQ are real.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import aiohttp
import pytest

from shared.bus.amqp import declare_topology
from shared.bus.envelope import Envelope
from shared.tokens import new_databricks_token, new_opaque_token
from tests.integration.revocation_support import (
    Issuer,
    RevocationService,
    private_env,
    revoke,
    start_issuer,
    start_revocation,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def issuer() -> AsyncIterator[tuple[Issuer, str]]:
    fake, server = await start_issuer()
    yield fake, str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
async def service(
    tessera_env: dict[str, str], issuer: tuple[Issuer, str]
) -> AsyncIterator[RevocationService]:
    running = await start_revocation(private_env(tessera_env, TESSERA_ISSUER_URL=issuer[1]))
    yield running
    await running.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def _feed(session: aiohttp.ClientSession, service: RevocationService) -> dict[str, Any]:
    async with session.get(service.revocations_url) as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def test_token_id_display_id_and_value_resolve_to_the_token(
    issuer: tuple[Issuer, str], service: RevocationService, session: aiohttp.ClientSession
) -> None:
    fake, _ = issuer
    opaque = fake.add("acme", "alice")
    databricks = fake.add("acme", "alice", kind="databricks")
    value = new_opaque_token()
    by_value = fake.add("acme", "bob")
    fake.values[value] = by_value["id"]

    status, reply = await revoke(session, service, {"tenant": "acme", "token_id": opaque["id"]})
    assert status == 200 and reply["revocations"][0]["jti"] is None
    status, reply = await revoke(
        session, service, {"tenant": "acme", "display_id": databricks["display_id"]}
    )
    assert status == 200
    assert reply["revocations"][0]["token_id"] == databricks["id"]
    assert reply["revocations"][0]["display_id"] == databricks["display_id"]
    status, reply = await revoke(session, service, {"tenant": "acme", "token": value})
    assert status == 200 and reply["revocations"][0]["token_id"] == by_value["id"]
    assert [r["seq"] for r in (await _feed(session, service))["revocations"]] == [1, 2, 3]
    assert {"tenant": "acme", "value": value} in fake.calls


@pytest.mark.parametrize(
    "selector",
    [
        {"token_id": str(uuid.uuid4())},
        {"display_id": "c" * 64},
        {"token": new_databricks_token()},
        {"family_id": str(uuid.uuid4())},
    ],
)
async def test_unknown_token_is_404_and_revokes_nothing(
    service: RevocationService, session: aiohttp.ClientSession, selector: dict[str, str]
) -> None:
    status, reply = await revoke(session, service, {"tenant": "acme", **selector})
    assert status == 404 and reply["error"] == "unknown_token"
    assert (await _feed(session, service))["current_seq"] == 0


async def test_another_tenants_token_is_404_and_revokes_nothing(
    issuer: tuple[Issuer, str], service: RevocationService, session: aiohttp.ClientSession
) -> None:
    fake, _ = issuer
    theirs = fake.add("beta", "mallory")
    status, reply = await revoke(session, service, {"tenant": "acme", "token_id": theirs["id"]})
    assert status == 404 and reply["error"] == "unknown_token"
    assert (await _feed(session, service))["current_seq"] == 0


async def test_owner_limits_what_a_caller_may_revoke(
    issuer: tuple[Issuer, str], service: RevocationService, session: aiohttp.ClientSession
) -> None:
    fake, _ = issuer
    bobs = fake.add("acme", "bob")
    status, reply = await revoke(
        session, service, {"tenant": "acme", "token_id": bobs["id"], "owner": "alice"}
    )
    assert status == 404 and reply["error"] == "unknown_token"
    status, _ = await revoke(
        session, service, {"tenant": "acme", "token_id": bobs["id"], "owner": "bob"}
    )
    assert status == 200


async def test_subject_and_family_revoke_every_matching_token_once(
    issuer: tuple[Issuer, str], service: RevocationService, session: aiohttp.ClientSession
) -> None:
    fake, _ = issuer
    family = str(uuid.uuid4())
    alices = [fake.add("acme", "alice", kind="jwt_access", family_id=family) for _ in range(3)]
    fake.add("acme", "carol")
    fake.add("beta", "alice")
    status, reply = await revoke(session, service, {"tenant": "acme", "family_id": family})
    assert status == 200 and reply["created"] == 3
    assert {r["jti"] for r in reply["revocations"]} == {r["id"] for r in alices}
    extra = fake.add("acme", "alice")
    status, reply = await revoke(session, service, {"tenant": "acme", "subject": "alice"})
    assert status == 200 and reply["created"] == 1
    assert {r["token_id"] for r in reply["revocations"]} == {r["id"] for r in [*alices, extra]}
    status, reply = await revoke(session, service, {"tenant": "acme", "subject": "nobody"})
    assert status == 200 and reply == {"revocations": [], "created": 0}
    assert (await _feed(session, service))["current_seq"] == 4


async def test_revoked_key_revokes_every_token_it_signed(
    issuer: tuple[Issuer, str], service: RevocationService, session: aiohttp.ClientSession
) -> None:
    fake, _ = issuer
    signed = [fake.add("acme", f"user{n}", kind="jwt_access", kid="k-bad") for n in range(4)]
    fake.add("acme", "user9", kind="jwt_access", kid="k-good")
    await service.wait_consuming("revocation.on_key_revoked")
    connection = await aio_pika.connect(service.env["TESSERA_AMQP_URL"])
    try:
        channel = await connection.channel()
        exchange = await declare_topology(channel, service.names)
        event = Envelope(type="key.revoked", source="keys", tenant="acme", data={"kid": "k-bad"})
        message = aio_pika.Message(event.to_json(), message_id=str(event.id))
        # Delivered twice: the consumer applies it once.
        await exchange.publish(message, routing_key=event.routing_key)
        await exchange.publish(message, routing_key=event.routing_key)
    finally:
        await connection.close()
    feed: dict[str, Any] = {}

    async def poll() -> None:
        nonlocal feed
        feed = await _feed(session, service)

    await wait_for_async(poll, lambda: feed.get("current_seq") == 4)
    assert {r["token_id"] for r in feed["revocations"]} == {r["id"] for r in signed}
    assert all(r["reason"] == "key_revoked" for r in feed["revocations"])


async def wait_for_async(
    step: Callable[[], Awaitable[None]], done: Callable[[], bool], timeout: float = 10.0
) -> None:
    """Run ``step`` until ``done()`` holds, failing after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            await step()
            if done():
                return
            await asyncio.sleep(0.05)


async def test_revoking_a_family_again_returns_its_revocations(
    issuer: tuple[Issuer, str], service: RevocationService, session: aiohttp.ClientSession
) -> None:
    fake, _ = issuer
    family = str(uuid.uuid4())
    members = [fake.add("acme", "alice", kind="jwt_refresh", family_id=family) for _ in range(2)]
    status, first = await revoke(session, service, {"tenant": "acme", "family_id": family})
    assert status == 200 and first["created"] == 2
    # The issuer has applied the revocations: nothing of the family is active any more.
    fake.records = [r for r in fake.records if r not in members]
    status, again = await revoke(session, service, {"tenant": "acme", "family_id": family})
    assert status == 200 and again == {"revocations": first["revocations"], "created": 0}
    status, _ = await revoke(
        session, service, {"tenant": "acme", "family_id": family, "owner": "bob"}
    )
    assert status == 404
