"""Smart batching: calls that arrive while earlier ones are in flight go out together.

A lone call is sent at once, so an idle service adds no latency. Under load, calls queue while
``max_in_flight`` batches are running and the next batch takes everything waiting (up to
``max_batch`` units of weight). Each caller gets its own result or its own exception; the batch
function decides what fails alone (return an exception in that caller's slot) and what fails the
whole batch (raise).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

BatchFunction = Callable[[list[T]], Awaitable[Sequence[R | Exception]]]


class Batcher(Generic[T, R]):
    """Runs submitted items through ``run`` in batches: at most ``max_in_flight`` at once, each
    of at most ``max_batch`` units of ``weight`` (a heavier item goes alone)."""

    def __init__(
        self,
        run: BatchFunction[T, R],
        *,
        max_batch: int,
        max_in_flight: int = 2,
        weight: Callable[[T], int] = lambda _: 1,
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._weight = weight
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        """The result of ``item``, run in whichever batch it lands in."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while self._queue and self._in_flight < self._max_in_flight:
            batch: list[tuple[T, asyncio.Future[R]]] = []
            weight = 0
            while self._queue:
                item, future = self._queue[0]
                if future.cancelled():  # its caller has gone: never run it
                    self._queue.popleft()
                    continue
                cost = self._weight(item)
                if batch and weight + cost > self._max_batch:
                    break
                self._queue.popleft()
                batch.append((item, future))
                weight += cost
            if not batch:
                return
            self._in_flight += 1
            task = asyncio.create_task(self._run_batch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        except BaseException:  # cancelled with the service: so are its callers
            for _, future in batch:
                future.cancel()
            raise
        else:
            for (_, future), result in zip(batch, results, strict=False):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            # Never leave a caller waiting, whatever went wrong above.
            for _, future in batch:
                if not future.done():
                    future.set_exception(RuntimeError("the batch ended without an answer"))
            self._in_flight -= 1
            self._dispatch()
