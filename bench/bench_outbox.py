"""Event publishing: the outbox relay's batched publish against aio-pika's per-message publish.

    python -m bench.bench_outbox                  # 3 s per figure
    python -m bench.bench_outbox --seconds 10

Every figure is persistent messages with publisher confirms on one channel, to a topic
exchange with one bound queue, from this process:

- raw: aio-pika ``Exchange.publish``, 64 publishes in flight (the primitive), same bodies;
- ``Broker.publish_confirmed`` with batches of 1, 16 and 256 messages (one socket write each);
- the whole outbox: writers commit events (10 per transaction, 16 at once) while the relay
  publishes them; events per second from commit to confirm.

Besides the rate, it prints this process's CPU time per message and the broker's (from /proc),
since on a shared machine the CPU each message costs is what the rest of the stack loses.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable

import aio_pika
from pamqp import commands as spec

from bench.primitives import AMQP_URL, DATABASE_URL, rabbitmq_publishes_per_second
from bench.report import result
from bench.stack import delete_broker_names
from shared.bus.amqp import Broker, declare_topology
from shared.bus.batch_publish import Outgoing
from shared.bus.envelope import Envelope
from shared.bus.outbox import OutboxRelay, add_events
from shared.db import BUS_MIGRATIONS, create_pool, drop_database, migrate, unit_of_work
from shared.settings import AmqpNames

BODY = b'{"data": "' + b"x" * 400 + b'"}'  # about the size of a token.issued envelope


def broker_cpu_seconds() -> float:
    """CPU time used so far by the RabbitMQ node (beam) processes on this machine."""
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"beam" not in f.read():
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


async def measured(name: str, run: Callable[[], Awaitable[int]]) -> float:
    cpu, broker, started = time.process_time(), broker_cpu_seconds(), time.perf_counter()
    count = await run()
    elapsed = time.perf_counter() - started
    own = (time.process_time() - cpu) / count * 1e6
    theirs = (broker_cpu_seconds() - broker) / count * 1e6
    rate = count / elapsed
    print(
        f"{name:<44}{rate:>10,.0f}/s   CPU/message: here {own:5.0f} µs, broker {theirs:4.0f} µs",
        flush=True,
    )
    return rate


def message(n: int) -> Outgoing:
    properties = spec.Basic.Properties(
        content_type="application/json", message_id=str(n), delivery_mode=2
    )
    return Outgoing("bench.happened.v1", BODY, properties)


async def run(args: argparse.Namespace) -> None:
    run_id = secrets.token_hex(4)
    names = AmqpNames(
        exchange=f"bench.{run_id}",
        dead_letter_exchange=f"bench.dlx.{run_id}",
        queue_prefix=f"bench.{run_id}.",
    )
    url = DATABASE_URL.rsplit("/", 1)[0] + f"/bench_outbox_{run_id}"
    connection = await aio_pika.connect(AMQP_URL)
    broker = Broker(AMQP_URL, names)
    try:
        channel = await connection.channel()
        exchange = await declare_topology(channel, names)
        sink = await channel.declare_queue(exclusive=True, arguments={"x-queue-mode": "lazy"})
        await sink.bind(exchange, "#")
        await broker.start()
        await broker.wait_connected()
        print("one channel, persistent messages, publisher confirms, one bound queue")

        async def raw_publishes() -> int:
            rate = await rabbitmq_publishes_per_second(args.seconds, body=BODY)
            return round(rate * args.seconds)

        raw = await measured("raw aio-pika publish, 64 in flight", raw_publishes)
        for size in (1, 16, 256):

            async def batches(size: int = size) -> int:
                sent, stop = 0, time.perf_counter() + args.seconds
                while time.perf_counter() < stop:
                    await broker.publish_confirmed([message(sent + i) for i in range(size)])
                    sent += size
                return sent

            rate = await measured(f"Broker.publish_confirmed, {size} per batch", batches)
            print(f"{'  ratio to raw':<44}{rate / raw:>10.2f}")
            result(
                f"publish_confirmed, {size} per batch",
                rate,
                "/s",
                "rabbitmq_publish_confirmed",
            )
            await sink.purge()

        await migrate(url, [("bus", BUS_MIGRATIONS)])
        async with create_pool(url, max_size=20) as pool:

            async def outbox() -> int:
                committed, stop = 0, time.perf_counter() + args.seconds

                async def writer() -> None:
                    nonlocal committed
                    while time.perf_counter() < stop:
                        async with unit_of_work(pool) as conn:
                            for _ in range(10):
                                event = Envelope(
                                    type="bench.happened", source="bench", tenant="t", data={}
                                )
                                await add_events(conn, [event])
                        committed += 10

                await asyncio.gather(*(writer() for _ in range(16)))
                async with asyncio.timeout(60):
                    while await pool.fetchval("SELECT count(*) FROM outbox"):
                        await asyncio.sleep(0.01)
                return committed

            relay = OutboxRelay(pool, broker, service="bench")
            relay.start()
            try:
                rate = await measured("outbox: commit → relay → confirmed", outbox)
            finally:
                await relay.stop()
            result("outbox events committed and published", rate, "/s", "asyncpg_insert")
    finally:
        await broker.close()
        await connection.close()
        await drop_database(url)
        await delete_broker_names(AMQP_URL, names, [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
