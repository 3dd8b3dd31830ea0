"""Worker slots: ``--concurrent`` bounds the reconciles of a kind that *work*; one that
only waits (a Kustomization's health check) gives its slot back while it waits.

Flux's controllers hold a worker for the whole reconcile, health wait included: with
``--concurrent 10`` and Deployments that take seconds to roll out, ten waits stall every
other object of the kind while the machine idles. Here a reconcile that enters
:func:`waiting` hands its slot to the next key and takes a slot again (FIFO with the
others) before it does more work. How many may wait at once is bounded too
(:data:`WAITING_PER_SLOT` per slot): a wait holds its objects in memory and polls the
API server.

The slot of the running reconcile is found through a context variable, so reconcile
code only calls ``async with waiting():``; outside the runtime (unit tests, one-shot
commands) that is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar

#: Reconciles that may wait at once, per working slot.
WAITING_PER_SLOT = 10


class Slots:
    """The slots of one kind: ``working`` reconciles at work, ``waiting`` more parked."""

    def __init__(self, working: int, waiting: int | None = None) -> None:
        self.working = max(1, working)
        self._work = asyncio.Semaphore(self.working)
        self._wait = asyncio.Semaphore(waiting if waiting is not None
                                       else self.working * WAITING_PER_SLOT)
        #: Reconciles parked in :func:`waiting` right now (for metrics and tests).
        self.parked = 0

    async def take(self) -> Slot:
        """Wait for a working slot; the caller must :meth:`Slot.close` it."""
        await self._work.acquire()
        return Slot(self)


class Slot:
    """One reconcile's hold on its kind's :class:`Slots`."""

    def __init__(self, slots: Slots) -> None:
        self.slots = slots
        self.held = True

    def close(self) -> None:
        """Give the working slot back (when held); safe to call twice."""
        if self.held:
            self.held = False
            self.slots._work.release()


_current: ContextVar[Slot | None] = ContextVar("ocigitops_slot", default=None)


def bind(slot: Slot) -> None:
    """Make ``slot`` the running task's slot (called by the runtime in each task)."""
    _current.set(slot)


@contextlib.asynccontextmanager
async def waiting() -> AsyncIterator[None]:
    """Give the running reconcile's working slot back for the block, which must only wait
    (no writes, no heavy work); take one again afterwards, before anything else runs."""
    slot = _current.get()
    if slot is None or not slot.held:
        yield
        return
    slots = slot.slots
    await slots._wait.acquire()
    slot.close()
    slots.parked += 1
    try:
        yield
    except asyncio.CancelledError:
        # Stopping (shutdown, lost leadership): no more work follows, so no slot is
        # taken again; waiting for one here could hang the shutdown.
        slots.parked -= 1
        slots._wait.release()
        raise
    except BaseException:
        await _resume(slot)  # the reconcile goes on to report the failure: work
        raise
    await _resume(slot)


async def _resume(slot: Slot) -> None:
    slots = slot.slots
    slots.parked -= 1
    slots._wait.release()
    # Cancelled here, the slot stays given back (``held`` is False): nothing leaks.
    await slots._work.acquire()
    slot.held = True
