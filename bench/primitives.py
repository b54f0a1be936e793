"""The raw primitives Tessera's figures depend on, measured on this machine right now.

    python -m bench.primitives

Each is what one core (or one connection) gives with nothing of Tessera around it: PyJWT sign
and verify (RS256, ES256), a durable asyncpg insert (one row, one commit, 16 connections), and
a RabbitMQ publish with publisher confirms (pipelined, one channel).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable

import aio_pika
import asyncpg
import jwt

from services.keys.crypto import generate_private_key

DATABASE_URL = os.environ.get(
    "TESSERA_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AMQP_URL = os.environ.get("TESSERA_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def per_second(fn: Callable[[], object], seconds: float) -> float:
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        fn()
        count += 1
    return count / elapsed


def claims() -> dict[str, object]:
    return {"jti": secrets.token_hex(16), "sub": "alice@bench", "exp": int(time.time()) + 300}


def jwt_figures(seconds: float) -> dict[str, float]:
    figures = {}
    for alg in ("RS256", "ES256"):
        key = generate_private_key(alg)
        figures[f"pyjwt_{alg.lower()}_sign"] = per_second(
            lambda key=key, alg=alg: jwt.encode(claims(), key, algorithm=alg), seconds
        )
        token = jwt.encode(claims(), key, algorithm=alg)
        public = key.public_key()
        figures[f"pyjwt_{alg.lower()}_verify"] = per_second(
            lambda token=token, public=public, alg=alg: jwt.decode(token, public, algorithms=[alg]),
            seconds,
        )
    return figures


async def asyncpg_inserts_per_second(seconds: float, connections: int = 16) -> float:
    name = f"bench_prim_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(DATABASE_URL)
    await admin.execute(f"CREATE DATABASE {name}")
    url = DATABASE_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        pool = await asyncpg.create_pool(url, min_size=connections, max_size=connections)
        await pool.execute("CREATE TABLE t (id uuid PRIMARY KEY, hash bytea, created timestamptz)")
        inserted = 0
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal inserted
            async with pool.acquire() as conn:
                while time.perf_counter() < stop:
                    await conn.execute(
                        "INSERT INTO t VALUES (gen_random_uuid(), $1, now())",
                        secrets.token_bytes(32),
                    )
                    inserted += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        rate = inserted / (time.perf_counter() - started)
        await pool.close()
        return rate
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def rabbitmq_publishes_per_second(
    seconds: float, in_flight: int = 64, body: bytes = b'{"x":1}'
) -> float:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            f"bench.prim.{secrets.token_hex(4)}", aio_pika.ExchangeType.TOPIC, auto_delete=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "#")
        published = 0
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal published
            while time.perf_counter() < stop:
                await exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key="x.v1",
                )
                published += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return published / (time.perf_counter() - started)
    finally:
        await connection.close()


async def measure(seconds: float = 2.0) -> dict[str, float]:
    figures = jwt_figures(seconds)
    figures["asyncpg_insert"] = await asyncpg_inserts_per_second(seconds)
    figures["rabbitmq_publish_confirmed"] = await rabbitmq_publishes_per_second(seconds)
    return figures


def main() -> None:
    for name, value in asyncio.run(measure()).items():
        print(f"{name:<32}{value:>12,.0f} /s")


if __name__ == "__main__":
    main()
