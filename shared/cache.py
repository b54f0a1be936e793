"""A small time-to-live cache for values fetched from another service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Values fetched on a miss and kept for ``ttl`` seconds. Concurrent misses of one key share
    one fetch, so an entry expiring under load costs one call, not one per request. A fetch that
    raises is not remembered; one that returns None (nothing found) is remembered for
    ``negative_ttl`` seconds (0: not at all). At most ``max_entries`` keys are kept."""

    def __init__(self, ttl: float, max_entries: int = 10_000, *, negative_ttl: float = 0.0) -> None:
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max_entries = max_entries
        self._entries: dict[K, tuple[float, V | None]] = {}
        self._fetching: dict[K, asyncio.Future[V | None]] = {}

    async def get(self, key: K, fetch: Callable[[], Awaitable[V | None]]) -> V | None:
        """``key``'s value while fresh, else ``fetch()``'s: one fetch for all concurrent misses,
        which a caller cancelled while waiting does not cancel. Its exception reaches them all."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        fetching = self._fetching.get(key)
        if fetching is None:
            fetching = self._fetching[key] = asyncio.ensure_future(self._fetch(key, fetch))
            fetching.add_done_callback(lambda done: self._fetched(key, done))
        # Shielded: a caller that goes away does not cancel the others' fetch.
        return await asyncio.shield(fetching)

    async def _fetch(self, key: K, fetch: Callable[[], Awaitable[V | None]]) -> V | None:
        value = await fetch()
        ttl = self._ttl if value is not None else self._negative_ttl
        if ttl > 0:
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + ttl, value)
        return value

    def _fetched(self, key: K, done: asyncio.Future[V | None]) -> None:
        del self._fetching[key]
        if not done.cancelled():
            done.exception()  # retrieved here, so a fetch nobody awaits any more logs nothing
