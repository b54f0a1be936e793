"""TESSERA_AMQP_URL listing several nodes: publishing, consuming and a subscriber's own queue
move to another node when theirs goes away (issue 18).

Two proxies in front of this machine's broker stand for two nodes of one cluster; cutting one
is its node going away. The three-node RabbitMQ cluster itself runs in tests/cluster/.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import pytest
from structlog.testing import capture_logs

from shared.bus.amqp import Broker
from shared.bus.consumer import Consumer
from shared.bus.envelope import Envelope
from shared.bus.outbox import OutboxRelay, add_events
from shared.db import create_pool, unit_of_work
from shared.subscriber.queue import EventQueue
from tests.integration.bus_support import bus_database, private_names
from tests.proxy import TcpProxy
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(tessera_env: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    url = await bus_database(tessera_env, f"failover_{uuid.uuid4().hex[:8]}")
    async with create_pool(url) as pool:
        yield pool


@pytest.fixture
async def nodes(tessera_env: dict[str, str]) -> AsyncIterator[list[TcpProxy]]:
    target = urlsplit(tessera_env["TESSERA_AMQP_URL"])
    proxies = [TcpProxy(target.hostname or "127.0.0.1", target.port or 5672) for _ in range(2)]
    for proxy in proxies:
        await proxy.start()
    yield proxies
    for proxy in proxies:
        await proxy.cut()


def _text(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # aio-pika logs objects whose repr can fail; their URLs are elsewhere
        return str(record.msg) + " ".join(
            str(arg) for arg in record.args or () if isinstance(arg, str | int | float)
        )


def _dead(amqp_url: str) -> str:
    """``amqp_url`` pointed at the discard port, where nothing listens."""
    parts = urlsplit(amqp_url)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}127.0.0.1:9"))


async def test_publisher_and_consumer_move_to_the_next_node_and_log_no_password(
    tessera_env: dict[str, str],
    pool: asyncpg.Pool,
    nodes: list[TcpProxy],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    amqp_url = tessera_env["TESSERA_AMQP_URL"]
    password = urlsplit(amqp_url).password
    # A first node nobody listens on, then the two proxies.
    cluster = ",".join([_dead(amqp_url), *(node.url(amqp_url) for node in nodes)])
    names = private_names(tessera_env)
    applied: list[uuid.UUID] = []

    async def handle(conn: asyncpg.Connection, envelope: Envelope) -> None:
        applied.append(envelope.id)

    with capture_logs() as logs:
        broker = Broker(cluster, names)
        await broker.start()
        consumer = Consumer(broker, pool, "test.on_moved", {"test.moved.v1": handle})
        consumer.start()
        relay = OutboxRelay(pool, broker, service="test", poll_interval=0.2)
        try:
            await asyncio.wait_for(consumer.started(), 20)
            relay.start()
            # The dead first node was skipped; everything runs through the first proxy.
            assert nodes[0].open_connections == 1 and nodes[1].open_connections == 0

            async def commit() -> uuid.UUID:
                event = Envelope(type="test.moved", source="issuer", tenant="t", data={})
                async with unit_of_work(pool) as conn:
                    await add_events(conn, [event])
                relay.wake()
                return event.id

            first = await commit()
            await wait_for(lambda: first in applied, timeout=20)

            await nodes[0].cut()  # that node goes away
            await wait_for(lambda: nodes[1].open_connections == 1 and broker.connected, timeout=20)
            second = await commit()
            await wait_for(lambda: second in applied, timeout=20)
        finally:
            await relay.stop()
            await consumer.close()
            await broker.close()
    shown = [repr(line) for line in logs] + [_text(record) for record in caplog.records]
    assert any("broker reconnected" in line for line in shown)
    assert password and not [line for line in shown if f":{password}@" in line]


async def test_subscriber_queue_moves_to_the_next_node_and_reports_the_gap(
    tessera_env: dict[str, str], nodes: list[TcpProxy]
) -> None:
    amqp_url = tessera_env["TESSERA_AMQP_URL"]
    cluster = ",".join(node.url(amqp_url) for node in nodes)
    names = private_names(tessera_env)
    received: list[bytes] = []
    events: list[str] = []

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        received.append(message.body)

    queue = EventQueue(
        cluster,
        names,
        "failover",
        ("test.moved.v1",),
        on_message,
        lambda: events.append("lost"),
        lambda: events.append("back"),
    )
    publisher = await aio_pika.connect(amqp_url)
    try:
        await queue.start(wait=20)
        assert queue.up
        channel = await publisher.channel()
        exchange = await channel.declare_exchange(
            names.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await exchange.publish(aio_pika.Message(b"one"), "test.moved.v1")
        await wait_for(lambda: received == [b"one"], timeout=20)

        await nodes[0].cut()
        # Lost, then back through the other node: the subscriber fills the gap from the feed.
        await wait_for(
            lambda: events == ["lost", "back"] and nodes[1].open_connections == 1, timeout=20
        )
        await exchange.publish(aio_pika.Message(b"two"), "test.moved.v1")
        await wait_for(lambda: received == [b"one", b"two"], timeout=20)
    finally:
        await queue.close()
        await publisher.close()
