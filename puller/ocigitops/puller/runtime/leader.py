"""Leader election on a coordination.k8s.io/v1 Lease, as client-go does it.

The holder renews the Lease every ``retry_period``; a candidate takes it over once it has
not been renewed for ``lease_duration``. Every write carries the resourceVersion it read,
so two candidates can never both win (the loser gets a 409 Conflict). A leader that cannot
renew within ``renew_deadline`` steps down: its reconcilers stop before another replica's
can start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

log = logging.getLogger("ocigitops.leader")


def _now() -> datetime:
    # acquireTime/renewTime are MicroTime: the API server parses them with a layout that
    # requires exactly six fractional digits. lightkube serialises with isoformat(), which
    # drops the fraction when microsecond == 0 (once in a million writes the request would
    # be refused with 400), so never hand it a whole second.
    now = datetime.now(UTC)
    return now if now.microsecond else now.replace(microsecond=1)


class LeaderElector:
    """Acquire and hold one Lease; ``is_leader`` is set while we hold it."""

    def __init__(self, client: AsyncClient, namespace: str, name: str, identity: str, *,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0) -> None:
        self._client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.is_leader = asyncio.Event()
        self.lost = asyncio.Event()

    async def _try(self) -> bool:
        """One acquire-or-renew attempt; True when we hold the Lease afterwards."""
        now = _now()
        try:
            lease = await self._client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as e:
            if e.status.code != 404:
                raise
            lease = Lease(metadata=ObjectMeta(name=self.name, namespace=self.namespace),
                          spec=LeaseSpec(holderIdentity=self.identity,
                                         leaseDurationSeconds=int(self.lease_duration),
                                         acquireTime=now, renewTime=now, leaseTransitions=0))
            try:
                await self._client.create(lease)
                return True
            except ApiError as e2:
                if e2.status.code == 409:
                    return False
                raise
        spec = lease.spec or LeaseSpec()
        holder = spec.holderIdentity
        renewed = spec.renewTime or spec.acquireTime
        duration = timedelta(seconds=spec.leaseDurationSeconds or self.lease_duration)
        if holder != self.identity:
            if holder and renewed is not None and renewed + duration > now:
                return False  # someone else holds a live lease
            spec.holderIdentity = self.identity
            spec.acquireTime = now
            spec.leaseTransitions = (spec.leaseTransitions or 0) + 1
        spec.renewTime = now
        spec.leaseDurationSeconds = int(self.lease_duration)
        lease.spec = spec
        try:
            await self._client.replace(lease)  # carries resourceVersion: optimistic lock
            return True
        except ApiError as e:
            if e.status.code == 409:
                return False
            raise

    async def run(self, on_started: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Campaign until we lead, run ``on_started`` while leading, return when we lose."""
        leading_task: asyncio.Task[None] | None = None
        last_renew = 0.0
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    held = await self._try()
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning("lease attempt failed", extra={"error": str(e)})
                    held = False
                if held:
                    last_renew = loop.time()
                    if not self.is_leader.is_set():
                        log.info("became leader", extra={"lease": self.name,
                                                         "identity": self.identity})
                        self.is_leader.set()
                        leading_task = asyncio.create_task(on_started())
                elif self.is_leader.is_set() and loop.time() - last_renew > self.renew_deadline:
                    log.error("lost the lease: stepping down", extra={"lease": self.name})
                    self.is_leader.clear()
                    self.lost.set()
                    return
                await asyncio.sleep(self.retry_period)
        finally:
            if leading_task is not None:
                leading_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await leading_task
            if self.is_leader.is_set():
                # Graceful shutdown: hand the Lease back (client-go's ReleaseOnCancel) so a
                # standby replica takes over at once instead of after lease_duration.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(self.release()), 3.0)
                self.is_leader.clear()

    async def release(self) -> None:
        """Give up the Lease if we hold it: empty holder, 1 s duration."""
        lease = await self._client.get(Lease, self.name, namespace=self.namespace)
        spec = lease.spec or LeaseSpec()
        if spec.holderIdentity != self.identity:
            return
        spec.holderIdentity = None
        spec.leaseDurationSeconds = 1
        spec.renewTime = _now()
        lease.spec = spec
        await self._client.replace(lease)
        log.info("released the lease", extra={"lease": self.name})
