"""A whole Tessera stack (``tessera dev``) for benchmarks: private names, cleaned up after."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from shared.pki import init_pki
from shared.settings import AmqpNames

ROOT = Path(__file__).resolve().parent.parent


def free_port_block(count: int) -> int:
    while True:
        base = 20000 + secrets.randbelow(30000)
        try:
            socks = [socket.create_server(("127.0.0.1", base + i)) for i in range(count)]
        except OSError:
            continue
        for s in socks:
            s.close()
        return base


# Which checkout (and its Python) a stack runs from: this one unless a benchmark compares
# against another (bench_internal_tls's baseline).
STACK_ROOT = "TESSERA_BENCH_ROOT"
STACK_PYTHON = "TESSERA_BENCH_PYTHON"


def cli(env: dict[str, str], *args: str) -> str:
    """Run a ``tessera`` command against the stack; its stdout."""
    return subprocess.run(
        [env.get(STACK_PYTHON, sys.executable), "-m", "services.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=env.get(STACK_ROOT, str(ROOT)),
    ).stdout.strip()


@asynccontextmanager
async def dev_stack(
    root: Path = ROOT, python: str = sys.executable, tls: bool = True, **settings: str
) -> AsyncIterator[dict[str, str]]:
    """Start ``tessera dev`` on free ports with a random database prefix and broker names;
    yields its environment (``TESSERA_<SERVICE>_URL`` included). ``root``/``python`` run another
    checkout's stack, ``tls=False`` one from before the internal plane was mutual TLS."""
    run_id = secrets.token_hex(4)
    port = free_port_block(8)  # the APIs, then the ops listeners
    env = dict(os.environ)
    env.setdefault("TESSERA_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    env.setdefault("TESSERA_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    env.update(
        TESSERA_DATABASE_PREFIX=f"bench_{run_id}",
        TESSERA_AMQP_EXCHANGE=f"bench.{run_id}",
        TESSERA_AMQP_DLX=f"bench.dlx.{run_id}",
        TESSERA_AMQP_QUEUE_PREFIX=f"bench.{run_id}.",
        TESSERA_KEK=secrets.token_urlsafe(32),
        TESSERA_TOKEN_PEPPER=secrets.token_urlsafe(32),
        TESSERA_LOG_LEVEL="warning",
        # A descriptor of its own: a developer's `tessera dev` may be running beside it.
        TESSERA_DEV_STACK_FILE=os.path.join(tempfile.gettempdir(), f"tessera-bench-{run_id}.json"),
        # Measure the stack, not the limiter.
        TESSERA_RATE_LIMIT_PRINCIPAL="0",
        TESSERA_RATE_LIMIT_TENANT="0",
        # Queues a killed run leaves behind expire instead of piling up on the broker.
        TESSERA_AMQP_QUEUE_EXPIRES_SECONDS="60",
    )
    env[STACK_ROOT], env[STACK_PYTHON] = str(root), python
    env.update(settings)
    # The internal plane is mutual TLS: a PKI of the benchmark's own (operator commands present
    # its operator certificate).
    pki = Path(tempfile.mkdtemp(prefix="tessera-bench-pki-"))
    init_pki(pki)
    env["TESSERA_TLS_DIR"] = str(pki)
    for i, name in enumerate(("gateway", "issuer", "revocation", "keys")):
        scheme = "https" if tls and name != "gateway" else "http"
        env[f"TESSERA_{name.upper()}_URL"] = f"{scheme}://127.0.0.1:{port + i}"
        env[f"TESSERA_{name.upper()}_OPS_PORT"] = str(port + 4 + i)  # as tessera dev sets them
    stack = subprocess.Popen(
        [python, "-m", "services.cli", "dev", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=root,
        text=True,
    )
    try:
        assert stack.stdout is not None
        for line in stack.stdout:
            if "Tessera gateway listening" in line:
                break
        else:
            raise RuntimeError("tessera dev did not start")
        yield env
    finally:
        stack.send_signal(signal.SIGTERM)
        try:
            stack.wait(timeout=30)
        finally:
            await remove_stack_state(env)


async def remove_stack_state(env: dict[str, str]) -> None:
    """Drop the stack's databases and delete its queues and exchanges, each step even when an
    earlier one failed."""
    from services.issuer.events import HANDLERS as ISSUER_CONSUMERS
    from services.revocation.events import ON_KEY_REVOKED
    from shared.db import drop_database
    from shared.settings import DATABASE_SERVICES, AmqpNames, service_database_url

    try:
        for service in DATABASE_SERVICES:
            await drop_database(service_database_url(env, service))
    finally:
        # The durable queues of the services' consumers (a new consumer belongs here too); the
        # subscribers' own queues are exclusive and went with their connections.
        await delete_broker_names(
            env["TESSERA_AMQP_URL"], AmqpNames.from_env(env), [*ISSUER_CONSUMERS, ON_KEY_REVOKED]
        )


async def delete_broker_names(amqp_url: str, names: AmqpNames, consumers: list[str]) -> None:
    """Delete the consumers' queues, the dead-letter queue and both exchanges of ``names``, so
    benchmark runs do not pile them up on the broker."""
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        durable = [names.durable_queue(consumer) for consumer in consumers]
        for queue in [*durable, names.dead_letter_queue]:
            await channel.queue_delete(queue)
        await channel.exchange_delete(names.exchange)
        await channel.exchange_delete(names.dead_letter_exchange)
    finally:
        await connection.close()
