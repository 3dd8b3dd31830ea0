"""Work queue semantics (client-go's): de-duplication, dirty re-queue, delays, backoff."""

from __future__ import annotations

import asyncio

import pytest

from ocigitops.puller.runtime.queue import ShutDown, WorkQueue, jittered

pytestmark = pytest.mark.unit


def test_dedupe_and_dirty_requeue() -> None:
    async def run() -> list[str]:
        q: WorkQueue[str] = WorkQueue()
        q.add("a")
        q.add("a")
        q.add("b")
        assert q.depth == 2
        first = await q.get()
        q.add(first)  # changed while processing: not handed out twice
        second = await q.get()
        assert second != first and q.depth == 0
        q.done(first)  # dirty: back in the queue
        third = await q.get()
        q.done(second)
        q.done(third)
        return [first, second, third]

    assert asyncio.run(run()) == ["a", "b", "a"]


def test_add_after_keeps_the_earliest_schedule() -> None:
    async def run() -> float:
        q: WorkQueue[str] = WorkQueue()
        loop = asyncio.get_running_loop()
        start = loop.time()
        q.add_after("k", 0.2)
        q.add_after("k", 5.0)  # later schedule ignored
        await q.get()
        return loop.time() - start

    assert 0.15 < asyncio.run(run()) < 1.0


def test_rate_limited_backoff_grows_and_forget_resets() -> None:
    async def run() -> None:
        q: WorkQueue[str] = WorkQueue(base_delay=0.01, max_delay=0.08)
        delays = [q.add_rate_limited("k") for _ in range(5)]
        assert delays[1] > delays[0] * 1.5
        assert max(delays) <= 0.08 * 1.1
        assert q.failures("k") == 5
        q.forget("k")
        assert q.failures("k") == 0 and q.backoff("k") == 0.01
        await asyncio.wait_for(q.get(), 1)

    asyncio.run(run())


def test_shutdown_wakes_workers() -> None:
    async def run() -> None:
        q: WorkQueue[str] = WorkQueue()
        waiter = asyncio.create_task(q.get())
        await asyncio.sleep(0.01)
        await q.shutdown()
        with pytest.raises(ShutDown):
            await asyncio.wait_for(waiter, 1)
        q.add("ignored")
        assert q.depth == 0

    asyncio.run(run())


def test_jitter_bounds() -> None:
    values = [jittered(100.0) for _ in range(200)]
    assert all(95.0 <= v <= 105.0 for v in values) and len(set(values)) > 1
