"""Helpers for the revocation and subscriber tests: a real revocation service, in-process
(started by the harness, tests/harness.py), and its revoke call.

Each service gets its own database and its own exchange and queue names, so tests never see
each other's sequence numbers or events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from shared.settings import AmqpNames
from tests.conftest import private_env as session_private_env
from tests.harness import NOWHERE, RunningService, start_service, wait_consuming


def private_env(tessera_env: dict[str, str], **extra: str) -> dict[str, str]:
    """An environment of one test's own for a revocation service alone: no issuer listens
    (the jwt selector needs none) unless ``extra`` says where one is."""
    return session_private_env(tessera_env, **{"TESSERA_ISSUER_URL": NOWHERE, **extra})


@dataclass
class RevocationService:
    """A revocation service serving in this process."""

    running: RunningService

    @property
    def env(self) -> dict[str, str]:
        return self.running.env

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def revocations_url(self) -> str:
        return f"{self.url}/internal/revocations"

    @property
    def names(self) -> AmqpNames:
        return self.running.names

    async def close(self) -> None:
        await self.running.close()

    async def wait_consuming(self, consumer: str, timeout: float = 10.0) -> None:
        """Wait until the service's durable queue ``consumer`` exists, so events reach it."""
        await wait_consuming(self.env, consumer, timeout)


async def start_revocation(env: dict[str, str], port: int | None = None) -> RevocationService:
    """Migrate the service's database and serve it on a local port (the same one if given)."""
    return RevocationService(await start_service("revocation", env, port=port))


async def revoke(
    session: aiohttp.ClientSession,
    service: RevocationService | RunningService,
    body: dict[str, Any],
) -> tuple[int, Any]:
    """(status, body) of a revoke request to the revocation service."""
    async with session.post(f"{service.url}/internal/revocations", json=body) as resp:
        return resp.status, await resp.json()
