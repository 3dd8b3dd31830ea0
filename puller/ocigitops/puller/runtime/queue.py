"""A work queue with client-go's semantics, on asyncio.

- A key is queued at most once; adding a queued key is a no-op.
- A key being processed is never handed to a second worker: adding it marks it dirty,
  and it is queued again when the worker calls :meth:`WorkQueue.done`.
- ``add_after`` schedules an add (interval requeues, with jitter chosen by the caller).
- ``add_rate_limited`` backs off per key exponentially (``retryInterval`` semantics) until
  :meth:`WorkQueue.forget` resets it after a success.

Written here because the controller is level-triggered and needs exactly these guarantees;
kopf's event handlers do not give them (docs/architecture.md decision 4).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class ShutDown(Exception):
    """Raised by :meth:`WorkQueue.get` once the queue is shut down and drained."""


class WorkQueue(Generic[K]):
    """De-duplicating, delaying, rate-limiting queue of keys."""

    def __init__(self, *, base_delay: float = 1.0, max_delay: float = 300.0) -> None:
        self._queue: deque[K] = deque()
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._cond = asyncio.Condition()
        self._shutdown = False
        self.base_delay = base_delay
        self.max_delay = max_delay

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def depth(self) -> int:
        """Keys waiting (not counting those being processed or delayed)."""
        return len(self._queue)

    def _wake(self) -> None:
        async def notify() -> None:
            async with self._cond:
                self._cond.notify()

        asyncio.get_running_loop().create_task(notify())

    def add(self, key: K) -> None:
        """Queue ``key`` now (no-op when already queued; deferred while processing)."""
        if self._shutdown:
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.append(key)
        self._wake()

    def add_after(self, key: K, delay: float) -> None:
        """Queue ``key`` after ``delay`` seconds (an earlier pending schedule wins)."""
        if self._shutdown:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        existing = self._timers.get(key)
        if existing is not None and existing.when() <= loop.time() + delay:
            return
        if existing is not None:
            existing.cancel()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def backoff(self, key: K) -> float:
        """The delay the next :meth:`add_rate_limited` of ``key`` would use."""
        n = self._failures.get(key, 0)
        return min(self.max_delay, self.base_delay * float(2 ** min(n, 30)))

    def add_rate_limited(self, key: K) -> float:
        """Queue ``key`` after its exponential backoff (with 10% jitter); returns the delay."""
        delay = self.backoff(key)
        self._failures[key] = self._failures.get(key, 0) + 1
        delay *= 1 + random.uniform(-0.1, 0.1)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """Reset ``key``'s backoff (after a successful reconcile)."""
        self._failures.pop(key, None)

    def is_processing(self, key: K) -> bool:
        """A worker holds ``key`` (got, not yet done)."""
        return key in self._processing

    def failures(self, key: K) -> int:
        """How many consecutive rate-limited adds ``key`` has had."""
        return self._failures.get(key, 0)

    async def get(self) -> K:
        """Wait for the next key and mark it as processing."""
        async with self._cond:
            while not self._queue:
                if self._shutdown:
                    raise ShutDown
                await self._cond.wait()
            key = self._queue.popleft()
            self._queued.discard(key)
            self._processing.add(key)
            return key

    def done(self, key: K) -> None:
        """Mark ``key`` processed; re-queue it if it changed meanwhile."""
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    async def shutdown(self) -> None:
        """Stop accepting keys, cancel timers and wake every waiting worker."""
        self._shutdown = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        async with self._cond:
            self._cond.notify_all()


def jittered(interval: float, fraction: float = 0.05) -> float:
    """``interval`` +/- ``fraction`` (Flux's default interval jitter is 5%)."""
    return interval * (1 + random.uniform(-fraction, fraction))
