"""Helpers for the bus tests: a private database with the bus tables, and AMQP names."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from shared.db import BUS_MIGRATIONS, migrate
from shared.settings import AmqpNames
from tests.conftest import private_settings


async def bus_database(tessera_env: dict[str, str], name: str) -> str:
    """A fresh database holding only the bus tables; returns its URL."""
    base = urlsplit(tessera_env["TESSERA_DATABASE_URL"])
    url = urlunsplit(base._replace(path=f"/{tessera_env['TESSERA_DATABASE_PREFIX']}_{name}"))
    await migrate(url, [("bus", BUS_MIGRATIONS)])
    return url


def private_names(tessera_env: dict[str, str]) -> AmqpNames:
    """Names of this test alone, so queues and exchanges of other tests never interfere."""
    return AmqpNames.from_env(private_settings(tessera_env))


async def ends_within(stopping: Coroutine[Any, Any, None], seconds: float) -> bool:
    """Whether ``stopping`` (a stop() or close()) returns within ``seconds``; one that raises
    raises here. A hung one is cancelled, which cancels what it awaits once more, so the test
    does not hang too."""
    task = asyncio.create_task(stopping)
    done, _ = await asyncio.wait([task], timeout=seconds)
    if done:
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False
