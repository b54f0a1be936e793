"""The subscriber library following a real revocation service over RabbitMQ and the feed."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiohttp
import pytest

from services.revocation.pruning import prune_expired
from shared.bus.amqp import declare_topology
from shared.bus.envelope import Envelope
from shared.db import create_pool
from shared.settings import AmqpNames, service_database_url
from shared.subscriber import Subscriber, SubscriberConfig
from shared.subscriber.revset import RevocationSet
from tests.factories import revoke_jwt_body
from tests.integration.bus_support import ends_within
from tests.integration.revocation_support import (
    RevocationService,
    private_env,
    revoke,
    start_revocation,
)
from tests.proxy import TcpProxy
from tests.tls import allowed_session
from tests.waiting import parked, wait_for

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


def config_for(
    service: RevocationService, names: AmqpNames | None = None, **overrides: Any
) -> SubscriberConfig:
    return SubscriberConfig(
        revocations_url=service.revocations_url,
        jwks_url_template="https://127.0.0.1:9/internal/tenants/{tenant}/jwks",
        amqp_url=service.env["TESSERA_AMQP_URL"],
        amqp_names=names or service.names,
        name="test",
        **overrides,
    )


async def revoke_many(
    session: aiohttp.ClientSession, service: RevocationService, count: int
) -> list[str]:
    """Revoke ``count`` new JWTs, ten at a time; every call must succeed. Returns the jtis."""
    bodies = [revoke_jwt_body() for _ in range(count)]
    gate = asyncio.Semaphore(10)

    async def one(body: dict[str, Any]) -> None:
        async with gate:
            status, reply = await revoke(session, service, body)
            assert status == 200, reply

    await asyncio.gather(*(one(b) for b in bodies))
    return [b["jwt"]["jti"] for b in bodies]


async def test_live_revocation_reaches_the_subscriber_once(
    service: RevocationService, session: aiohttp.ClientSession
) -> None:
    sub = Subscriber(config_for(service), session)
    seen: list[dict[str, Any]] = []
    sub.add_listener(seen.append)
    await sub.start()
    try:
        body = revoke_jwt_body()
        jti = body["jwt"]["jti"]
        assert not sub.is_revoked(jti)
        await revoke(session, service, body)
        await wait_for(lambda: sub.is_revoked(jti), timeout=5)
        await revoke(session, service, body)  # revoking again publishes nothing new
        await revoke_many(session, service, 3)
        await wait_for(lambda: sub.seq == 4, timeout=5)
        assert [r["token_id"] for r in seen].count(jti) == 1
        assert sub.lag_seconds == 0.0
    finally:
        await sub.close()


async def test_subscriber_closes_when_woken_at_the_moment_it_is_closed(
    service: RevocationService, session: aiohttp.ClientSession
) -> None:
    # A wake-up (here: the broker coming back) landing together with close()'s cancel once
    # left the follow loop running (asyncio.wait_for on 3.11 swallowed the cancel).
    sub = Subscriber(config_for(service, poll_interval=30), session)
    await sub.start()
    await wait_for(lambda: parked(sub._follow), what="the follow loop idle, waiting to be woken")
    sub._on_broker_back()
    assert await ends_within(sub.close(), 5), "the subscriber kept following after close()"


async def test_subscriber_stopped_during_500_revocations_knows_them_within_5s_of_restart(
    service: RevocationService, session: aiohttp.ClientSession
) -> None:
    sub = Subscriber(config_for(service), session)
    await sub.start()
    first = await revoke_many(session, service, 5)
    await wait_for(lambda: sub.seq == 5)
    await sub.close()

    missed = await revoke_many(session, service, 500)
    assert not any(sub.is_revoked(jti) for jti in missed)

    started = time.monotonic()
    await sub.start()  # the same subscriber, restarted: catches up from the feed
    fresh = Subscriber(config_for(service), session)
    await fresh.start()  # a new one (a restarted process): bootstraps from the snapshot
    try:
        await wait_for(
            lambda: all(s.is_revoked(j) for s in (sub, fresh) for j in missed + first), timeout=5
        )
        assert time.monotonic() - started < 5
        assert sub.seq == fresh.seq == 505
    finally:
        await sub.close()
        await fresh.close()


async def _capture(names: AmqpNames, amqp_url: str, into: list[Envelope]) -> aio_pika.Connection:
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    exchange = await declare_topology(channel, names)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, "token.revoked.v1")

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        into.append(Envelope.from_json(message.body))

    await queue.consume(on_message, no_ack=True)
    return connection  # type: ignore[return-value]


async def test_duplicate_and_out_of_order_deliveries_are_applied_once(
    service: RevocationService, session: aiohttp.ClientSession
) -> None:
    # The subscriber listens on an exchange of its own: it hears only what the test publishes
    # there, while its feed is the real service's.
    own = AmqpNames(
        exchange=f"{service.names.exchange}.replay",
        dead_letter_exchange=f"{service.names.dead_letter_exchange}.replay",
        queue_prefix=f"{service.names.queue_prefix}replay.",
    )
    captured: list[Envelope] = []
    observer = await _capture(service.names, service.env["TESSERA_AMQP_URL"], captured)
    sub = Subscriber(config_for(service, own, poll_interval=60.0, gap_wait=0.3), session)
    applied: list[str] = []
    sub.add_listener(lambda r: applied.append(r["token_id"]))
    await sub.start()
    publisher = await aio_pika.connect(service.env["TESSERA_AMQP_URL"])
    try:
        jtis = await revoke_many(session, service, 20)
        await wait_for(lambda: len(captured) == 20)
        by_seq = sorted(captured, key=lambda e: e.seq or 0)
        channel = await publisher.channel()
        exchange = await declare_topology(channel, own)

        async def publish(envelope: Envelope) -> None:
            await exchange.publish(
                aio_pika.Message(envelope.to_json(), message_id=str(envelope.id)),
                routing_key=envelope.routing_key,
            )

        # The last one first: applied at once, although seqs 1..19 are still missing.
        await publish(by_seq[-1])
        await wait_for(lambda: sub.is_revoked(by_seq[-1].data["token_id"]))
        shuffled = by_seq * 3
        random.Random(7).shuffle(shuffled)
        for envelope in shuffled:
            await publish(envelope)
        await wait_for(lambda: sub.seq == 20 and all(sub.is_revoked(j) for j in jtis))
        # Every duplicate has arrived once an event published after them is applied (one
        # channel, one queue: delivered in order; the subscriber applies each as it comes).
        (last,) = await revoke_many(session, service, 1)
        await wait_for(lambda: len(captured) == 21)
        await publish(max(captured, key=lambda e: e.seq or 0))
        await wait_for(lambda: sub.seq == 21, what="the last event applied")
        assert sorted(Counter(applied).values()) == [1] * 21
        assert sorted(applied) == sorted([*jtis, last])
    finally:
        await publisher.close()
        await observer.close()
        await sub.close()


async def test_gap_is_filled_from_the_feed(
    service: RevocationService, session: aiohttp.ClientSession
) -> None:
    own = AmqpNames(
        exchange=f"{service.names.exchange}.gap",
        dead_letter_exchange=f"{service.names.dead_letter_exchange}.gap",
        queue_prefix=f"{service.names.queue_prefix}gap.",
    )
    captured: list[Envelope] = []
    observer = await _capture(service.names, service.env["TESSERA_AMQP_URL"], captured)
    sub = Subscriber(config_for(service, own, poll_interval=60.0), session)
    await sub.start()
    publisher = await aio_pika.connect(service.env["TESSERA_AMQP_URL"])
    try:
        jtis = await revoke_many(session, service, 10)
        await wait_for(lambda: len(captured) == 10)
        last = max(captured, key=lambda e: e.seq or 0)
        channel = await publisher.channel()
        exchange = await declare_topology(channel, own)
        # Only seq 10 is delivered: the subscriber must fetch 1..9 from the feed itself.
        await exchange.publish(aio_pika.Message(last.to_json()), routing_key=last.routing_key)
        await wait_for(lambda: sub.seq == 10 and all(sub.is_revoked(j) for j in jtis))
    finally:
        await publisher.close()
        await observer.close()
        await sub.close()


@pytest.fixture
async def proxied_service(tessera_env: dict[str, str]) -> AsyncIterator[tuple[Any, TcpProxy]]:
    """A revocation service whose broker connections, and its subscribers', go through a TCP
    proxy: cutting the proxy is the broker going away for them, and only for them (the
    machine's RabbitMQ is shared, and never stopped by a test)."""
    proxy = TcpProxy.for_url(tessera_env["TESSERA_AMQP_URL"], 5672)
    await proxy.start()
    env = private_env(tessera_env)
    env["TESSERA_AMQP_URL"] = proxy.url(tessera_env["TESSERA_AMQP_URL"])
    running = await start_revocation(env)
    yield running, proxy
    await running.close()
    await proxy.cut()


@pytest.mark.fault
async def test_revocations_during_a_broker_outage_succeed_and_reach_the_subscriber(
    proxied_service: tuple[RevocationService, TcpProxy], session: aiohttp.ClientSession
) -> None:
    service, proxy = proxied_service
    # Feed polling is slowed right down, so the events have to come over the broker (or the
    # catch-up the subscriber runs when its connection comes back).
    sub = Subscriber(config_for(service, poll_interval=120.0), session)
    await sub.start()
    try:
        await revoke_many(session, service, 1)
        await wait_for(lambda: sub.seq == 1)
        await proxy.cut()
        try:
            jtis = await revoke_many(session, service, 500)  # the outbox holds their events
            await wait_for(lambda: sub.lag_seconds > 0)
        finally:
            await proxy.start()
        await wait_for(lambda: all(sub.is_revoked(j) for j in jtis), timeout=60)
        assert sub.seq == 501
    finally:
        await sub.close()


async def test_subscriber_far_behind_a_pruned_feed_rebootstraps_and_ends_current(
    service: RevocationService, session: aiohttp.ClientSession
) -> None:
    sub = Subscriber(config_for(service, rebootstrap_after=5, poll_interval=60.0), session)
    await sub.start()
    await sub.close()
    live: list[str] = []
    for n in range(20):
        body = revoke_jwt_body(expires_in=-600 if n % 2 else 3600)
        await revoke(session, service, body)
        if n % 2 == 0:
            live.append(body["jwt"]["jti"])
    async with create_pool(
        service_database_url(service.env, "revocation"), min_size=1, max_size=2
    ) as pool:
        assert await prune_expired(pool, datetime.now(UTC), grace=60) == 10
    bootstraps: list[float] = []
    sub._revoked = RevocationSet()  # forget everything: only a re-bootstrap can restore it
    original = sub._bootstrap

    async def counted() -> None:
        bootstraps.append(time.monotonic())
        await original()

    sub._bootstrap = counted  # type: ignore[method-assign]
    await sub.start()
    try:
        assert len(bootstraps) == 1
        assert sub.seq == 20
        assert all(sub.is_revoked(jti) for jti in live)
    finally:
        await sub.close()


async def test_subscriber_starts_over_when_the_service_sequence_goes_back(
    tessera_env: dict[str, str], session: aiohttp.ClientSession
) -> None:
    first = await start_revocation(private_env(tessera_env))
    port = first.running.server.port
    sub = Subscriber(config_for(first, poll_interval=0.2), session)
    await sub.start()
    try:
        old = await revoke_many(session, first, 5)
        await wait_for(lambda: sub.seq == 5)
        await first.close()
        # The same address, an empty database: as after restoring an old backup.
        fresh_db = service_database_url(private_env(tessera_env), "revocation")
        second = await start_revocation(
            {**first.env, "TESSERA_REVOCATION_DATABASE_URL": fresh_db}, port=port
        )
        try:
            new = await revoke_many(session, second, 2)
            await wait_for(lambda: sub.seq == 2 and all(sub.is_revoked(j) for j in new))
            assert all(sub.is_revoked(j) for j in old)
        finally:
            await second.close()
    finally:
        await sub.close()
