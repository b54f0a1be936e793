"""Tessera's services in this process: the one harness of the integration tests.

:func:`running_stack` starts keys, issuer and revocation (or the ``services`` named), each the
real application on its own mutual-TLS port and ops listener, on databases and broker names of
the stack's own (``tests.conftest.private_env``), and yields a :class:`Services` to call them with.
:func:`start_service` starts one service, for tests that stop and start it themselves. The e2e
tests run ``tessera dev`` as a process instead (``start_stack`` in tests/conftest.py).

Everything a test creates is named under the session's prefix (``tessera_<run>_…`` databases,
``tessera.events.<run>…`` exchanges, ``<run>.…`` queues), which the session removes at its end.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiohttp
from aiohttp.test_utils import TestServer

from services.cli.migrate import migrate_all
from shared.settings import AmqpNames, service_database_url
from tests.conftest import free_port_block, private_env
from tests.factories import jwt_body, tenant_id, token_body
from tests.tls import allowed_session, serve, serve_ops
from tests.waiting import wait_for

# In start order: the others ask keys for tenants as soon as they serve.
SERVICES = ("keys", "issuer", "revocation")
# The durable queues each service's consumers declare in the background once serving. An
# event published before its queue is bound is lost to the test, so the harness waits for them.
CONSUMERS = {"issuer": ("issuer.on_token_revoked",), "revocation": ("revocation.on_key_revoked",)}
# Where a service that is not running is said to be: nothing listens on the discard port, so a
# call to it fails at once instead of reaching a developer's own stack on the default ports.
NOWHERE = "https://127.0.0.1:9"


async def wait_consuming(env: dict[str, str], consumer: str, timeout: float = 10.0) -> None:
    """Wait until the durable queue of ``consumer`` exists on the broker and exchange of
    ``env``: services declare their queues in the background once serving, and an event
    published before its queue is bound is lost."""
    names = AmqpNames.from_env(env)
    connection = await aio_pika.connect(env["TESSERA_AMQP_URL"])

    async def declared() -> bool:
        channel = await connection.channel()  # a failed passive declare closes it
        try:
            await channel.declare_queue(names.durable_queue(consumer), passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return False
        await channel.close()
        return True

    try:
        await wait_for(declared, timeout=timeout, what=f"the queue of {consumer}")
    finally:
        await connection.close()


@dataclass
class RunningService:
    """One service serving in this process: its API (mutual TLS) and ops listener (clear)."""

    name: str
    env: dict[str, str]
    server: TestServer
    ops_server: TestServer

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def ops_url(self) -> str:
        return str(self.ops_server.make_url("")).rstrip("/")

    @property
    def names(self) -> AmqpNames:
        return AmqpNames.from_env(self.env)

    @property
    def database_url(self) -> str:
        return service_database_url(self.env, self.name)

    async def close(self) -> None:
        """Stop serving (the app's clean-up runs: consumers, relay and pools stop)."""
        await self.ops_server.close()
        await self.server.close()


async def start_service(
    name: str, env: dict[str, str], *, port: int | None = None
) -> RunningService:
    """Migrate ``name``'s database and serve the service with the settings of ``env``, on
    ``port`` if given (a restart on the same port) else on a free one."""
    await migrate_all(env, [name])
    app_module = importlib.import_module(f"services.{name}.app")
    settings = importlib.import_module(f"services.{name}.settings").Settings
    app = app_module.create_app(settings.from_env(env))
    server = await serve(app, port=port)
    try:
        ops_server = await serve_ops(app)
    except BaseException:
        await server.close()
        raise
    return RunningService(name, env, server, ops_server)


@dataclass
class Services:
    """A running in-process stack: its environment, a session that presents an allowed
    caller's certificate, and calls that name the service (``call("GET", "issuer", path)``)."""

    env: dict[str, str]
    running: dict[str, RunningService]
    session: aiohttp.ClientSession
    urls: dict[str, str] = field(init=False)
    # Each service's ops listener (/healthz, /readyz, /metrics in clear).
    ops: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.urls = {name: service.url for name, service in self.running.items()}
        self.ops = {name: service.ops_url for name, service in self.running.items()}

    def database_url(self, service: str) -> str:
        return service_database_url(self.env, service)

    async def call(self, method: str, service: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        """(status, JSON body or None) of one request; ``kwargs`` as aiohttp takes them."""
        async with self.session.request(method, self.urls[service] + path, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)

    async def ok(self, method: str, service: str, path: str, **kwargs: Any) -> Any:
        """The JSON body of a call that must answer 200."""
        status, body = await self.call(method, service, path, **kwargs)
        assert status == 200, (method, service, path, body)
        return body

    async def tenant(self, quota: int = 600, **fields: Any) -> str:
        """A new tenant (keys service), with a quota of ``quota`` opaque tokens per owner."""
        name = tenant_id()
        await self.ok(
            "POST", "keys", "/internal/tenants", json={"id": name, "token_quota": quota, **fields}
        )
        return name

    async def token(
        self, tenant: str, subject: str = "alice", kind: str = "opaque", **fields: Any
    ) -> dict[str, Any]:
        """``{"token": TokenRecord, "value": secret}`` of a token the issuer made."""
        made: dict[str, Any] = await self.ok(
            "POST", "issuer", "/internal/tokens", json=token_body(tenant, subject, kind, **fields)
        )
        return made

    async def jwt(self, tenant: str, username: str = "alice", **fields: Any) -> dict[str, Any]:
        """The issuer's answer to a Tapis JWT create (``refresh=True`` for a pair)."""
        made: dict[str, Any] = await self.ok(
            "POST", "issuer", "/internal/jwt", json=jwt_body(tenant, username, **fields)
        )
        return made

    async def authenticates(self, value: str) -> bool:
        """Whether the issuer takes ``value`` as a credential right now."""
        status, _ = await self.call(
            "POST", "issuer", "/internal/authenticate", json={"token": value}
        )
        return status == 200


@asynccontextmanager
async def running_stack(
    tessera_env: dict[str, str],
    services: Sequence[str] = SERVICES,
    *,
    private: bool = True,
    **settings: str,
) -> AsyncIterator[Services]:
    """Start ``services`` (in :data:`SERVICES` order) on an environment of their own with
    ``settings`` added (with ``private=False``: on ``tessera_env``'s databases and names, to
    start a service again on the state an earlier run left); stop them all at the end,
    whatever happened."""
    env = private_env(tessera_env, **settings) if private else {**tessera_env, **settings}
    started = [name for name in SERVICES if name in services]
    for name in SERVICES:
        key = f"TESSERA_{name.upper()}_URL"
        if name in started:
            port = free_port_block(1)
            env[key] = f"https://127.0.0.1:{port}"
            env[f"TESSERA_{name.upper()}_PORT"] = str(port)
        elif key not in settings:
            env[key] = NOWHERE
    async with AsyncExitStack() as stack:
        running = {}
        for name in started:
            service = await start_service(name, env, port=int(env[f"TESSERA_{name.upper()}_PORT"]))
            stack.push_async_callback(service.close)
            running[name] = service
        for name in started:
            for consumer in CONSUMERS.get(name, ()):
                await wait_consuming(env, consumer)
        session = await stack.enter_async_context(allowed_session(env))
        yield Services(env, running, session)
