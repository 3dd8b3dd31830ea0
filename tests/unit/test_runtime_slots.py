"""Worker slots (:mod:`ocigitops.puller.runtime.slots`): ``--concurrent`` bounds the
reconciles at work; one inside ``waiting()`` lets another start and takes a slot again
before it continues; the number waiting is bounded; cancellation leaks no slot."""

from __future__ import annotations

import asyncio

import pytest

from ocigitops.puller.runtime.slots import Slots, bind, waiting

pytestmark = pytest.mark.unit


def test_waiting_gives_the_slot_to_the_next_reconcile() -> None:
    async def run() -> list[str]:
        slots = Slots(1)
        order: list[str] = []
        release = asyncio.Event()

        async def waits() -> None:
            bind(slot_a)
            order.append("a works")
            async with waiting():
                order.append("a waits")
                await release.wait()
            order.append("a works again")
            slot_a.close()

        slot_a = await slots.take()
        task = asyncio.create_task(waits())
        await asyncio.sleep(0)
        slot_b = await asyncio.wait_for(slots.take(), 1)  # free while a waits
        order.append("b works")
        release.set()
        await asyncio.sleep(0.01)
        assert "a works again" not in order  # b holds the only slot
        slot_b.close()
        await asyncio.wait_for(task, 1)
        return order

    assert asyncio.run(run()) == ["a works", "a waits", "b works", "a works again"]


def test_waiting_is_bounded_and_outside_the_runtime_a_no_op() -> None:
    async def run() -> None:
        async with waiting():  # no slot bound: nothing to give back
            pass
        slots = Slots(2, waiting=1)
        s1, s2 = await slots.take(), await slots.take()
        gate = asyncio.Event()

        async def park(slot: object) -> None:
            bind(slot)  # type: ignore[arg-type]
            async with waiting():
                await gate.wait()

        t1 = asyncio.create_task(park(s1))
        await asyncio.sleep(0)
        assert slots.parked == 1
        t2 = asyncio.create_task(park(s2))
        await asyncio.sleep(0.01)
        assert slots.parked == 1  # the second waits for a waiting place, holding its slot
        s3 = await asyncio.wait_for(slots.take(), 1)  # the one s1 gave back
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(slots.take(), 0.05)
        s3.close()
        gate.set()
        await asyncio.wait_for(asyncio.gather(t1, t2), 1)
        assert s1.held and s2.held and slots.parked == 0

    asyncio.run(run())


def test_cancelled_while_waiting_leaks_no_slot() -> None:
    async def run() -> None:
        slots = Slots(1)
        slot = await slots.take()

        async def park() -> None:
            bind(slot)
            async with waiting():
                await asyncio.sleep(10)

        task = asyncio.create_task(park())
        await asyncio.sleep(0.01)
        other = await slots.take()  # holds the only slot: the cancelled one cannot get it
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        other.close()
        slot.close()  # the runtime's finally: not held, nothing released twice
        a = await asyncio.wait_for(slots.take(), 1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(slots.take(), 0.05)
        a.close()

    asyncio.run(run())
