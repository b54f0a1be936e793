"""The unit of work: what follows a commit runs after it, and only after it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import pytest

from shared.bus.amqp import Broker, declare_topology
from shared.bus.envelope import Envelope
from shared.bus.outbox import OutboxRelay, add_events
from shared.db import after_commit, create_pool, unit_of_work
from tests.integration.bus_support import bus_database, private_names
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(tessera_env: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    url = await bus_database(tessera_env, f"work_{uuid.uuid4().hex[:8]}")
    async with create_pool(url) as pool:
        yield pool


async def test_after_commit_runs_once_the_unit_of_work_has_committed_and_never_on_rollback(
    pool: asyncpg.Pool,
) -> None:
    seen: list[bool] = []
    await pool.execute("CREATE TABLE things (id int PRIMARY KEY)")
    async with unit_of_work(pool) as conn:

        def ran() -> None:
            seen.append(conn.is_in_transaction())  # False: the transaction has ended

        await conn.execute("INSERT INTO things VALUES (1)")
        after_commit(conn, ran)
        after_commit(conn, ran)  # asked twice, runs once
        assert seen == []  # not before the commit
    assert seen == [False]
    assert await pool.fetchval("SELECT count(*) FROM things") == 1

    with contextlib.suppress(RuntimeError):
        async with unit_of_work(pool) as conn:
            await conn.execute("INSERT INTO things VALUES (2)")
            after_commit(conn, ran)
            raise RuntimeError("the change failed")
    assert seen == [False]
    assert await pool.fetchval("SELECT count(*) FROM things") == 1


async def test_after_commit_outside_a_transaction_runs_at_once_and_in_a_foreign_one_is_refused(
    pool: asyncpg.Pool,
) -> None:
    seen: list[str] = []
    async with pool.acquire() as conn:
        after_commit(conn, lambda: seen.append("now"))
        assert seen == ["now"]
        # A transaction we cannot see the end of would leave the relay waiting for its poll.
        async with conn.transaction():
            with pytest.raises(RuntimeError, match="unit_of_work"):
                after_commit(conn, lambda: seen.append("never"))
        # Another connection than the unit's, inside a unit of work: refused too.
        async with unit_of_work(pool) as other:
            assert other is not conn
            async with conn.transaction():
                with pytest.raises(RuntimeError, match="unit_of_work"):
                    await add_events(
                        conn, [Envelope(type="t.x", source="test", tenant="t", data={})]
                    )
    assert seen == ["now"]


async def test_an_event_committed_in_a_unit_of_work_wakes_the_relay_without_waiting_for_its_poll(
    tessera_env: dict[str, str], pool: asyncpg.Pool
) -> None:
    names = private_names(tessera_env)
    observer = await aio_pika.connect(tessera_env["TESSERA_AMQP_URL"])
    broker = Broker(tessera_env["TESSERA_AMQP_URL"], names)
    # Polling alone would take 60 s: anything sooner was the wake-up.
    relay = OutboxRelay(pool, broker, service="test", poll_interval=60)
    try:
        channel = await observer.channel()
        exchange = await declare_topology(channel, names)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "#")
        await broker.start()
        await asyncio.wait_for(broker.wait_connected(), 10)
        relay.start()
        for n in range(3):
            event = Envelope(type="test.happened", source="test", tenant="t", data={"n": n})
            async with unit_of_work(pool) as conn:
                await add_events(conn, [event])
            message = await wait_for(
                lambda: queue.get(fail=False), what=f"event {n} relayed on commit"
            )
            await message.ack()
            assert message.message_id == str(event.id)
    finally:
        await relay.stop()
        await broker.close()
        await observer.close()
