"""The tests' one way of waiting (tests/waiting.py) must wait for the condition, and fail."""

from __future__ import annotations

import asyncio

import pytest

from tests.waiting import FakeClock, parked, wait_for, wait_until


async def test_wait_for_returns_the_first_true_value_of_a_function_or_coroutine() -> None:
    polls = []

    def ready() -> str:
        polls.append(1)
        return "done" if len(polls) == 3 else ""

    assert await wait_for(ready, interval=0) == "done"
    assert len(polls) == 3

    async def at_once() -> int:
        return 7

    assert await wait_for(at_once) == 7


async def test_wait_for_fails_at_the_deadline_naming_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match=r"not within 0.05s: the answer \(last seen: 0\)"):
        await wait_for(lambda: 0, timeout=0.05, what="the answer")


def test_wait_until_polls_a_plain_function_and_fails_at_the_deadline() -> None:
    values = iter([None, None, 5])
    assert wait_until(lambda: next(values), interval=0) == 5
    with pytest.raises(AssertionError, match="the flag"):
        wait_until(lambda: False, timeout=0.05, what="the flag")


class Loop:
    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.wake = asyncio.Event()

    async def run(self) -> None:
        await self.starting()
        await self.wake.wait()

    async def starting(self) -> None:
        await self.started.wait()  # an event of a function it calls: not idle yet


async def test_parked_tells_a_loop_idle_on_its_own_event() -> None:
    loop, other = Loop(), Loop()
    task, other_task = asyncio.create_task(loop.run()), asyncio.create_task(other.run())
    try:
        assert not parked(loop.run)  # created, not yet running
        await asyncio.sleep(0)
        assert not parked(loop.run)  # waiting in starting()
        loop.started.set()
        await wait_for(lambda: parked(loop.run))
        assert not parked(other.run)  # another instance's task is not this one
        loop.wake.set()
        await task
        assert not parked(loop.run)
    finally:
        other_task.cancel()
        task.cancel()


def test_the_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(100.0)
    assert clock.monotonic() == clock.time() == 100.0
    clock.advance(2.5)
    assert clock.monotonic() == 102.5
