"""Helpers for the revocation and subscriber tests: a real revocation service, in-process.

Each service gets its own database and its own exchange and queue names, so tests never see
each other's sequence numbers or events.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiohttp
from aiohttp.test_utils import TestServer

from services.cli import migrate_all
from services.revocation.app import create_app
from services.revocation.settings import Settings
from shared.settings import AmqpNames
from tests.tls import serve
from tests.waiting import wait_for


def private_env(tessera_env: dict[str, str], **extra: str) -> dict[str, str]:
    """The session environment with a database and broker names private to one test."""
    tag = secrets.token_hex(3)
    base = urlsplit(tessera_env["TESSERA_DATABASE_URL"])
    prefix = tessera_env["TESSERA_DATABASE_PREFIX"]
    env = dict(tessera_env)
    env.update(
        TESSERA_REVOCATION_DATABASE_URL=urlunsplit(base._replace(path=f"/{prefix}_rev_{tag}")),
        TESSERA_AMQP_EXCHANGE=f"{tessera_env['TESSERA_AMQP_EXCHANGE']}.{tag}",
        TESSERA_AMQP_DLX=f"{tessera_env['TESSERA_AMQP_DLX']}.{tag}",
        TESSERA_AMQP_QUEUE_PREFIX=f"{tessera_env['TESSERA_AMQP_QUEUE_PREFIX']}{tag}.",
        # Nothing listens here unless a test says otherwise: the jwt selector needs no issuer.
        TESSERA_ISSUER_URL="https://127.0.0.1:9",
    )
    env.update(extra)
    return env


@dataclass
class RevocationService:
    server: TestServer
    env: dict[str, str]

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def revocations_url(self) -> str:
        return f"{self.url}/internal/revocations"

    @property
    def names(self) -> AmqpNames:
        return AmqpNames.from_env(self.env)

    async def close(self) -> None:
        await self.server.close()

    async def wait_consuming(self, consumer: str, timeout: float = 10.0) -> None:
        """Wait until the service's durable queue ``consumer`` exists, so events reach it."""
        await wait_consuming(self.env, consumer, timeout)


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


async def start_revocation(env: dict[str, str], port: int | None = None) -> RevocationService:
    """Migrate the service's database and serve it on a local port (the same one if given)."""
    await migrate_all(env, ["revocation"])
    server = await serve(create_app(Settings.from_env(env)), port=port)
    return RevocationService(server, env)


def jwt_body(
    tenant: str = "acme",
    *,
    jti: str | None = None,
    subject: str = "alice",
    expires_in: float = 3600,
    **extra: Any,
) -> dict[str, Any]:
    """A revoke request for a JWT the caller has verified."""
    expires_at = datetime.now(UTC) + timedelta(seconds=expires_in)
    return {
        "tenant": tenant,
        "jwt": {
            "jti": jti or str(uuid.uuid4()),
            "subject": subject,
            "expires_at": expires_at.isoformat(),
        },
        **extra,
    }


async def revoke(
    session: aiohttp.ClientSession, service: RevocationService, body: dict[str, Any]
) -> tuple[int, Any]:
    async with session.post(service.revocations_url, json=body) as resp:
        return resp.status, await resp.json()
