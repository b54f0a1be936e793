"""The consumer helper against real PostgreSQL and RabbitMQ: duplicates and poison messages."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import pytest

from shared.bus.amqp import Broker
from shared.bus.consumer import Consumer
from shared.bus.envelope import Envelope
from shared.db import create_pool
from tests.integration.bus_support import bus_database, private_names
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(tessera_env: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    url = await bus_database(tessera_env, f"consumer_{uuid.uuid4().hex[:8]}")
    async with create_pool(url) as pool:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE applied (event_id uuid NOT NULL, n int NOT NULL)")
        yield pool


async def test_duplicate_event_is_applied_once_and_poison_is_dead_lettered(
    tessera_env: dict[str, str], pool: asyncpg.Pool
) -> None:
    names = private_names(tessera_env)
    broker = Broker(tessera_env["TESSERA_AMQP_URL"], names)
    await broker.start()
    attempts: list[uuid.UUID] = []
    poison_id = uuid.uuid4()

    async def handle(conn: asyncpg.Connection, envelope: Envelope) -> None:
        attempts.append(envelope.id)
        if envelope.id == poison_id:
            raise ValueError("this event can never be applied")
        await conn.execute("INSERT INTO applied VALUES ($1, $2)", envelope.id, envelope.data["n"])

    consumer = Consumer(broker, pool, "test.on_thing", {"thing.happened.v1": handle})
    consumer.start()
    await asyncio.wait_for(consumer.started(), 10)
    publisher = await aio_pika.connect(tessera_env["TESSERA_AMQP_URL"])
    try:
        channel = await publisher.channel()
        exchange = await channel.get_exchange(names.exchange)
        event = Envelope(type="thing.happened", source="issuer", tenant="t", data={"n": 7})
        for _ in range(3):  # the same event id, delivered three times
            await exchange.publish(aio_pika.Message(event.to_json()), "thing.happened.v1")
        await exchange.publish(aio_pika.Message(b"{not json"), "thing.happened.v1")
        poison = Envelope(
            type="thing.happened", source="issuer", tenant="t", data={"n": 0}, id=poison_id
        )
        await exchange.publish(aio_pika.Message(poison.to_json()), "thing.happened.v1")

        async def applied_rows() -> list[tuple[uuid.UUID, int]]:
            async with pool.acquire() as conn:
                rows = await conn.fetch("SELECT event_id, n FROM applied")
            return [(r["event_id"], r["n"]) for r in rows]

        async def applied_once() -> bool:
            return await applied_rows() == [(event.id, 7)]

        await wait_for(applied_once, timeout=15, what="the event applied")

        # Both bad messages end in the dead-letter queue instead of looping.
        dead = await channel.declare_queue(
            names.dead_letter_queue, durable=True, arguments=names.durable_arguments()
        )
        dead_bodies: list[bytes] = []

        async def two_dead() -> bool:
            message = await dead.get(no_ack=True, fail=False)
            if message is not None:
                dead_bodies.append(message.body)
            return len(dead_bodies) == 2

        await wait_for(two_dead, timeout=15, what="two dead-lettered messages")
        assert b"{not json" in dead_bodies
        assert poison.to_json() in dead_bodies
        # The poison event was tried twice (once retried), never more; the duplicate applied once.
        assert attempts.count(poison_id) == 2
        assert attempts.count(event.id) == 1
        assert await applied_rows() == [(event.id, 7)]
        main = await channel.declare_queue(
            names.durable_queue("test.on_thing"),
            durable=True,
            arguments={
                **names.durable_arguments(),
                "x-dead-letter-exchange": names.dead_letter_exchange,
            },
        )
        assert main.declaration_result.message_count == 0
        # Both durable queues are quorum queues: RabbitMQ refuses to see them as classic ones.
        classic = {"x-queue-type": "classic"}
        for queue, arguments in (
            (main.name, {**classic, "x-dead-letter-exchange": names.dead_letter_exchange}),
            (names.dead_letter_queue, classic),
        ):
            probe = await publisher.channel()
            with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
                await probe.declare_queue(queue, durable=True, arguments=arguments)
    finally:
        await consumer.close()
        await broker.close()
        await publisher.close()


async def test_upgrade_applies_what_the_classic_queue_holds_and_deletes_it(
    tessera_env: dict[str, str], pool: asyncpg.Pool
) -> None:
    # Before quorum queues, each consumer had a classic queue named after it. RabbitMQ cannot
    # redeclare it as a quorum queue, so the upgraded consumer uses `<name>.quorum` and adopts
    # the old one: events published while no replica ran must not be lost.
    names = private_names(tessera_env)
    publisher = await aio_pika.connect(tessera_env["TESSERA_AMQP_URL"])
    channel = await publisher.channel()
    exchange = await channel.declare_exchange(
        names.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    old = await channel.declare_queue(
        names.queue("test.on_old"),
        durable=True,
        arguments={"x-dead-letter-exchange": names.dead_letter_exchange},
    )
    await old.bind(exchange, "thing.happened.v1")
    waiting = Envelope(type="thing.happened", source="issuer", tenant="t", data={"n": 1})
    await exchange.publish(aio_pika.Message(waiting.to_json()), "thing.happened.v1")

    async def handle(conn: asyncpg.Connection, envelope: Envelope) -> None:
        await conn.execute("INSERT INTO applied VALUES ($1, $2)", envelope.id, envelope.data["n"])

    broker = Broker(tessera_env["TESSERA_AMQP_URL"], names)
    await broker.start()
    consumer = Consumer(broker, pool, "test.on_old", {"thing.happened.v1": handle})
    consumer.start()
    try:
        await asyncio.wait_for(consumer.started(), 10)
        later = Envelope(type="thing.happened", source="issuer", tenant="t", data={"n": 2})
        await exchange.publish(aio_pika.Message(later.to_json()), "thing.happened.v1")

        async def applied_rows() -> list[tuple[uuid.UUID, int]]:
            async with pool.acquire() as conn:
                rows = await conn.fetch("SELECT event_id, n FROM applied ORDER BY n")
            return [(r["event_id"], r["n"]) for r in rows]

        # Both applied, each once: the waiting one from the classic queue, the later one from
        # the quorum queue only (the classic queue was unbound first).
        async def both_applied() -> bool:
            return await applied_rows() == [(waiting.id, 1), (later.id, 2)]

        await wait_for(both_applied, timeout=15, what="both events applied")

        async def classic_queue_exists() -> bool:
            probe = await publisher.channel()
            try:
                await probe.declare_queue(old.name, passive=True)
                return True
            except aio_pika.exceptions.ChannelClosed:
                return False

        async def classic_queue_gone() -> bool:
            return not await classic_queue_exists()

        await wait_for(classic_queue_gone, timeout=15, what="the classic queue deleted")
    finally:
        await consumer.close()
        await broker.close()
        await publisher.close()
