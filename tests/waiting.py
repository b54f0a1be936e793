"""Waiting in tests without a fixed sleep: poll a condition until it holds, with a deadline.

A fixed ``sleep`` either wastes time (when the thing is done early) or fails the test on a slow
machine (when it is not done yet). Tests wait for the *condition* instead — the token refused,
the row written, the task idle — through :func:`wait_for` (coroutines) or :func:`wait_until`
(plain functions and threads); when time itself is what the code under test measures, a
:class:`FakeClock` moves it. ``tests/unit/test_no_sleep.py`` keeps it that way.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

# How often a condition is polled: often enough that a test waits at most this long past the
# moment it holds, seldom enough that polling does not load the machine.
POLL_INTERVAL = 0.05


def _failure(what: str, timeout: float, last: object) -> AssertionError:
    return AssertionError(f"not within {timeout}s: {what} (last seen: {last!r})")


async def wait_for(
    condition: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 10.0,
    what: str = "the condition",
    interval: float = POLL_INTERVAL,
) -> T:
    """Poll ``condition`` (a function or a coroutine function) until it returns something true,
    and return that; fail the test (``AssertionError`` naming ``what``) after ``timeout``
    seconds. An exception raised by ``condition`` fails at once: put assertions that must hold
    on every poll inside it."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, value)
        await asyncio.sleep(interval)


def wait_until(
    condition: Callable[[], T],
    *,
    timeout: float = 10.0,
    what: str = "the condition",
    interval: float = POLL_INTERVAL,
) -> T:
    """:func:`wait_for` for synchronous tests and threads: blocks this thread between polls."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, value)
        time.sleep(interval)


def parked(method: Callable[..., Awaitable[Any]]) -> bool:
    """Whether a task running the bound coroutine method ``method`` (``relay._run``) is idle
    in an ``asyncio.Event.wait()`` it awaits itself (not one of a function it calls), i.e.
    waiting to be woken: the state a test puts a loop in before it wakes, cancels or closes
    it. Poll it with :func:`wait_for`."""
    owner, code = getattr(method, "__self__", None), method.__code__
    for task in asyncio.all_tasks():
        coro: Any = task.get_coro()
        frame = getattr(coro, "cr_frame", None)
        if frame is None or coro.cr_code is not code or frame.f_locals.get("self") is not owner:
            continue
        awaited = coro.cr_await
        if inspect.iscoroutine(awaited) and awaited.cr_code is asyncio.Event.wait.__code__:
            return True
    return False


class FakeClock:
    """A clock that moves only when told: stands in for ``time.monotonic`` / ``time.time``
    (``monkeypatch.setattr(module, "time", clock)``) so a TTL can pass without waiting."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self.now += seconds
