"""Fixtures shared by every test tier.

The real servers come from ``TESSERA_TEST_DATABASE_URL`` / ``TESSERA_TEST_AMQP_URL`` when set,
else from testcontainers when a Docker engine answers, else the tests that need them skip with
the reason (CI sets both variables, so there a skip is a failure). Every test session gets its
own databases (``tessera_<run>_<service>``), exchanges and queue names, so runs never see each
other's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shared.settings import DATABASE_SERVICES, service_database_url
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Infra:
    database_url: str
    amqp_url: str


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    db = os.environ.get("TESSERA_TEST_DATABASE_URL")
    amqp = os.environ.get("TESSERA_TEST_AMQP_URL")
    if db and amqp:
        yield Infra(db, amqp)
        return
    if not _docker_answers():
        if os.environ.get("CI"):
            pytest.fail("CI must not skip: TESSERA_TEST_DATABASE_URL / TESSERA_TEST_AMQP_URL unset")
        pytest.skip(
            "needs PostgreSQL and RabbitMQ: set TESSERA_TEST_DATABASE_URL and "
            "TESSERA_TEST_AMQP_URL, or run a Docker engine for testcontainers"
        )
    from testcontainers.postgres import PostgresContainer
    from testcontainers.rabbitmq import RabbitMqContainer

    with PostgresContainer("postgres:16-alpine") as pg, RabbitMqContainer("rabbitmq:3.13") as mq:
        params = mq.get_connection_params()
        yield Infra(
            db or pg.get_connection_url(driver=None),
            amqp or f"amqp://guest:guest@{params.host}:{params.port}/",
        )


@pytest.fixture(scope="session")
def run_id() -> str:
    return "t" + secrets.token_hex(4)


def _drop_databases(env: dict[str, str]) -> None:
    """Drop every database this run created (the services' and any a test made)."""
    from urllib.parse import urlsplit, urlunsplit

    import asyncpg

    from shared.db import drop_database

    async def drop() -> None:
        server = urlsplit(service_database_url(env, DATABASE_SERVICES[0]))
        conn = await asyncpg.connect(urlunsplit(server._replace(path="/postgres")))
        try:
            names = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE $1",
                env["TESSERA_DATABASE_PREFIX"] + "\\_%",
            )
        finally:
            await conn.close()
        for row in names:
            with contextlib.suppress(Exception):
                await drop_database(urlunsplit(server._replace(path=f"/{row['datname']}")))

    asyncio.run(drop())


def _delete_queues(env: dict[str, str], run_id: str) -> None:
    """Best effort: remove this run's queues and exchanges (the per-stack ones too) from the
    broker, so runs on one machine do not pile them up."""
    ctl = shutil.which("rabbitmqctl")
    if not ctl:
        return

    def names(kind: str) -> list[str]:
        out = subprocess.run(
            [ctl, "-q", kind, "name"], capture_output=True, text=True, timeout=60
        ).stdout
        return out.split()

    async def delete(queues: list[str], exchanges: list[str]) -> None:
        import aio_pika

        connection = await aio_pika.connect(env["TESSERA_AMQP_URL"])
        try:
            channel = await connection.channel()
            for queue in queues:
                await channel.queue_delete(queue)
            for exchange in exchanges:
                await channel.exchange_delete(exchange)
        finally:
            await connection.close()

    with contextlib.suppress(Exception):
        queues = [n for n in names("list_queues") if n.startswith(f"{run_id}.")]
        ours = (f"tessera.events.{run_id}", f"tessera.dlx.{run_id}")
        exchanges = [n for n in names("list_exchanges") if n.startswith(ours)]
        asyncio.run(delete(queues, exchanges))


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's internal CA and a certificate per service and for the operator."""
    from shared.pki import init_pki
    from tests.tls import register_pki

    directory = tmp_path_factory.mktemp("pki")
    init_pki(directory)
    register_pki(directory)
    return directory


@pytest.fixture(scope="session")
def tessera_env(infra: Infra, run_id: str, pki_dir: Path) -> Iterator[dict[str, str]]:
    """The environment of a Tessera stack private to this test session."""
    # The user's XDG_STATE_HOME is left out too: stacks describe themselves in files of
    # their own (see start_stack), never in the user's dev-stack.json.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TESSERA_", "DATABRICKS_")) and key != "XDG_STATE_HOME"
    }
    env.update(
        TESSERA_DATABASE_URL=infra.database_url,
        TESSERA_AMQP_URL=infra.amqp_url,
        TESSERA_DATABASE_PREFIX=f"tessera_{run_id}",
        TESSERA_AMQP_EXCHANGE=f"tessera.events.{run_id}",
        TESSERA_AMQP_DLX=f"tessera.dlx.{run_id}",
        TESSERA_AMQP_QUEUE_PREFIX=f"{run_id}.",
        TESSERA_KEK=secrets.token_urlsafe(32),
        TESSERA_TOKEN_PEPPER=secrets.token_urlsafe(32),
        TESSERA_LOG_LEVEL="info",
        # Whatever a killed run leaves on the developer's broker goes away by itself.
        TESSERA_AMQP_QUEUE_EXPIRES_SECONDS="60",
        TESSERA_TLS_DIR=str(pki_dir),
    )
    yield env
    _drop_databases(env)
    _delete_queues(env, run_id)


def private_settings(tessera_env: dict[str, str], tag: str | None = None) -> dict[str, str]:
    """The settings that give one more stack, test or tag databases and broker names of its
    own, under the session's (so the session's clean-up removes them): the database prefix
    (each service's database is ``<prefix>_<tag>_<service>``, as ``shared.settings.
    service_database_url`` names it), the exchanges and the queue prefix."""
    tag = tag or secrets.token_hex(3)
    return {
        "TESSERA_DATABASE_PREFIX": f"{tessera_env['TESSERA_DATABASE_PREFIX']}_{tag}",
        "TESSERA_AMQP_EXCHANGE": f"{tessera_env['TESSERA_AMQP_EXCHANGE']}.{tag}",
        "TESSERA_AMQP_DLX": f"{tessera_env['TESSERA_AMQP_DLX']}.{tag}",
        "TESSERA_AMQP_QUEUE_PREFIX": f"{tessera_env['TESSERA_AMQP_QUEUE_PREFIX']}{tag}.",
    }


def private_env(
    tessera_env: dict[str, str], tag: str | None = None, **extra: str
) -> dict[str, str]:
    """The session environment with :func:`private_settings` of its own; ``extra`` added last."""
    return {**tessera_env, **private_settings(tessera_env, tag), **extra}


def free_port_block(count: int) -> int:
    """A port P such that P..P+count-1 are all free right now, below the kernel's ephemeral
    range (32768 and up), so no outgoing connection of this busy machine takes one before a
    server binds it."""
    for _ in range(200):
        base = 20000 + secrets.randbelow(12000 - count)
        socks = []
        try:
            for offset in range(count):
                s = socket.socket()
                s.bind(("127.0.0.1", base + offset))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of ports")


@dataclass
class Stack:
    """A running ``tessera dev``: its URLs, environment and log file."""

    process: subprocess.Popen[bytes]
    env: dict[str, str]
    port: int
    log_path: Path
    urls: dict[str, str] = field(default_factory=dict)
    # Each service's ops listener (/healthz, /readyz, /metrics in clear).
    ops: dict[str, str] = field(default_factory=dict)

    @property
    def gateway(self) -> str:
        return self.urls["gateway"]

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a ``tessera`` command against this stack."""
        return subprocess.run(
            [sys.executable, "-m", "services.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
            cwd=ROOT,
        )


def start_stack(
    env: dict[str, str], log_path: Path, *, timeout: float = 90.0, cwd: Path = ROOT
) -> Stack:
    """Start ``tessera dev`` in ``cwd``; one more try on new ports if the first fails (another
    process may take a port between our probe and the service's bind on a busy machine)."""
    try:
        return _start_stack(env, log_path, timeout, cwd)
    except RuntimeError as first:
        print(f"tessera dev failed to start, retrying on other ports: {first}", file=sys.stderr)
        return _start_stack(env, log_path, timeout, cwd)


def _start_stack(env: dict[str, str], log_path: Path, timeout: float, cwd: Path) -> Stack:
    names = ("gateway", "issuer", "revocation", "keys")
    # The APIs, then the ops listeners (see services/cli/dev.py).
    port = free_port_block(2 * len(names))
    # Each stack describes itself in its own file, never in the user's (shared) one.
    if "XDG_STATE_HOME" not in env:
        env = {"TESSERA_DEV_STACK_FILE": str(log_path.parent / "dev-stack.json"), **env}
    stack_env = dict(env)
    urls = {
        name: f"{'http' if name == 'gateway' else 'https'}://127.0.0.1:{port + offset}"
        for offset, name in enumerate(names)
    }
    for name, url in urls.items():
        stack_env[f"TESSERA_{name.upper()}_URL"] = url
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "dev", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=cwd,
    )
    stack = Stack(proc, stack_env, port, log_path)
    stack.urls = urls
    stack.ops = {name: f"http://127.0.0.1:{port + len(names) + i}" for i, name in enumerate(names)}

    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"tessera dev exited {proc.returncode}:\n{stack.logs()[-4000:]}")
        return "Tessera gateway listening on" in stack.logs()

    try:
        wait_until(listening, timeout=timeout, what="tessera dev listening")
    except AssertionError:
        stop_stack(stack)
        raise RuntimeError(
            f"tessera dev not ready in {timeout}s:\n{stack.logs()[-4000:]}"
        ) from None
    return stack


def stop_stack(stack: Stack) -> None:
    if stack.process.poll() is None:
        stack.process.send_signal(signal.SIGTERM)
        try:
            stack.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            stack.process.kill()
            stack.process.wait()


@pytest.fixture(scope="session")
def stack(tessera_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One whole Tessera stack (``tessera dev``) for the session's e2e tests."""
    log_path = tmp_path_factory.mktemp("stack") / "tessera-dev.log"
    running = start_stack(tessera_env, log_path)
    yield running
    stop_stack(running)
