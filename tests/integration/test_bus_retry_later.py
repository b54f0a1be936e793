"""A consumer's resolving handler: it asks elsewhere before its transaction opens, and while
what it asks is away (RetryLater) the event waits in its queue instead of being dead-lettered."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import pytest

from shared.bus.amqp import QUORUM_QUEUE, Broker
from shared.bus.consumer import Consumer, Resolving, RetryLater
from shared.bus.envelope import Envelope
from shared.db import create_pool
from tests.integration.bus_support import bus_database, private_names

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(tessera_env: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    url = await bus_database(tessera_env, f"retry_{uuid.uuid4().hex[:8]}")
    async with create_pool(url, min_size=1, max_size=4) as pool:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE applied (event_id uuid NOT NULL, n int NOT NULL)")
        yield pool


async def test_an_event_waits_while_its_handler_must_retry_later_and_is_applied_once(
    tessera_env: dict[str, str], pool: asyncpg.Pool
) -> None:
    names = private_names(tessera_env)
    broker = Broker(tessera_env["TESSERA_AMQP_URL"], names)
    await broker.start()
    asked: list[int] = []  # connections of the pool in use each time resolve ran
    away = 3  # more refusals than the one retry a failing handler gets before dead-lettering

    async def resolve(envelope: Envelope) -> int:
        asked.append(pool.get_size() - pool.get_idle_size())
        if len(asked) <= away:
            raise RetryLater("the other service is away")
        return int(envelope.data["n"]) * 10

    applied = asyncio.Event()

    async def apply(conn: asyncpg.Connection, envelope: Envelope, resolved: int) -> None:
        assert conn.is_in_transaction()
        await conn.execute("INSERT INTO applied VALUES ($1, $2)", envelope.id, resolved)
        applied.set()

    consumer = Consumer(
        broker, pool, "test.on_thing", {"thing.happened.v1": Resolving(resolve, apply)}
    )
    consumer.start()
    publisher = await aio_pika.connect(tessera_env["TESSERA_AMQP_URL"])
    try:
        await asyncio.wait_for(consumer.started(), 10)
        channel = await publisher.channel()
        exchange = await channel.get_exchange(names.exchange)
        event = Envelope(type="thing.happened", source="keys", tenant="t", data={"n": 7})
        await exchange.publish(aio_pika.Message(event.to_json()), "thing.happened.v1")
        await asyncio.wait_for(applied.wait(), 30)
        await consumer.close()  # its transaction committed: the row is there to read
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT event_id, n FROM applied")
        assert [(r["event_id"], r["n"]) for r in rows] == [(event.id, 70)]
        assert len(asked) == away + 1
        # resolve never ran while the consumer held a connection (let alone a transaction).
        assert asked == [0] * (away + 1)
        dead = await channel.declare_queue(
            names.dead_letter_queue, durable=True, arguments=QUORUM_QUEUE
        )
        assert (await dead.declare()).message_count == 0
    finally:
        await publisher.close()
        await consumer.close()
        await broker.close()
