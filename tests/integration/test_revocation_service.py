"""The revocation service's internal API against real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aio_pika
import aiohttp
import asyncpg
import pytest

from services.revocation.pruning import prune_expired
from shared.bus.amqp import declare_topology
from shared.bus.envelope import Envelope
from shared.db import create_pool
from shared.settings import service_database_url
from shared.tokens import new_opaque_token
from tests.factories import revoke_jwt_body
from tests.integration.revocation_support import (
    RevocationService,
    private_env,
    revoke,
    start_revocation,
)
from tests.tls import allowed_session
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def service(tessera_env: dict[str, str]) -> AsyncIterator[RevocationService]:
    running = await start_revocation(private_env(tessera_env))
    yield running
    await running.close()


@pytest.fixture
async def session(tessera_env: dict[str, str]) -> AsyncIterator[aiohttp.ClientSession]:
    async with allowed_session(tessera_env) as client:
        yield client


async def _get(session: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with session.get(url, params=params) as resp:
        return resp.status, await resp.json()


async def test_revoking_a_verified_jwt_twice_is_one_revocation(
    service: RevocationService, session: aiohttp.ClientSession
) -> None:
    body = revoke_jwt_body(reason="logout")
    status, first = await revoke(session, service, body)
    assert status == 200, first
    assert first["created"] == 1
    revocation = first["revocations"][0]
    jti = body["jwt"]["jti"]
    assert revocation["seq"] == 1
    assert revocation["token_id"] == jti and revocation["jti"] == jti
    assert revocation["tenant"] == "acme" and revocation["subject"] == "alice"
    assert revocation["reason"] == "logout"

    status, again = await revoke(session, service, body)
    assert status == 200
    assert again["created"] == 0
    assert again["revocations"] == first["revocations"]
    _, feed = await _get(session, service.revocations_url)
    assert [r["seq"] for r in feed["revocations"]] == [1]


async def test_revocation_is_published_with_its_seq_and_identifiers_but_no_secret(
    service: RevocationService, session: aiohttp.ClientSession
) -> None:
    connection = await aio_pika.connect(service.env["TESSERA_AMQP_URL"])
    received: list[Envelope] = []
    try:
        channel = await connection.channel()
        exchange = await declare_topology(channel, service.names)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "token.revoked.v1")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            received.append(Envelope.from_json(message.body))
            await message.ack()

        await queue.consume(on_message)
        body = revoke_jwt_body(tenant="beta")
        status, reply = await revoke(session, service, body)
        assert status == 200
        await wait_for(lambda: len(received) == 1)
    finally:
        await connection.close()
    event = received[0]
    assert event.type == "token.revoked" and event.version == 1
    assert event.tenant == "beta"
    assert event.seq == reply["revocations"][0]["seq"]
    expected = dict(reply["revocations"][0])
    del expected["seq"], expected["tenant"]
    assert event.data == expected
    assert event.data["expires_at"] is not None


@pytest.mark.parametrize(
    "body",
    [
        {"tenant": "acme"},
        {"tenant": "acme", "token_id": "x", "subject": "alice"},
        {"tenant": "Bad Tenant!", "jwt": {"jti": "j"}},
        {"tenant": "acme", "token": "tsr_notatoken"},
        {"tenant": "acme", "token": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."},
        {"tenant": "acme", "display_id": "not-hex"},
        {"tenant": "acme", "jwt": "not-an-object"},
        {"tenant": "acme", "jwt": {"jti": "j", "expires_at": "yesterday"}},
        {"tenant": "acme", "jwt": {"jti": 7}},
        {"tenant": "acme", "jwt": {"jti": "j", "subject": "bob"}, "owner": "alice"},
    ],
)
async def test_bad_revoke_request_is_a_clear_4xx_and_revokes_nothing(
    service: RevocationService,
    session: aiohttp.ClientSession,
    body: dict,  # type: ignore[type-arg]
) -> None:
    status, reply = await revoke(session, service, body)
    assert 400 <= status < 500, reply
    assert set(reply) >= {"error", "message"}
    _, feed = await _get(session, service.revocations_url)
    assert feed["revocations"] == [] and feed["current_seq"] == 0


async def test_non_json_body_is_a_400(
    service: RevocationService, session: aiohttp.ClientSession
) -> None:
    async with session.post(service.revocations_url, data=b"{nope") as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "bad_request"


async def test_issuer_selector_while_issuer_is_down_is_a_503_and_revokes_nothing(
    service: RevocationService, session: aiohttp.ClientSession
) -> None:
    status, reply = await revoke(session, service, {"tenant": "acme", "token": new_opaque_token()})
    assert status == 503, reply
    _, feed = await _get(session, service.revocations_url)
    assert feed["current_seq"] == 0


async def test_concurrent_revocations_get_gapless_unique_seqs(
    service: RevocationService, session: aiohttp.ClientSession
) -> None:
    same = revoke_jwt_body()
    bodies = [revoke_jwt_body() for _ in range(40)] + [same] * 10
    replies = await asyncio.gather(*(revoke(session, service, b) for b in bodies))
    assert all(status == 200 for status, _ in replies)
    assert sum(reply["created"] for _, reply in replies) == 41
    same_seqs = {reply["revocations"][0]["seq"] for _, reply in replies[40:]}
    assert len(same_seqs) == 1
    _, feed = await _get(session, service.revocations_url, limit="1000")
    assert [r["seq"] for r in feed["revocations"]] == list(range(1, 42))
    assert feed["current_seq"] == 41 and feed["next_since"] == 41


async def test_feed_pages_in_seq_order_and_filters_by_tenant(
    service: RevocationService, session: aiohttp.ClientSession
) -> None:
    for i in range(7):
        await revoke(session, service, revoke_jwt_body(tenant="acme" if i % 2 == 0 else "beta"))
    seen: list[int] = []
    since = 0
    while True:
        status, page = await _get(
            session, service.revocations_url, since=str(since), limit="3", tenant="acme"
        )
        assert status == 200
        seen += [r["seq"] for r in page["revocations"]]
        assert all(r["tenant"] == "acme" for r in page["revocations"])
        if page["next_since"] == since or not page["revocations"]:
            break
        since = page["next_since"]
        if since >= page["current_seq"]:
            break
    assert seen == [1, 3, 5, 7]
    status, bad = await _get(session, service.revocations_url, limit="0")
    assert status == 400 and "limit" in bad["message"]


async def test_snapshot_pages_are_consistent_as_of_one_seq_and_skip_expired(
    service: RevocationService, session: aiohttp.ClientSession
) -> None:
    await revoke(session, service, revoke_jwt_body(expires_in=-10))  # already expired
    live = [revoke_jwt_body() for _ in range(5)]
    for body in live:
        await revoke(session, service, body)
    url = f"{service.revocations_url}/snapshot"
    status, first = await _get(session, url, limit="2")
    assert status == 200
    as_of = first["as_of"]
    assert as_of == 6
    # A revocation after the snapshot began is not part of it: it comes from the feed.
    await revoke(session, service, revoke_jwt_body())
    jtis = [r["jti"] for r in first["revocations"]]
    after = first["next_after_seq"]
    while after is not None:
        _, page = await _get(session, url, limit="2", after_seq=str(after), as_of=str(as_of))
        assert page["as_of"] == as_of
        jtis += [r["jti"] for r in page["revocations"]]
        after = page["next_after_seq"]
    assert jtis == [b["jwt"]["jti"] for b in live]
    status, _ = await _get(session, url, as_of="100")
    assert status == 400


async def test_pruning_removes_expired_revocations_and_reports_pruned_through(
    service: RevocationService, session: aiohttp.ClientSession
) -> None:
    await revoke(session, service, revoke_jwt_body(expires_in=-600))
    await revoke(session, service, revoke_jwt_body())
    await revoke(session, service, revoke_jwt_body(expires_in=-600))
    url = service_database_url(service.env, "revocation")
    async with create_pool(url, min_size=1, max_size=2) as pool:
        deleted = await prune_expired(pool, datetime.now(UTC), grace=60)
        again = await prune_expired(pool, datetime.now(UTC), grace=60)
    assert deleted == 2 and again == 0
    _, feed = await _get(session, service.revocations_url)
    assert [r["seq"] for r in feed["revocations"]] == [2]
    assert feed["pruned_through"] == 3 and feed["current_seq"] == 3


async def test_pruning_is_skipped_while_another_replica_holds_the_lock(
    service: RevocationService, session: aiohttp.ClientSession
) -> None:
    await revoke(session, service, revoke_jwt_body(expires_in=-600))
    url = service_database_url(service.env, "revocation")
    holder = await asyncpg.connect(url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock(7345210301)")
            async with create_pool(url, min_size=1, max_size=2) as pool:
                assert await prune_expired(pool, datetime.now(UTC), grace=0) is None
    finally:
        await holder.close()
    _, feed = await _get(session, service.revocations_url)
    assert len(feed["revocations"]) == 1


async def test_owner_must_match_the_jwt_subject(
    service: RevocationService, session: aiohttp.ClientSession
) -> None:
    status, reply = await revoke(session, service, revoke_jwt_body(owner="alice"))
    assert status == 200 and reply["created"] == 1
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    status, reply = await revoke(
        session,
        service,
        {
            "tenant": "acme",
            "jwt": {"jti": str(uuid.uuid4()), "subject": "bob", "expires_at": expires},
            "owner": "alice",
        },
    )
    assert status == 404 and reply["error"] == "unknown_token"
