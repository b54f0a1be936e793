"""Real keys, issuer and revocation services, in-process, each on a database of its own."""

from __future__ import annotations

import importlib
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from services.cli import migrate_all
from tests.conftest import free_port_block
from tests.integration.revocation_support import wait_consuming
from tests.tls import allowed_session, serve, serve_ops


@dataclass
class Services:
    env: dict[str, str]
    urls: dict[str, str]
    session: aiohttp.ClientSession
    # Each service's ops listener (/healthz, /readyz, /metrics in clear).
    ops: dict[str, str] = field(default_factory=dict)

    async def call(self, method: str, service: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.request(method, self.urls[service] + path, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)

    async def tenant(self, quota: int = 600) -> str:
        name = f"t{secrets.token_hex(4)}"
        status, _ = await self.call(
            "POST", "keys", "/internal/tenants", json={"id": name, "token_quota": quota}
        )
        assert status == 200
        return name


@asynccontextmanager
async def running_services(tessera_env: dict[str, str], **extra: str) -> AsyncIterator[Services]:
    tag = secrets.token_hex(3)
    base = urlsplit(tessera_env["TESSERA_DATABASE_URL"])
    prefix = tessera_env["TESSERA_DATABASE_PREFIX"]
    env = dict(tessera_env)
    env.update(
        TESSERA_AMQP_EXCHANGE=f"{tessera_env['TESSERA_AMQP_EXCHANGE']}.{tag}",
        TESSERA_AMQP_DLX=f"{tessera_env['TESSERA_AMQP_DLX']}.{tag}",
        TESSERA_AMQP_QUEUE_PREFIX=f"{tessera_env['TESSERA_AMQP_QUEUE_PREFIX']}{tag}.",
    )
    for service in ("keys", "issuer", "revocation"):
        env[f"TESSERA_{service.upper()}_DATABASE_URL"] = urlunsplit(
            base._replace(path=f"/{prefix}_{service}_{tag}")
        )
    env.update(extra)
    await migrate_all(env, ["keys", "issuer", "revocation"])
    for service in ("keys", "issuer", "revocation"):
        port = free_port_block(1)
        env[f"TESSERA_{service.upper()}_URL"] = f"https://127.0.0.1:{port}"
        env[f"TESSERA_{service.upper()}_PORT"] = str(port)
    async with AsyncExitStack() as stack:
        # Keys first: the others ask it for tenants as soon as they serve.
        ops = {}
        for service in ("keys", "issuer", "revocation"):
            app_module = importlib.import_module(f"services.{service}.app")
            settings = importlib.import_module(f"services.{service}.settings").Settings
            app = app_module.create_app(settings.from_env(env))
            server = await serve(app, port=int(env[f"TESSERA_{service.upper()}_PORT"]))
            stack.push_async_callback(server.close)
            ops_server = await serve_ops(app)
            stack.push_async_callback(ops_server.close)
            ops[service] = str(ops_server.make_url("")).rstrip("/")
        # Consumers declare their queues in the background once serving: an event sent
        # before its queue is bound would be lost to the test.
        for consumer in ("issuer.on_token_revoked", "revocation.on_key_revoked"):
            await wait_consuming(env, consumer)
        session = await stack.enter_async_context(allowed_session(env))
        urls = {s: env[f"TESSERA_{s.upper()}_URL"] for s in ("keys", "issuer", "revocation")}
        yield Services(env, urls, session, ops)
