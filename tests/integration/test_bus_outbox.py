"""The transactional outbox against real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import aio_pika
import aiormq
import asyncpg
import pytest
from pamqp import commands as spec
from structlog.testing import capture_logs

from shared.bus import amqp
from shared.bus.amqp import Broker, declare_topology
from shared.bus.batch_publish import Outgoing, UnsupportedAiormq
from shared.bus.envelope import Envelope
from shared.bus.outbox import OutboxRelay, add_events
from shared.db import create_pool, unit_of_work
from tests.integration.bus_support import bus_database, ends_within, private_names
from tests.proxy import TcpProxy
from tests.waiting import parked, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(tessera_env: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    url = await bus_database(tessera_env, f"outbox_{uuid.uuid4().hex[:8]}")
    async with create_pool(url) as pool:
        yield pool


async def _collect(queue: aio_pika.abc.AbstractQueue, into: list[Envelope]) -> str:
    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        into.append(Envelope.from_json(message.body))
        await message.ack()

    return await queue.consume(on_message)


class CountingRelay(OutboxRelay):
    """A relay that counts its attempts, so a test can wait for one to have happened."""

    attempts = 0

    async def relay_once(self) -> int:
        self.attempts += 1
        return await super().relay_once()


def _event(tenant: str = "t1") -> Envelope:
    return Envelope(type="test.happened", source="issuer", tenant=tenant, data={"n": 1})


async def test_event_committed_during_broker_outage_is_delivered_once_after_it_returns(
    tessera_env: dict[str, str], pool: asyncpg.Pool
) -> None:
    names = private_names(tessera_env)
    amqp_url = tessera_env["TESSERA_AMQP_URL"]
    target = urlsplit(amqp_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5672)
    await proxy.start()

    # An observer with its own direct connection sees what reaches the exchange.
    observer = await aio_pika.connect(amqp_url)
    channel = await observer.channel()
    exchange = await declare_topology(channel, names)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, "test.happened.v1")
    received: list[Envelope] = []
    await _collect(queue, received)

    broker = Broker(proxy.url(amqp_url), names)
    await broker.start()
    await asyncio.wait_for(broker.wait_connected(), 10)
    relay = CountingRelay(pool, broker, service="test", poll_interval=0.2)
    relay.start()
    try:
        await proxy.cut()
        await wait_for(lambda: not broker.connected)

        committed = _event()
        async with unit_of_work(pool) as conn:
            await add_events(conn, [committed])
        rolled_back = _event()
        with contextlib.suppress(RuntimeError):
            async with unit_of_work(pool) as conn:
                await add_events(conn, [rolled_back])
                raise RuntimeError("the state change failed")

        # While the broker is unreachable the event waits in the outbox; nothing is lost.
        tried = relay.attempts
        await wait_for(lambda: relay.attempts >= tried + 2, what="the relay trying twice more")
        async with pool.acquire() as conn:
            pending = await conn.fetch("SELECT event_id FROM outbox")
        assert [r["event_id"] for r in pending] == [committed.id]
        assert received == []

        await proxy.start()
        await wait_for(lambda: len(received) >= 1, timeout=30)

        async def outbox_empty() -> bool:
            async with pool.acquire() as conn:
                return await conn.fetchval("SELECT count(*) FROM outbox") == 0  # type: ignore[no-any-return]

        await wait_for(outbox_empty, what="the outbox emptied")
        # A duplicate is published before its row is deleted, so before this last event (one
        # queue, delivered in order): once the last one is in, every duplicate would be too.
        last = _event()
        async with unit_of_work(pool) as conn:
            await add_events(conn, [last])
        await wait_for(lambda: received[-1].id == last.id, timeout=15, what="the last event")
        assert [e.id for e in received] == [committed.id, last.id]
    finally:
        await relay.stop()
        await broker.close()
        await proxy.cut()
        await observer.close()


async def test_relay_started_after_commit_publishes_with_headers(
    tessera_env: dict[str, str], pool: asyncpg.Pool
) -> None:
    names = private_names(tessera_env)
    observer = await aio_pika.connect(tessera_env["TESSERA_AMQP_URL"])
    channel = await observer.channel()
    exchange = await declare_topology(channel, names)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, "#")
    messages: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        messages.append(message)
        await message.ack()

    await queue.consume(keep)
    # More than one relay batch; occurred a day ago, so their time cannot pass for the insert's.
    yesterday = datetime.now(UTC) - timedelta(days=1)
    events = [replace(_event(), occurred_at=yesterday) for _ in range(300)]
    async with unit_of_work(pool) as conn:
        await add_events(conn, events)

    broker = Broker(tessera_env["TESSERA_AMQP_URL"], names)
    await broker.start()
    relay = OutboxRelay(pool, broker, service="test")
    relay.start()
    try:
        await wait_for(lambda: len(messages) >= len(events))
        assert sorted(m.message_id for m in messages) == sorted(str(e.id) for e in events)
        first = messages[0]
        assert first.content_type == "application/json"
        assert first.type == "test.happened"
        assert first.routing_key == "test.happened.v1"
        # The AMQP timestamp (whole seconds) is when the event occurred.
        occurred = {str(e.id): int(e.occurred_at.timestamp()) for e in events}
        assert all(
            m.timestamp is not None
            and int(m.timestamp.replace(tzinfo=UTC).timestamp()) == occurred[str(m.message_id)]
            for m in messages
        )
    finally:
        await relay.stop()
        await broker.close()
        await observer.close()


@contextlib.asynccontextmanager
async def _observed_broker(
    tessera_env: dict[str, str],
) -> AsyncIterator[tuple[aio_pika.abc.AbstractChannel, aio_pika.abc.AbstractExchange, Broker]]:
    """A connected Broker on private names, and an observer's channel on its exchange."""
    names = private_names(tessera_env)
    observer = await aio_pika.connect(tessera_env["TESSERA_AMQP_URL"])
    broker = Broker(tessera_env["TESSERA_AMQP_URL"], names)
    try:
        channel = await observer.channel()
        exchange = await declare_topology(channel, names)
        await broker.start()
        await asyncio.wait_for(broker.wait_connected(), 10)
        yield channel, exchange, broker
    finally:
        await broker.close()
        await observer.close()


def _outgoing(routing_key: str, body: bytes, n: int) -> Outgoing:
    return Outgoing(
        routing_key,
        body,
        spec.Basic.Properties(
            content_type="application/json",
            message_id=f"m{n}",
            message_type="test.happened",
            headers={"x-request-id": f"r{n}"},
            delivery_mode=2,
        ),
    )


async def test_publish_confirmed_raises_when_the_broker_refuses_a_message(
    tessera_env: dict[str, str],
) -> None:
    async with _observed_broker(tessera_env) as (channel, exchange, broker):
        # A full queue that refuses more: RabbitMQ nacks what is routed to it.
        full = await channel.declare_queue(
            exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
        )
        await full.bind(exchange, "test.full.v1")
        await broker.publish_confirmed([_outgoing("test.full.v1", b"1", 1)])
        refusing = await broker.channel()
        with pytest.raises(aiormq.exceptions.DeliveryError):
            await broker.publish_confirmed(
                [_outgoing("test.other.v1", b"2", 2), _outgoing("test.full.v1", b"3", 3)]
            )
        # The refusing channel was replaced (as during a quorum-queue leader election, when
        # RabbitMQ nacks) and later publishes are confirmed on the new one.
        replacement = await broker.channel()
        assert replacement is not refusing and refusing.is_closed
        await broker.publish_confirmed([_outgoing("test.other.v1", b"4", 4)])
        kept = await full.get(timeout=5)
        assert kept.body == b"1"
        assert await full.get(fail=False) is None


async def test_relay_stops_when_woken_at_the_moment_it_is_cancelled(
    tessera_env: dict[str, str], pool: asyncpg.Pool
) -> None:
    # A commit's wake-up landing together with stop()'s cancel once left the relay running
    # (asyncio.wait_for on 3.11 swallowed the cancel) and its service hung at shutdown.
    async with _observed_broker(tessera_env) as (_, _, broker):
        for _ in range(3):
            relay = OutboxRelay(pool, broker, service="test", poll_interval=30)
            relay.start()
            idle = functools.partial(parked, relay._run)
            await wait_for(idle, what="the relay idle, waiting to be woken")
            relay.wake()
            assert await ends_within(relay.stop(), 5), "the relay kept running after stop()"


async def test_publish_confirmed_raises_a_failure_when_the_channel_closes_under_it(
    tessera_env: dict[str, str],
) -> None:
    async with _observed_broker(tessera_env) as (channel, exchange, broker):
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "test.big.v1")
        underlay = await (await broker.channel()).get_underlay_channel()
        publishing = asyncio.create_task(
            broker.publish_confirmed(
                [_outgoing("test.big.v1", b"x" * 1_000_000, n) for n in range(50)]
            )
        )
        while not underlay.confirmations:
            await asyncio.sleep(0)
        # Closing fails the pending confirms, with CancelledError (aiormq's default) or the
        # connection's error: either way the publish must fail as an Exception, so that the
        # relay retries; a CancelledError would end the relay's task.
        await underlay.connection.close()
        (outcome,) = await asyncio.gather(publishing, return_exceptions=True)
        assert isinstance(outcome, Exception), outcome  # CancelledError is no Exception


async def test_a_broker_whose_aiormq_lacks_what_the_batch_needs_says_so_and_never_connects(
    tessera_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(channel: object) -> None:
        raise UnsupportedAiormq("aiormq 99 cannot publish batches: Channel.lock is missing")

    monkeypatch.setattr(amqp, "check_channel", unsupported)
    broker = Broker(tessera_env["TESSERA_AMQP_URL"], private_names(tessera_env))
    with capture_logs() as logs:
        await broker.start()
        connecting = broker._task
        assert connecting is not None

        async def connecting_ends() -> None:
            await asyncio.wait([connecting])

        # Gives up at once (no retry mends the library) rather than retrying forever.
        assert await ends_within(connecting_ends(), 10)
    assert not broker.connected
    assert [e["error"] for e in logs if e["event"] == "events cannot be published"] == [
        "aiormq 99 cannot publish batches: Channel.lock is missing"
    ]
    assert not any(e["event"] == "broker unreachable, retrying" for e in logs)
    await broker.close()
