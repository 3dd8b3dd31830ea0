"""The controller process: informers, queues, workers, leader election, metrics, health.

One process runs both reconcilers (docs/architecture.md decision 1). Informers run on every
replica so a new leader starts warm; workers run only on the leader. A source that stores
a new revision wakes the Kustomizations that use it at once, and a Kustomization that
becomes Ready wakes those that depend on it, instead of waiting for their intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.generic_resource import create_namespaced_resource

from ocigitops.puller import conditions as cond
from ocigitops.puller import kustomization as ks_rec
from ocigitops.puller.api.meta import GROUP, RECONCILE_REQUESTED_AT, VERSION
from ocigitops.puller.cache import ArtifactCache
from ocigitops.puller.kube import DynamicClient
from ocigitops.puller.reconcile import Outcome
from ocigitops.puller.runtime.informer import Informer, Key
from ocigitops.puller.runtime.leader import LeaderElector
from ocigitops.puller.runtime.queue import ShutDown, WorkQueue, jittered
from ocigitops.puller.sources import oci as oci_rec

log = logging.getLogger("ocigitops.controller")

#: The Ready reason of a Kustomization waiting for its source or a ``dependsOn``.
DEPENDENCY_NOT_READY = "DependencyNotReady"

OCIRepositoryRes = create_namespaced_resource(GROUP, VERSION, "OCIRepository",
                                              "ocirepositories")
KustomizationRes = create_namespaced_resource(GROUP, VERSION, "Kustomization",
                                              "kustomizations")


@dataclass
class Options:
    """``ocigitops controller run`` flags."""

    kubeconfig: str | None = None
    concurrent: int = 4
    metrics_addr: str = ":8080"
    health_addr: str = ":9440"
    leader_elect: bool = False
    leader_namespace: str = "ocigitops-system"
    leader_name: str = "ocigitops-controller"
    watch_namespace: str | None = None
    watch_label_selector: str | None = None
    no_cross_namespace_refs: bool = False
    strict_substitution: bool = True
    cache_dir: str = "/tmp/ocigitops-cache"
    requeue_dependency: float = 30.0
    shutdown_timeout: float = 30.0


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the record's ``extra`` fields."""

    _skip = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                   time.gmtime(record.created)),
                               "level": record.levelname.lower(), "logger": record.name,
                               "msg": record.getMessage()}
        doc.update({k: v for k, v in vars(record).items() if k not in self._skip})
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(level: int = logging.INFO) -> None:
    """Structured JSON logs on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request at info: one line per HEAD per source per interval would
    # drown the controller's own messages. Debug level still shows them.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level <= logging.DEBUG
                                          else logging.WARNING)


class Metrics:
    """Prometheus metrics (reconcile duration, conditions, queue depth)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.duration = Histogram("ocigitops_reconcile_duration_seconds",
                                  "Reconcile duration", ["kind"], registry=self.registry)
        self.condition = Gauge("ocigitops_reconcile_condition",
                               "Condition status of reconciled objects",
                               ["kind", "name", "namespace", "type", "status"],
                               registry=self.registry)
        self.queue_depth = Gauge("ocigitops_workqueue_depth", "Keys waiting", ["kind"],
                                 registry=self.registry)

    def observe_conditions(self, kind: str, key: Key, conditions: list[dict[str, Any]]) -> None:
        """Export Ready's status as 1 for the current value, 0 for the others."""
        ready = cond.find(conditions, cond.READY)
        now = ready.get("status") if ready else cond.UNKNOWN
        for s in (cond.TRUE, cond.FALSE, cond.UNKNOWN):
            self.condition.labels(kind, key[1], key[0], cond.READY, s).set(1 if s == now else 0)

    def render(self) -> bytes:
        """Text exposition."""
        from prometheus_client import generate_latest

        out: bytes = generate_latest(self.registry)
        return out


def _serve_http(addr: str, routes: Mapping[str, Callable[[], tuple[int, bytes]]],
                ) -> ThreadingHTTPServer | None:
    if not addr or addr == "0":
        return None
    host, _, port = addr.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            route = routes.get(self.path.split("?")[0])
            code, body = route() if route else (404, b"not found\n")
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _interesting(kind: str, old: Any | None, new: Any) -> bool:
    """Flux's predicates: spec (generation) changes, reconcile requests, deletions."""
    if kind != "MODIFIED" or old is None:
        return kind == "ADDED"
    o, n = old.get("metadata") or {}, new.get("metadata") or {}
    return (o.get("generation") != n.get("generation")
            or (o.get("annotations") or {}).get(RECONCILE_REQUESTED_AT)
            != (n.get("annotations") or {}).get(RECONCILE_REQUESTED_AT)
            or bool(n.get("deletionTimestamp")) != bool(o.get("deletionTimestamp")))


class Controller:
    """The two reconcilers with their informers and queues."""

    def __init__(self, opts: Options, client: AsyncClient, dyn: DynamicClient) -> None:
        self.opts = opts
        self.client = client
        self.dyn = dyn
        self.cache = ArtifactCache(Path(opts.cache_dir))
        self.metrics = Metrics()
        self.sources: WorkQueue[Key] = WorkQueue(base_delay=1.0, max_delay=300.0)
        self.kustomizations: WorkQueue[Key] = WorkQueue(base_delay=1.0, max_delay=300.0)
        labels = _parse_selector(opts.watch_label_selector)
        self.source_informer = Informer(client, OCIRepositoryRes, self._on_source,
                                        namespace=opts.watch_namespace, labels=labels)
        self.ks_informer = Informer(client, KustomizationRes, self._on_kustomization,
                                    namespace=opts.watch_namespace, labels=labels)
        self.source_ctx = oci_rec.SourceContext(kube=dyn, cache=self.cache,
                                                per_host=max(1, opts.concurrent // 2))
        self.ks_ctx = ks_rec.KustomizeContext(kube=dyn, cache=self.cache,
                                              no_cross_namespace_refs=opts.no_cross_namespace_refs,
                                              strict_substitution=opts.strict_substitution)
        self.leading = not opts.leader_elect
        # Read at scrape time: exported from the start (a follower, or a leader that has
        # not finished a reconcile yet, has a series too) and never stale between
        # reconciles (a value set after each reconcile missed keys added since).
        for kind, queue in (("OCIRepository", self.sources),
                            ("Kustomization", self.kustomizations)):
            self.metrics.queue_depth.labels(kind).set_function(functools.partial(
                _depth, queue))

    def _on_source(self, kind: str, old: Any | None, new: Any) -> None:
        if _interesting(kind, old, new):
            self.sources.add(_key(new))

    def _on_kustomization(self, kind: str, old: Any | None, new: Any) -> None:
        if _interesting(kind, old, new):
            self.kustomizations.add(_key(new))

    def _waiting(self, obj: Any) -> bool:
        """A Kustomization parked on ``DependencyNotReady`` (its source or a dependency), or
        one being reconciled right now (it may be about to park: the add marks it dirty
        so it runs once more)."""
        ready = cond.find(list((obj.get("status") or {}).get("conditions") or []), cond.READY)
        return bool(ready and ready.get("reason") == DEPENDENCY_NOT_READY) \
            or self.kustomizations.is_processing(_key(obj))

    def _wake_users_of(self, source_key: Key, *, only_waiting: bool = False) -> None:
        for obj in self.ks_informer.items():
            ref = (obj.get("spec") or {}).get("sourceRef") or {}
            ns = ref.get("namespace") or _key(obj)[0]
            if ref.get("kind") == "OCIRepository" and (ns, ref.get("name")) == source_key \
                    and (not only_waiting or self._waiting(obj)):
                self.kustomizations.add(_key(obj))

    def _wake_dependents_of(self, ks_key: Key, *, only_waiting: bool = False) -> None:
        for obj in self.ks_informer.items():
            for dep in (obj.get("spec") or {}).get("dependsOn") or []:
                if ((dep.get("namespace") or _key(obj)[0]), dep.get("name")) \
                        == ks_key and (not only_waiting or self._waiting(obj)):
                    self.kustomizations.add(_key(obj))

    async def _handle(self, kind: str, key: Key, obj: Any) -> float | None:
        plain = dict(obj)
        if kind == "OCIRepository":
            out: Outcome = await oci_rec.reconcile(plain, self.source_ctx)
        else:
            out = await ks_rec.reconcile(plain, self.ks_ctx)
        api_version = oci_rec.API_VERSION
        if out.add_finalizer:
            fins = list((plain.get("metadata") or {}).get("finalizers") or [])
            await self.dyn.patch_metadata(api_version, kind, key[1], key[0],
                                          {"finalizers": [*fins, ks_rec.FINALIZER]})
        if out.remove_finalizer:
            fins = [f for f in (plain.get("metadata") or {}).get("finalizers") or []
                    if f != ks_rec.FINALIZER]
            await self.dyn.patch_metadata(api_version, kind, key[1], key[0],
                                          {"finalizers": fins})
            return None
        if out.status != (plain.get("status") or {}):
            await self.dyn.patch_status(api_version, kind, key[1], key[0], out.status)
        for type_, reason, message in out.events:
            await self.dyn.event(plain, type_, reason, message)
        conditions = list(out.status.get("conditions") or [])
        self.metrics.observe_conditions(kind, key, conditions)
        ready = cond.find(conditions, cond.READY) or {}
        # A source that is Ready without a new revision still wakes the Kustomizations
        # parked on it: after a restart (or on a new leader) the artifact cache starts
        # empty, a Kustomization reconciled before its source finds the artifact missing
        # and, without this, would wait a whole retryInterval for the same revision.
        if kind == "OCIRepository" and out.new_revision:
            self._wake_users_of(key)
        elif kind == "OCIRepository" and ready.get("status") == cond.TRUE:
            self._wake_users_of(key, only_waiting=True)
        if kind == "Kustomization" and not out.failed and out.events:
            self._wake_dependents_of(key)
        elif kind == "Kustomization" and ready.get("status") == cond.TRUE:
            self._wake_dependents_of(key, only_waiting=True)
        requeue: float | None = out.requeue_after
        if kind == "Kustomization" and ready.get("reason") == DEPENDENCY_NOT_READY \
                and requeue is not None:
            # Flux's --requeue-dependency: a missing dependency is polled at this period,
            # not at retryInterval (often the full interval); Options.requeue_dependency
            # was otherwise unused.
            requeue = min(requeue, self.opts.requeue_dependency)
        return requeue

    async def _worker(self, kind: str, queue: WorkQueue[Key], informer: Informer) -> None:
        while True:
            try:
                key = await queue.get()
            except ShutDown:
                return
            start = time.monotonic()
            try:
                obj = informer.get(*key)
                if obj is None:
                    queue.forget(key)
                    continue
                requeue = await self._handle(kind, key, obj)
                queue.forget(key)
                if requeue:
                    queue.add_after(key, jittered(requeue))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug or the API server: retry with backoff
                delay = queue.add_rate_limited(key)
                log.warning("reconcile failed", extra={"kind": kind, "namespace": key[0],
                                                       "name": key[1], "error": str(e),
                                                       "retry_in": round(delay, 1)})
            finally:
                queue.done(key)
                self.metrics.duration.labels(kind).observe(time.monotonic() - start)

    async def run_workers(self) -> None:
        """Workers for both kinds until cancelled (only while leading)."""
        await asyncio.gather(self.source_informer.synced.wait(),
                             self.ks_informer.synced.wait())
        # Reconcile everything once at start: intervals resume from here.
        for obj in self.source_informer.items():
            self.sources.add(_key(obj))
        for obj in self.ks_informer.items():
            self.kustomizations.add(_key(obj))
        n = max(1, self.opts.concurrent)
        await asyncio.gather(
            *(self._worker("OCIRepository", self.sources, self.source_informer)
              for _ in range(n)),
            *(self._worker("Kustomization", self.kustomizations, self.ks_informer)
              for _ in range(n)))

    def ready(self) -> bool:
        """Informers synced."""
        return self.source_informer.synced.is_set() and self.ks_informer.synced.is_set()


def _depth(queue: WorkQueue[Key]) -> float:
    return float(queue.depth)


def _key(obj: Any) -> Key:
    # The raw dict, not lightkube's ``.metadata`` property: that one parses a new
    # ObjectMeta on every access, which made scans over every cached object quadratic.
    md = obj.get("metadata") or {}
    return (md.get("namespace") or "", md.get("name") or "")


def _parse_selector(selector: str | None) -> dict[str, Any] | None:
    if not selector:
        return None
    out: dict[str, Any] = {}
    for part in selector.split(","):
        k, _, v = part.partition("=")
        out[k.strip()] = v.strip().lstrip("=")
    return out


async def run(opts: Options, *, stop: asyncio.Event | None = None,
              started: Callable[[Controller], Awaitable[None]] | None = None) -> None:
    """Run the controller until ``stop`` is set or SIGTERM/SIGINT arrives."""
    cfg = KubeConfig.from_file(opts.kubeconfig) if opts.kubeconfig else KubeConfig.from_env()
    client = AsyncClient(config=cfg, field_manager="ocigitops")
    dyn = DynamicClient.from_kubeconfig(opts.kubeconfig)
    ctrl = Controller(opts, client, dyn)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    servers = [s for s in (
        _serve_http(opts.metrics_addr, {"/metrics": lambda: (200, ctrl.metrics.render())}),
        _serve_http(opts.health_addr, {
            "/healthz": lambda: (200, b"ok\n"),
            "/readyz": lambda: (200, b"ok\n") if ctrl.ready() else (503, b"not synced\n")}),
    ) if s is not None]
    tasks = [asyncio.create_task(ctrl.source_informer.run()),
             asyncio.create_task(ctrl.ks_informer.run())]
    if opts.leader_elect:
        identity = f"{socket.gethostname()}_{os.getpid()}"
        elector = LeaderElector(client, opts.leader_namespace, opts.leader_name, identity)
        tasks.append(asyncio.create_task(elector.run(ctrl.run_workers)))
    else:
        tasks.append(asyncio.create_task(ctrl.run_workers()))
    log.info("controller started", extra={"concurrent": opts.concurrent,
                                          "leader_elect": opts.leader_elect,
                                          "namespace": opts.watch_namespace or "*"})
    if started:
        await started(ctrl)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down")
    await ctrl.sources.shutdown()
    await ctrl.kustomizations.shutdown()
    for t in tasks:
        t.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True),
                               opts.shutdown_timeout)
    stopper.cancel()
    for s in servers:
        s.shutdown()
    await dyn.aclose()
