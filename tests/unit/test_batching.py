"""The smart batcher: lone calls go at once, queued calls share a batch, results stay apart."""

from __future__ import annotations

import asyncio

import pytest

from shared.batching import Batcher


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    async def run(self, items: list[int]) -> list[int | Exception]:
        self.batches.append(items)
        # In flight for a turn of the loop: callers submitted meanwhile queue behind it (the
        # order of the loop decides the batches, not how long a batch takes).
        await asyncio.sleep(0)
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


async def test_a_lone_call_is_sent_alone_and_at_once() -> None:
    recorder = Recorder()
    assert await Batcher(recorder.run, max_batch=8).submit(4) == 40
    assert recorder.batches == [[4]]


async def test_calls_queued_behind_a_full_pipeline_share_batches() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder.run, max_batch=8, max_in_flight=1)
    results = await asyncio.gather(
        *(batcher.submit(i) for i in range(0, 40, 2)), return_exceptions=True
    )
    assert results == [i * 10 for i in range(0, 40, 2)]
    assert recorder.batches[0] == [0]  # the first goes alone; the rest waited for it
    assert [len(b) for b in recorder.batches[1:]] == [8, 8, 3]
    assert sorted(i for batch in recorder.batches for i in batch) == list(range(0, 40, 2))


async def test_each_caller_gets_its_own_exception() -> None:
    batcher = Batcher(Recorder().run, max_batch=8, max_in_flight=1)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
    assert results[0] == 0 and results[2] == 20
    assert isinstance(results[1], ValueError) and str(results[1]) == "odd 1"
    assert isinstance(results[3], ValueError) and str(results[3]) == "odd 3"


async def test_a_failing_batch_fails_every_caller_in_it_and_the_batcher_goes_on() -> None:
    calls = 0

    async def run(items: list[int]) -> list[int | Exception]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database away")
        return items

    batcher = Batcher(run, max_batch=8, max_in_flight=1)
    with pytest.raises(ConnectionError):
        await batcher.submit(1)
    assert await batcher.submit(2) == 2


async def test_weights_bound_a_batch_and_a_heavy_item_still_goes_alone() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder.run, max_batch=4, max_in_flight=1, weight=lambda i: i)
    await asyncio.gather(*(batcher.submit(i) for i in (0, 2, 2, 6, 2)), return_exceptions=True)
    assert recorder.batches == [[0], [2, 2], [6], [2]]


async def test_a_cancelled_caller_is_never_run() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder.run, max_batch=8, max_in_flight=1)
    first = asyncio.ensure_future(batcher.submit(0))
    gone = asyncio.ensure_future(batcher.submit(2))
    stays = asyncio.ensure_future(batcher.submit(4))
    await asyncio.sleep(0)
    gone.cancel()
    assert await first == 0 and await stays == 40
    assert recorder.batches == [[0], [4]]


async def test_a_batch_answering_too_few_results_fails_the_rest_instead_of_hanging() -> None:
    async def short(items: list[int]) -> list[int | Exception]:
        return items[:1]

    batcher = Batcher(short, max_batch=8, max_in_flight=1)
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True), 5
    )
    assert results[:2] == [0, 1]  # 0 alone, then 1, 2 and 3 in one batch
    assert all(isinstance(r, RuntimeError) for r in results[2:])
