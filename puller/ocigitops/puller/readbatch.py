"""Reads of objects of one kind in one namespace, coalesced into one request.

Health checks poll. With hundreds of Kustomizations waiting at once (their worker slots
given back: :mod:`ocigitops.puller.runtime.slots`), one GET per object per poll would be
hundreds of requests a second, each costing the API server and this process a request's
work. Reads that arrive within :attr:`BatchReader.window` seconds for the same
(apiVersion, kind, namespace, impersonated user) are served together: by GETs when they
are few, else by one paged LIST of the namespace, the way Flux's kstatus poller reads
through a LIST-backed cache. A LIST the impersonated user may not do falls back to GETs,
so a tenant's permissions decide what it can see either way.

Written here: the client-side informer caches of client-go have no asyncio counterpart
in lightkube, and a cache of every object of every applied kind would cost far more
memory than these short-lived batches.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ocigitops.puller.kube import DynamicClient, KubeError

#: (apiVersion, kind, namespace, impersonated user)
GroupKey = tuple[str, str, str, str | None]


class BatchReader:
    """``await reader.get(api_version, kind, name, namespace, impersonate=...)``: the
    object or None, as :meth:`DynamicClient.get`, with concurrent reads coalesced."""

    def __init__(self, dyn: DynamicClient, *, window: float = 0.05, min_list: int = 3,
                 page: int = 500, max_pages: int = 10, parallel_gets: int = 8) -> None:
        self.dyn = dyn
        self.window = window
        #: Fewer names than this in a batch are read by GET.
        self.min_list = min_list
        self.page = page
        #: A namespace holding more than ``page * max_pages`` objects of the kind: the
        #: names not found by then are read by GET rather than paging further.
        self.max_pages = max_pages
        self.parallel_gets = parallel_gets
        self._pending: dict[GroupKey, dict[str, list[asyncio.Future[dict[str, Any] | None]]]] \
            = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: Requests made, by method (``get``, ``list``): for tests and metrics.
        self.requests: dict[str, int] = {"get": 0, "list": 0}

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None, *, impersonate: str | None = None,
                  ) -> dict[str, Any] | None:
        """The object, or None when it does not exist (KubeError as the client raises)."""
        loop = asyncio.get_running_loop()
        key: GroupKey = (api_version, kind, namespace or "", impersonate)
        batch = self._pending.get(key)
        if batch is None:
            batch = self._pending[key] = {}
            loop.call_later(self.window, self._start, key)
        fut: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        batch.setdefault(name, []).append(fut)
        return await fut

    def _start(self, key: GroupKey) -> None:
        batch = self._pending.pop(key, None)
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._flush(key, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, key: GroupKey,
                     batch: dict[str, list[asyncio.Future[dict[str, Any] | None]]]) -> None:
        live = {n: fs for n, fs in batch.items() if any(not f.done() for f in fs)}
        if not live:
            return  # every reader gave up (cancelled) meanwhile
        try:
            found = await self._read(key, sorted(live))
        except Exception as e:
            for futs in live.values():
                for f in futs:
                    if not f.done():
                        f.set_exception(e)
            return
        for name, futs in live.items():
            for f in futs:
                if not f.done():
                    f.set_result(found.get(name))

    async def _read(self, key: GroupKey, names: list[str]) -> dict[str, dict[str, Any] | None]:
        api_version, kind, namespace, impersonate = key
        if len(names) < self.min_list:
            return await self._gets(key, names)
        found: dict[str, dict[str, Any] | None] = {}
        want = set(names)
        token: str | None = None
        try:
            for _ in range(self.max_pages):
                self.requests["list"] += 1
                items, token = await self.dyn.list_page(
                    api_version, kind, namespace or None, limit=self.page, cont=token,
                    impersonate=impersonate)
                for item in items:
                    name = str((item.get("metadata") or {}).get("name", ""))
                    if name in want:
                        # List items of built-in kinds carry neither: health() needs kind.
                        item.setdefault("apiVersion", api_version)
                        item.setdefault("kind", kind)
                        found[name] = item
                if not token or len(found) == len(want):
                    break
        except KubeError as e:
            if e.status not in (401, 403, 405):
                raise
            return await self._gets(key, names)  # may GET, may not LIST: ask one by one
        if token and len(found) < len(want):
            found.update(await self._gets(key, sorted(want - set(found))))
        return found

    async def _gets(self, key: GroupKey, names: list[str],
                    ) -> dict[str, dict[str, Any] | None]:
        api_version, kind, namespace, impersonate = key
        sem = asyncio.Semaphore(self.parallel_gets)

        async def one(name: str) -> tuple[str, dict[str, Any] | None]:
            async with sem:
                self.requests["get"] += 1
                return name, await self.dyn.get(api_version, kind, name, namespace or None,
                                                impersonate=impersonate)

        return dict(await asyncio.gather(*(one(n) for n in names)))
