"""The keys tests' helpers: a real keys service alone, in-process (tests/harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from shared.subscriber import InvalidToken, Subscriber
from tests.harness import running_stack


@asynccontextmanager
async def running_keys(env: dict[str, str]) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """Start the keys service alone (the harness's) on ``env``; yield its URL and a session.

    ``env`` is used as it is (its databases and names, usually from ``private_env``), so a
    test can restart the service on the same database with other settings."""
    async with running_stack(env, ("keys",), private=False) as stack:
        yield stack.urls["keys"], stack.session


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
