"""The TTL cache in front of calls to other services."""

from __future__ import annotations

import asyncio

import pytest

import shared.cache
from shared.cache import TtlCache
from tests.waiting import FakeClock


class Source:
    def __init__(self, value: str | None = "v", fail: bool = False) -> None:
        self.calls = 0
        self.value = value
        self.fail = fail

    async def fetch(self) -> str | None:
        self.calls += 1
        await asyncio.sleep(0)  # a fetch takes at least a turn of the loop
        if self.fail:
            raise ConnectionError("down")
        return self.value


async def test_a_found_value_is_remembered_until_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(shared.cache, "time", clock)
    cache: TtlCache[str, str] = TtlCache(ttl=60)
    source = Source()
    assert await cache.get("t", source.fetch) == "v"
    clock.advance(59.9)
    assert await cache.get("t", source.fetch) == "v"
    assert source.calls == 1
    clock.advance(0.1)
    assert await cache.get("t", source.fetch) == "v"
    assert source.calls == 2


async def test_concurrent_misses_share_one_fetch() -> None:
    cache: TtlCache[str, str] = TtlCache(ttl=10)
    source = Source()
    assert await asyncio.gather(*(cache.get("t", source.fetch) for _ in range(20))) == ["v"] * 20
    assert source.calls == 1


@pytest.mark.parametrize("source", [Source(value=None), Source(fail=True)])
async def test_nothing_found_and_failures_are_not_remembered(source: Source) -> None:
    cache: TtlCache[str, str] = TtlCache(ttl=10)
    for _ in range(2):
        try:
            assert await cache.get("t", source.fetch) is None
        except ConnectionError:
            assert source.fail
    assert source.calls == 2


async def test_a_caller_that_goes_away_does_not_cancel_the_others() -> None:
    cache: TtlCache[str, str] = TtlCache(ttl=10)
    source = Source()
    first = asyncio.ensure_future(cache.get("t", source.fetch))
    second = asyncio.ensure_future(cache.get("t", source.fetch))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == "v"
    assert source.calls == 1
