"""The pieces every service app is built from: typed app keys and cleanup_ctx steps.

A service's ``create_app`` wires these in order (pool, broker, relay, consumers); aiohttp
tears them down in reverse, so consumers stop before the pool closes. Nothing connects until
the app starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, NoReturn

import asyncpg
import structlog
import uvloop
from aiohttp import web

from shared.bus.amqp import Broker
from shared.bus.consumer import Consumer, Handler
from shared.bus.outbox import OutboxRelay
from shared.callers import CALLERS
from shared.connections import listen, raise_file_limit
from shared.db import create_pool, describe_database
from shared.http import READINESS_CHECKS, ops_app
from shared.logging import configure_logging
from shared.settings import CommonSettings, ConfigError
from shared.tls import ReloadingTls

log = structlog.get_logger("tessera.service")

COMMON: web.AppKey[CommonSettings] = web.AppKey("common_settings", CommonSettings)
# The service's certificate on the internal plane: its API listener's (internal services) and
# the one its clients present.
TLS: web.AppKey[ReloadingTls] = web.AppKey("tls", ReloadingTls)
POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool", asyncpg.Pool)
BROKER: web.AppKey[Broker] = web.AppKey("broker", Broker)
RELAY: web.AppKey[OutboxRelay] = web.AppKey("relay", OutboxRelay)
CleanupStep = Callable[[web.Application], AsyncIterator[None]]


class StartupError(Exception):
    """A dependency could not be reached at start-up; the message is one line for the operator."""


async def db_pool(app: web.Application) -> AsyncIterator[None]:
    """The PostgreSQL pool as :data:`POOL`, with a readiness check; :class:`StartupError` when
    the database is missing (not migrated) or unreachable."""
    url = app[COMMON].database_url
    assert url is not None, "this service has no database"
    try:
        pool_cm = create_pool(url)
        pool = await pool_cm.__aenter__()
    except asyncpg.InvalidCatalogNameError:
        raise StartupError(
            f"database {describe_database(url)} does not exist: run `tessera migrate` first"
        ) from None
    except (
        OSError,
        asyncpg.PostgresError,
        TimeoutError,
        asyncpg.exceptions.TargetServerAttributeNotMatched,  # no read-write host right now
    ) as exc:
        raise StartupError(
            f"cannot reach PostgreSQL at {describe_database(url)}: {exc.__class__.__name__}: {exc}"
        ) from None
    app[POOL] = pool

    async def check() -> None:
        async with pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")

    app[READINESS_CHECKS].append(("database", check))
    try:
        yield
    finally:
        await pool_cm.__aexit__(None, None, None)


async def broker(app: web.Application) -> AsyncIterator[None]:
    """The broker connection as :data:`BROKER`, with a readiness check; closed at shutdown."""
    common = app[COMMON]
    instance = Broker(common.amqp_url, common.amqp, connection_name=f"tessera-{common.service}")
    await instance.start()
    app[BROKER] = instance
    app[READINESS_CHECKS].append(("broker", instance.check))
    yield
    await instance.close()


async def outbox_relay(app: web.Application) -> AsyncIterator[None]:
    """The outbox relay as :data:`RELAY`, publishing committed events; stopped at shutdown."""
    relay = OutboxRelay(app[POOL], app[BROKER], service=app[COMMON].service)
    relay.start()
    app[RELAY] = relay
    yield
    await relay.stop()


def event_consumers(
    handlers_by_consumer: Callable[[web.Application], Mapping[str, Mapping[str, Handler]]],
) -> CleanupStep:
    """A cleanup_ctx step running one :class:`Consumer` per entry ``{consumer: {key: handler}}``."""

    async def step(app: web.Application) -> AsyncIterator[None]:
        consumers = [
            Consumer(app[BROKER], app[POOL], name, handlers)
            for name, handlers in handlers_by_consumer(app).items()
        ]
        for consumer in consumers:
            consumer.start()
        yield
        for consumer in reversed(consumers):
            await consumer.close()

    return step


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line for the operator and exit (no traceback)."""
    print(f"tessera: {message}", file=sys.stderr)
    raise SystemExit(code)


def api_tls(app: web.Application) -> ssl.SSLContext | None:
    """The TLS context an app's API listener needs: mutual TLS for an internal-plane app (one
    with a callers table), None for the gateway's public API. Bad files stop start-up."""
    if CALLERS not in app:
        return None
    try:
        return app[TLS].listener()
    except (OSError, ssl.SSLError, ValueError) as exc:
        fail(f"cannot load the TLS files ({app[TLS].files.cert}): {type(exc).__name__}: {exc}")


async def _serve(app: web.Application, common: CommonSettings) -> None:
    limits = common.limits
    file_limit = raise_file_limit()
    ssl_context = api_tls(app)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, keepalive_timeout=limits.keepalive_timeout
    )
    ops_runner = web.AppRunner(ops_app(app), access_log=None, handle_signals=False)
    try:
        await runner.setup()
    except StartupError as exc:
        await runner.cleanup()
        # Let closing connections run their last callbacks before the loop goes away.
        await asyncio.sleep(0.1)
        fail(str(exc))
    await ops_runner.setup()
    servers = []
    for which, port, ssl_ctx, run in (
        ("api", common.port, ssl_context, runner),
        ("ops", common.ops_port, None, ops_runner),
    ):
        try:
            servers.append(await listen(run, common.host, port, limits, file_limit, ssl_ctx))
        except OSError as exc:
            await ops_runner.cleanup()
            await runner.cleanup()
            fail(f"cannot listen on {common.host}:{port} ({which}): {exc.strerror}")
        log.info("listening", listener=which, host=common.host, port=port, tls=bool(ssl_ctx))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    for server in servers:
        server.close()
    await ops_runner.cleanup()
    await runner.cleanup()


def run_app(app: web.Application, common: CommonSettings) -> None:
    """Serve the API and the ops listener of ``common`` (host, ports, limits) until
    SIGINT/SIGTERM; start-up failures exit with one clear line."""
    with contextlib.suppress(KeyboardInterrupt):
        # uvloop: the same asyncio API with libuv's C event loop underneath; measured 6-9%
        # more throughput through the whole stack (bench/bench_gateway.py).
        uvloop.run(_serve(app, common))


def serve_service(
    service: str,
    env: Mapping[str, str],
    settings_from_env: Callable[[Mapping[str, str]], Any],
    create_app: Callable[[Any], web.Application],
) -> None:
    """Run one service from the environment: ``python -m services.<service>`` and
    ``tessera serve <service>``. A bad setting stops it with one line naming the variable
    (exit 2, as every ``tessera`` command); then logging, the app, and :func:`run_app`."""
    try:
        settings = settings_from_env(env)
    except ConfigError as exc:
        print(f"tessera: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    common: CommonSettings = settings.common
    configure_logging(service, common.log_level)
    run_app(create_app(settings), common)
