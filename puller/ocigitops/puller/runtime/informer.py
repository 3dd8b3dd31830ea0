"""List-and-watch informers over lightkube's async client.

An informer keeps a cache of one resource kind (all namespaces, one namespace, or a label
selector shard) and calls a handler for every add, update and delete. It lists, then
watches from the list's resourceVersion; when the watch fails with 410 Gone (history
compacted) or any other error it relists after a bounded backoff, and the relist emits
the differences so no event is lost.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

log = logging.getLogger("ocigitops.informer")

Key = tuple[str, str]
Handler = Callable[[str, Any | None, Any], None]


def key_of(obj: Any) -> Key:
    """``(namespace, name)`` of a lightkube object."""
    md = obj.metadata
    return (md.namespace or "", md.name or "")


@dataclass
class InformerStats:
    """Counters for tests and metrics."""

    lists: int = 0
    watches: int = 0
    relists_410: int = 0
    errors: int = 0


class Informer:
    """Cache and event source for one resource kind."""

    def __init__(self, client: AsyncClient, resource: Any, handler: Handler, *,
                 namespace: str | None = None, labels: dict[str, Any] | None = None,
                 server_timeout: int = 300, max_backoff: float = 30.0) -> None:
        self._client = client
        self._resource = resource
        self._handler = handler
        self._namespace = namespace
        self._labels = labels
        self._server_timeout = server_timeout
        self._max_backoff = max_backoff
        self._cache: dict[Key, Any] = {}
        self.synced = asyncio.Event()
        self.stats = InformerStats()

    def get(self, namespace: str, name: str) -> Any | None:
        """The cached object, or None."""
        return self._cache.get((namespace, name))

    def items(self) -> list[Any]:
        """Every cached object."""
        return list(self._cache.values())

    def _emit(self, kind: str, old: Any | None, new: Any) -> None:
        try:
            self._handler(kind, old, new)
        except Exception:  # a handler bug must not stop the informer
            log.exception("informer handler failed", extra={"event": kind})

    async def _list(self) -> str:
        ns = self._namespace if self._namespace else "*"
        it = self._client.list(self._resource, namespace=ns, labels=self._labels)
        fresh: dict[Key, Any] = {}
        async for obj in it:
            fresh[key_of(obj)] = obj
        self.stats.lists += 1
        for k, obj in fresh.items():
            old = self._cache.get(k)
            if old is None:
                self._emit("ADDED", None, obj)
            elif old.metadata.resourceVersion != obj.metadata.resourceVersion:
                self._emit("MODIFIED", old, obj)
        for k, old in list(self._cache.items()):
            if k not in fresh:
                self._emit("DELETED", old, old)
        self._cache = fresh
        return str(it.resourceVersion)

    async def _watch(self, rv: str) -> None:
        ns = self._namespace if self._namespace else "*"
        self.stats.watches += 1
        async for kind, obj in self._client.watch(
                self._resource, namespace=ns, labels=self._labels,
                resource_version=rv, server_timeout=self._server_timeout):
            k = key_of(obj)
            if kind == "DELETED":
                old = self._cache.pop(k, obj)
                self._emit("DELETED", old, obj)
            elif kind in ("ADDED", "MODIFIED"):
                old = self._cache.get(k)
                self._cache[k] = obj
                self._emit("ADDED" if old is None else "MODIFIED", old, obj)

    async def run(self) -> None:
        """List and watch until cancelled."""
        failures = 0
        while True:
            try:
                rv = await self._list()
                self.synced.set()
                failures = 0
                await self._watch(rv)
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                if e.status.code == 410:
                    self.stats.relists_410 += 1
                    log.info("watch expired (410), relisting")
                    continue
                failures += 1
                self.stats.errors += 1
                log.warning("list/watch failed", extra={"error": str(e.status.message)})
            except Exception as e:  # connection loss, API server restart
                failures += 1
                self.stats.errors += 1
                log.warning("list/watch failed", extra={"error": f"{type(e).__name__}: {e}"})
            delay = min(self._max_backoff, 0.5 * 2 ** min(failures, 10))
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
