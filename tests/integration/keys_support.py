"""A real keys service for the keys tests, in-process, on a database of its own."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from services.cli import migrate_all
from services.keys.app import create_app
from services.keys.settings import Settings
from shared.subscriber import InvalidToken, Subscriber
from tests.tls import allowed_session, serve


def keys_env(tessera_env: dict[str, str], **extra: str) -> dict[str, str]:
    """The session environment with a keys database private to one test."""
    tag = secrets.token_hex(3)
    base = urlsplit(tessera_env["TESSERA_DATABASE_URL"])
    prefix = tessera_env["TESSERA_DATABASE_PREFIX"]
    env = dict(tessera_env)
    env["TESSERA_KEYS_DATABASE_URL"] = urlunsplit(base._replace(path=f"/{prefix}_keys_{tag}"))
    env.update(extra)
    return env


@asynccontextmanager
async def running_keys(env: dict[str, str]) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """Migrate, start the service, and yield its base URL and a client session."""
    await migrate_all(env, ["keys"])
    server = await serve(create_app(Settings.from_env(env)))
    try:
        async with allowed_session(env) as session:
            yield str(server.make_url("")).rstrip("/"), session
    finally:
        await server.close()


async def call(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with session.request(method, url, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None)


async def refusal(sub: Subscriber, token: str) -> str | None:
    """Why ``sub`` refuses ``token`` (the :class:`InvalidToken` reason), None if it verifies."""
    try:
        await sub.verify_jwt(token)
    except InvalidToken as exc:
        return exc.reason
    return None


async def refused_as(sub: Subscriber, token: str, reason: str | None) -> bool:
    """Whether ``sub`` refuses ``token`` for ``reason`` (None: verifies it), to poll for."""
    return await refusal(sub, token) == reason
