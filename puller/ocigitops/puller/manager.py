"""The controller process: informers, queues, workers, leader election, metrics, health.

One process runs every registered kind (:mod:`ocigitops.puller.reconcilers`;
docs/architecture.md, "The runtime"). Nothing here is specific to a kind: each
:class:`~ocigitops.puller.runtime.reconciler.Reconciler` brings its type, context,
reconcile function, finalizer and references. Informers run on every replica so a new
leader starts warm; workers run only on the leader. An object that changes (a source
storing a new revision, a Kustomization applying one) wakes at once the objects that
reference it, and one that becomes Ready wakes those waiting on it, instead of leaving
them to their intervals. Every status goes out through the kind's typed status.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.generic_resource import create_namespaced_resource

from ocigitops import netstream
from ocigitops.errors import InvalidAddressError
from ocigitops.puller import conditions as cond
from ocigitops.puller import reconcilers
from ocigitops.puller.api.meta import RECONCILE_REQUESTED_AT
from ocigitops.puller.cache import ArtifactCache
from ocigitops.puller.kube import DynamicClient, load_kubeconfig
from ocigitops.puller.reconcile import Outcome, merge_patch, typed_status
from ocigitops.puller.runtime.informer import Informer, Key
from ocigitops.puller.runtime.leader import LeaderElector
from ocigitops.puller.runtime.options import Options, default_cache_dir
from ocigitops.puller.runtime.queue import ShutDown, WorkQueue, jittered
from ocigitops.puller.runtime.reconciler import Deps, Reconciler
from ocigitops.puller.runtime.refindex import ReferenceIndex
from ocigitops.puller.runtime.slots import Slot, Slots, bind
from ocigitops.regserver import listen_error

log = logging.getLogger("ocigitops.controller")

#: A reconcile's in-progress status (Reconciling=True, "Fetching ...") is written once it
#: has been working this long, then every later one at once. Most reconciles end sooner,
#: and their final status says it all: the progress write would be a status patch, and a
#: watch event back to every informer, that nobody has time to see (1,000 of each per
#: 1,000 Kustomizations applied). kstatus readers still see the object in progress, by
#: its observedGeneration.
PROGRESS_DELAY_S = 1.0

__all__ = ["Controller", "KindRuntime", "Options", "run", "serve", "setup_logging"]


def resource_of(rec: Reconciler[Any]) -> Any:
    """The lightkube resource class of a reconciler's kind."""
    group, _, version = rec.api_version.partition("/")
    return create_namespaced_resource(group, version, rec.kind, rec.plural)


#: lightkube resources of every known kind, by kind.
RESOURCES: dict[str, Any] = {r.kind: resource_of(r) for r in reconcilers.ALL}
OCIRepositoryRes = RESOURCES["OCIRepository"]
KustomizationRes = RESOURCES["Kustomization"]


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

    if not port.isdigit():
        raise InvalidAddressError(f"address {addr!r}: use HOST:PORT or :PORT, e.g. :8080")
    try:
        server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
    except OSError as e:
        raise listen_error(addr, e) from e
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


@dataclass
class KindRuntime:
    """One registered kind at run time: its reconciler, context, queue and informer."""

    rec: Reconciler[Any]
    context: Any
    queue: WorkQueue[Key]
    informer: Informer
    #: Objects whose last reconcile waits on something they reference.
    waiting: set[Key] = field(default_factory=set)


class Controller:
    """Every selected kind with its informer, queue and workers."""

    def __init__(self, opts: Options, client: AsyncClient, dyn: DynamicClient,
                 kinds: tuple[Reconciler[Any], ...] | None = None) -> None:
        self.opts = opts
        self.client = client
        self.dyn = dyn
        self.cache = ArtifactCache(Path(opts.cache_dir or default_cache_dir()))
        self.metrics = Metrics()
        selected = kinds if kinds is not None else reconcilers.select(opts.controllers)
        # The status last written for an object during its current reconcile (by a
        # progress report): the final write is a patch against it, not against the
        # informer's older copy.
        self._written: dict[tuple[str, Key], dict[str, Any]] = {}
        # Progress not written yet (the latest of the reconcile), its timer, and a
        # progress write in flight: see PROGRESS_DELAY_S.
        self._pending: dict[tuple[str, Key], tuple[KindRuntime, Mapping[str, Any],
                                                   dict[str, Any]]] = {}
        self._timers: dict[tuple[str, Key], asyncio.Task[None]] = {}
        self._writing: dict[tuple[str, Key], asyncio.Task[None]] = {}
        self._refs = ReferenceIndex()
        deps = Deps(kube=dyn, cache=self.cache, options=opts,
                    sources={r.source.kind: r.source for r in reconcilers.ALL if r.source},
                    served=frozenset(r.kind for r in selected), progress=self._progress)
        labels = _parse_selector(opts.watch_label_selector)
        self.kinds: dict[str, KindRuntime] = {}
        for rec in selected:
            queue: WorkQueue[Key] = WorkQueue(base_delay=1.0, max_delay=300.0)
            informer = Informer(client, RESOURCES.get(rec.kind) or resource_of(rec),
                                functools.partial(self._on_event, rec.kind),
                                namespace=opts.watch_namespace, labels=labels)
            self.kinds[rec.kind] = KindRuntime(rec, rec.context(deps), queue, informer)
            # Read at scrape time: exported from the start (a follower, or a leader that
            # has not finished a reconcile yet, has a series too) and never stale.
            self.metrics.queue_depth.labels(rec.kind).set_function(
                functools.partial(_depth, queue))
        self.leading = not opts.leader_elect

    def _on_event(self, kind: str, event: str, old: Any | None, new: Any) -> None:
        referrer = (kind, _key(new))
        if event == "DELETED":
            self._refs.remove(referrer)
        else:
            self._refs.update(referrer, self.kinds[kind].rec.references(new))
        if _interesting(event, old, new):
            self.kinds[kind].queue.add(_key(new))

    async def _progress(self, obj: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        """Report a status while the reconcile is still working (Reconciling=True):
        written once the reconcile has worked PROGRESS_DELAY_S, unless it ends first."""
        rt = self.kinds.get(str(obj.get("kind") or ""))
        if rt is None:
            return
        k = (rt.rec.kind, _key(obj))
        snapshot = copy.deepcopy(dict(status))  # the reconciler goes on changing its own
        if k in self._written or PROGRESS_DELAY_S <= 0:
            await self._write_status(rt, obj, snapshot)  # already shown as in progress
            return
        self._pending[k] = (rt, obj, snapshot)
        if k not in self._timers:
            self._timers[k] = asyncio.create_task(self._progress_later(k))

    async def _progress_later(self, k: tuple[str, Key]) -> None:
        await asyncio.sleep(PROGRESS_DELAY_S)
        # From here the write runs to its end: the final write waits for it
        # (_settle_progress), so it patches against what this one wrote.
        self._timers.pop(k, None)
        rt, obj, status = self._pending.pop(k)
        task = asyncio.current_task()
        assert task is not None
        self._writing[k] = task
        try:
            await self._write_status(rt, obj, status)
        except Exception as e:  # the final write follows; a failed progress is not fatal
            log.warning("progress status not written", extra={
                "kind": k[0], "namespace": k[1][0], "name": k[1][1],
                "error": f"{type(e).__name__}: {e}"})
        finally:
            self._writing.pop(k, None)

    async def _settle_progress(self, k: tuple[str, Key]) -> None:
        """The reconcile of ``k`` ended: drop its unwritten progress, and wait for one
        being written."""
        timer = self._timers.pop(k, None)
        if timer is not None:
            timer.cancel()
        self._pending.pop(k, None)
        writing = self._writing.get(k)
        if writing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(writing)

    async def _write_status(self, rt: KindRuntime, obj: Mapping[str, Any],
                            status: dict[str, Any]) -> None:
        key = _key(obj)
        # Through the typed status: a field the API does not declare, or a condition the
        # CRD would refuse, is a bug to fix, never something to write half of.
        new = typed_status(rt.rec.status_type, status)
        base = self._written.get((rt.rec.kind, key), dict(obj.get("status") or {}))
        patch = merge_patch(base, new)
        if patch:
            await self.dyn.patch_status(rt.rec.api_version, rt.rec.kind, key[1], key[0],
                                        patch)
        self._written[(rt.rec.kind, key)] = new

    def _referencing(self, kind: str, key: Key) -> list[tuple[KindRuntime, Any]]:
        """Objects of every running kind whose references include ``kind``/``key``
        (from the index the informer events keep, not a scan of every object)."""
        out: list[tuple[KindRuntime, Any]] = []
        for other_kind, (ns, name) in self._refs.referencing((kind, *key)):
            rt = self.kinds.get(other_kind)
            obj = rt.informer.get(ns, name) if rt is not None else None
            if rt is not None and obj is not None:
                out.append((rt, obj))
        return out

    def _wake(self, kind: str, key: Key, out: Outcome,
              before: Mapping[str, Any] | None = None) -> None:
        conditions = list(out.status.get("conditions") or [])
        ready = cond.is_true(conditions, cond.READY)
        # A Ready condition that turned False (or changed its reason or message while
        # False): those parked on this object learn why now (a HelmRelease says
        # "source not ready: <the source's reason>"), not at their next requeue.
        now = cond.find(conditions, cond.READY) or {}
        old = cond.find(list((before or {}).get("conditions") or []), cond.READY) or {}
        failed = now.get("status") == cond.FALSE and any(
            now.get(k) != old.get(k) for k in ("status", "reason", "message"))
        if not (out.changed or ready or failed):
            return
        for rt, obj in self._referencing(kind, key):
            other = _key(obj)
            # A change wakes every user. Ready without a change wakes those parked on it:
            # after a restart (or on a new leader) the artifact cache starts empty, and a
            # Kustomization reconciled before its source found the artifact missing;
            # without this it would wait a whole requeue period for the same revision.
            # One being reconciled right now may be about to park: the add marks it dirty
            # so it runs once more.
            if out.changed or other in rt.waiting or rt.queue.is_processing(other):
                rt.queue.add(other)

    async def _handle(self, rt: KindRuntime, key: Key, obj: Any) -> float | None:
        plain = dict(obj)
        rec = rt.rec
        try:
            try:
                out: Outcome = await rec.reconcile(plain, rt.context)
            finally:
                await self._settle_progress((rec.kind, key))
            fins = list((plain.get("metadata") or {}).get("finalizers") or [])
            if out.add_finalizer and rec.finalizer and rec.finalizer not in fins:
                await self.dyn.patch_metadata(rec.api_version, rec.kind, key[1], key[0],
                                              {"finalizers": [*fins, rec.finalizer]})
            if out.remove_finalizer:
                await self.dyn.patch_metadata(rec.api_version, rec.kind, key[1], key[0],
                                              {"finalizers": [f for f in fins
                                                              if f != rec.finalizer]})
                rt.waiting.discard(key)
                return None
            await self._write_status(rt, plain, out.status)
        finally:
            self._written.pop((rec.kind, key), None)
        for type_, reason, message in out.events:
            await self.dyn.event(plain, type_, reason, message)
        self.metrics.observe_conditions(rec.kind, key,
                                        list(out.status.get("conditions") or []))
        if out.waiting:
            rt.waiting.add(key)
        else:
            rt.waiting.discard(key)
        self._wake(rec.kind, key, out, plain.get("status"))
        requeue: float | None = out.requeue_after
        if out.waiting and requeue is not None:
            # Flux's --requeue-dependency: a missing dependency is polled at this period,
            # not at retryInterval (often the full interval).
            requeue = min(requeue, self.opts.requeue_dependency)
        return requeue

    async def _process(self, rt: KindRuntime, key: Key, slot: Slot) -> None:
        """Reconcile one key on its own task, in the working slot it was given."""
        kind, queue, informer = rt.rec.kind, rt.queue, rt.informer
        bind(slot)
        start = time.monotonic()
        try:
            obj = informer.get(*key)
            if obj is None:
                queue.forget(key)
                rt.waiting.discard(key)
                return
            requeue = await self._handle(rt, key, obj)
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
            slot.close()
            queue.done(key)
            self.metrics.duration.labels(kind).observe(time.monotonic() - start)

    async def _dispatch(self, rt: KindRuntime) -> None:
        """Hand each queued key to a task of its own while a working slot is free
        (``--concurrent`` per kind; a reconcile that only waits gives its slot back:
        :mod:`ocigitops.puller.runtime.slots`)."""
        slots = Slots(self.opts.concurrent)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                slot = await slots.take()
                try:
                    key = await rt.queue.get()
                except ShutDown:
                    slot.close()
                    break
                task = asyncio.create_task(self._process(rt, key, slot))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            # Shut down: let the reconciles in flight finish (the caller bounds this).
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def run_workers(self) -> None:
        """Workers for every kind until cancelled (only while leading)."""
        await asyncio.gather(*(rt.informer.synced.wait() for rt in self.kinds.values()))
        # Reconcile everything once at start: intervals resume from here.
        for rt in self.kinds.values():
            for obj in rt.informer.items():
                rt.queue.add(_key(obj))
        await asyncio.gather(*(self._dispatch(rt) for rt in self.kinds.values()))

    def ready(self) -> bool:
        """Informers synced."""
        return all(rt.informer.synced.is_set() for rt in self.kinds.values())


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
              started: Callable[[Controller], Awaitable[None]] | None = None,
              kinds: tuple[Reconciler[Any], ...] | None = None) -> None:
    """Run the controller until ``stop`` is set or SIGTERM/SIGINT arrives; ``kinds``
    replaces the kinds ``opts.controllers`` selects (the operator runs its own)."""
    dyn = DynamicClient.from_kubeconfig(opts.kubeconfig, context=opts.context)
    # Fail at start, in one line naming server and kubeconfig, when the API server cannot
    # be reached: the informers would otherwise retry silently forever. (In a Pod, the
    # kubelet restarts us; from a laptop, the user sees what to fix.)
    try:
        await dyn.server_version()
    except BaseException:
        await dyn.aclose()
        raise
    single, _ = load_kubeconfig(opts.kubeconfig, opts.context)
    client = AsyncClient(config=single, field_manager="ocigitops")
    # lightkube keeps its httpx client two private attributes deep; install() leaves
    # anything else alone.
    netstream.install(getattr(getattr(client, "_client", None), "_client", None))
    ctrl = Controller(opts, client, dyn, kinds)
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
    tasks = [asyncio.create_task(rt.informer.run()) for rt in ctrl.kinds.values()]
    if opts.leader_elect:
        identity = f"{socket.gethostname()}_{os.getpid()}"
        elector = LeaderElector(client, opts.leader_namespace, opts.leader_name, identity)
        tasks.append(asyncio.create_task(elector.run(ctrl.run_workers)))
    else:
        tasks.append(asyncio.create_task(ctrl.run_workers()))
    log.info("controller started", extra={"controllers": ",".join(ctrl.kinds),
                                          "concurrent": opts.concurrent,
                                          "leader_elect": opts.leader_elect,
                                          "namespace": opts.watch_namespace or "*"})
    if started:
        await started(ctrl)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down")
    for rt in ctrl.kinds.values():
        await rt.queue.shutdown()
    for t in tasks:
        t.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True),
                               opts.shutdown_timeout)
    stopper.cancel()
    for s in servers:
        s.shutdown()
    await dyn.aclose()


def serve(opts: Options, log_level: str = "info") -> None:
    """``ocigitops controller run``: check the flags, log JSON at ``log_level``, and run
    until SIGTERM or SIGINT. An unknown ``--controllers`` name fails before anything
    starts."""
    reconcilers.select(opts.controllers)
    setup_logging(getattr(logging, log_level.upper()))
    asyncio.run(run(opts))
