"""The e2e side of the cluster: a synchronous helper over the dynamic client for
assertions, conditions, polling, our two kinds (OCIRepository, Kustomization) applied and
read back, the real CLI pointed at the dev cluster, and the controller as a process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.devcluster import Cluster
from ocigitops.puller.kube import DynamicClient
from tests.helpers.cli import ocigitops
from tests.helpers.registries import free_port, stop_process

OCI = "OCIRepository"
KS = "Kustomization"
#: How long the e2e tests wait for the controller to get somewhere (well under the
#: per-test budget of their modules).
WAIT = 40.0


def condition(obj: Mapping[str, Any] | None, ctype: str) -> dict[str, Any]:
    """The condition ``ctype`` of ``obj``'s status, or ``{}``."""
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return {}


def wait_for(what: str, check: Callable[[], Any], timeout: float, *, interval: float = 0.25,
             explain: Callable[[], str] | None = None) -> Any:
    """Poll ``check`` until it returns something truthy (returned), or fail naming ``what``
    (and what ``explain`` says)."""
    deadline = time.monotonic() + timeout
    while True:
        out = check()
        if out:
            return out
        if time.monotonic() >= deadline:
            extra = f"\n{explain()}" if explain else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


class Kube:
    """Synchronous helpers over the dynamic client, for assertions. ``namespace`` is the
    default for namespaced calls (``in_ns`` returns a copy bound to another one)."""

    def __init__(self, kubeconfig: Path | str, namespace: str | None = None) -> None:
        self.kubeconfig = str(kubeconfig)
        self.namespace = namespace

    def in_ns(self, namespace: str) -> Kube:
        """The same cluster, another default namespace."""
        return Kube(self.kubeconfig, namespace)

    async def _with(self, fn: Callable[[DynamicClient], Any]) -> Any:
        dyn = DynamicClient.from_kubeconfig(self.kubeconfig)
        try:
            return await fn(dyn)
        finally:
            await dyn.aclose()

    def call(self, fn: Callable[[DynamicClient], Any]) -> Any:
        """Run ``fn(dynamic_client)`` (a coroutine function) to completion."""
        return asyncio.run(self._with(fn))

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply (forced) as the e2e field manager."""
        return dict(self.call(lambda d: d.apply(obj, force=True)))

    def get(self, api_version: str, kind: str, name: str, ns: Any = ...,
            ) -> dict[str, Any] | None:
        """The live object or None; ``ns`` defaults to the bound namespace."""
        namespace = self.namespace if ns is ... else ns
        out = self.call(lambda d: d.get(api_version, kind, name, namespace))
        return dict(out) if out is not None else None

    def list(self, api_version: str, kind: str, ns: Any = ...,
             ) -> list[dict[str, Any]]:
        """Every object of ``kind`` in the (bound) namespace."""
        namespace = self.namespace if ns is ... else ns
        return [dict(o) for o in self.call(lambda d: d.list(api_version, kind, namespace))]

    def delete(self, api_version: str, kind: str, name: str) -> None:
        """Delete an object of the bound namespace."""
        self.call(lambda d: d.delete(api_version, kind, name, self.namespace))

    def status_dump(self) -> str:
        """Status of our objects in the bound namespace, for failure messages."""
        out: dict[str, Any] = {}
        for kind in (OCI, KS):
            try:
                for o in self.list(API_VERSION, kind):
                    out[f"{kind}/{o['metadata']['name']}"] = o.get("status")
            except Exception as e:  # diagnostics only
                out[kind] = repr(e)
        return json.dumps(out, indent=1)[:6000]

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 90.0) -> None:
        """Poll ``check`` every half second; fail with our objects' status on timeout."""
        wait_for(what, check, timeout, interval=0.5,
                 explain=lambda: f"status: {self.status_dump()}")


# --- our kinds, applied and read back ---------------------------------------------------

def apply_source(kube: Kube, name: str, host: str, repo: str, tag: str = "latest",
                 interval: str = "1m", *, ref: dict[str, str] | None = None,
                 timeout: str = "20s") -> None:
    """An OCIRepository ``name`` for ``oci://host/repo`` (plain HTTP) at ``tag`` (or
    ``ref``) in ``kube``'s namespace."""
    kube.apply({"apiVersion": API_VERSION, "kind": OCI,
                "metadata": {"name": name, "namespace": kube.namespace},
                "spec": {"url": f"oci://{host}/{repo}", "insecure": True, "interval": interval,
                         "timeout": timeout, "ref": ref or {"tag": tag}}})


def apply_kustomization(kube: Kube, name: str, source: str, **spec: Any) -> None:
    """A Kustomization ``name`` of the OCIRepository ``source`` (``prune``, into ``kube``'s
    namespace); ``spec`` adds or replaces fields."""
    body: dict[str, Any] = {"sourceRef": {"kind": OCI, "name": source}, "path": "./",
                            "interval": "1m", "prune": True, "timeout": "30s",
                            "targetNamespace": kube.namespace}
    body.update(spec)
    kube.apply({"apiVersion": API_VERSION, "kind": KS,
                "metadata": {"name": name, "namespace": kube.namespace}, "spec": body})


def ready_condition(kube: Kube, kind: str, name: str) -> dict[str, Any]:
    """The Ready condition of our object ``kind/name``, or ``{}``."""
    return condition(kube.get(API_VERSION, kind, name), "Ready")


def wait_ready_verdict(kube: Kube, kind: str, name: str, what: str,
                       check: Callable[[dict[str, Any], dict[str, Any]], bool],
                       timeout: float = WAIT) -> dict[str, Any]:
    """Until ``check(ready_condition, status)`` holds for our object ``kind/name``; the Ready
    condition that passed. Read once per poll and returned: a retry starting after the poll
    turns Ready to Unknown ("Reconciliation in progress"), so a second read can miss it."""
    seen: dict[str, Any] = {}

    def poll() -> bool:
        obj = kube.get(API_VERSION, kind, name) or {}
        ready, status = condition(obj, "Ready"), dict(obj.get("status") or {})
        if check(ready, status):
            seen.update(ready)
            return True
        return False

    kube.wait(what, poll, timeout)
    return seen


def status_of(kube: Kube, kind: str, name: str) -> dict[str, Any]:
    """The status of our object ``kind/name``, or ``{}``."""
    return dict((kube.get(API_VERSION, kind, name) or {}).get("status") or {})


def wait_source_ready(kube: Kube, name: str, revision: str) -> None:
    """Until the OCIRepository ``name`` is Ready with its artifact at ``revision``."""
    kube.wait(f"{OCI} {name} Ready at {revision}", lambda: (
        ready_condition(kube, OCI, name).get("status") == "True"
        and (status_of(kube, OCI, name).get("artifact") or {}).get("revision") == revision),
        WAIT)


def wait_applied(kube: Kube, name: str, revision: str) -> None:
    """Until the Kustomization ``name`` applied ``revision`` and is Ready."""
    kube.wait(f"{KS} {name} applied {revision}", lambda: (
        status_of(kube, KS, name).get("lastAppliedRevision") == revision
        and ready_condition(kube, KS, name).get("status") == "True"), WAIT)


def configmap_data(kube: Kube, name: str, ns: str | None = None) -> dict[str, str] | None:
    """The data of ConfigMap ``name`` (in ``ns``, else ``kube``'s namespace), or None when
    there is no such ConfigMap."""
    cm = kube.get("v1", "ConfigMap", name, ns or kube.namespace)
    return None if cm is None else dict(cm.get("data") or {})


def kube_cli(cluster: Cluster, kube: Kube, *args: str, check: bool = True) -> str:
    """Run the real ``ocigitops`` CLI against the dev cluster in ``kube``'s namespace;
    stdout and stderr together."""
    out = ocigitops(*args, "-n", str(kube.namespace), "--kubeconfig",
                    str(cluster.kubeconfig), check=check)
    return out.stdout + out.stderr


# --- the controller as a process --------------------------------------------------------

class ControllerProcess:
    """One ``ocigitops controller run`` process, its log and its HTTP endpoints (metrics and
    health on free ports of 127.0.0.1); ``args`` are added to the command line."""

    def __init__(self, name: str, kubeconfig: Path | str, tmp: Path, args: list[str]) -> None:
        self.name = name
        self.kubeconfig = kubeconfig
        self.cache = tmp / f"cache-{name}"
        self.args = args
        self.log = tmp / f"controller-{name}.log"
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ControllerProcess:
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ocigitops.cli", "controller", "run", "--kubeconfig",
                 str(self.kubeconfig), "--metrics-addr", f"127.0.0.1:{self.metrics_port}",
                 "--health-addr", f"127.0.0.1:{self.health_port}",
                 "--storage-path", str(self.cache), *self.args],
                stdout=logf, stderr=logf, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def identity(self) -> str:
        """The leader-election identity the manager derives (``host_pid``)."""
        return f"{socket.gethostname()}_{self.pid}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str, port: int | None = None) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{port or self.health_port}{path}", timeout=2)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until ``/readyz`` answers 200; fail with the log tail if the process exits."""
        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"controller {self.name} exited:\n{self.tail()}")
            try:
                return self.get("/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(f"controller {self.name} /readyz", ready, timeout, explain=self.tail)

    def metrics(self) -> str:
        return self.get("/metrics", self.metrics_port).text

    def reconciles(self, kind: str) -> float:
        """``ocigitops_reconcile_duration_seconds_count{kind=...}`` (0 when absent)."""
        m = re.search(rf'^ocigitops_reconcile_duration_seconds_count\{{kind="{kind}"\}} (\S+)$',
                      self.metrics(), re.M)
        return float(m.group(1)) if m else 0.0

    def text(self) -> str:
        """The whole log."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def records(self) -> list[dict[str, Any]]:
        """The JSON log lines (anything else, a traceback, is skipped)."""
        out = []
        for line in self.text().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                out.append(doc)
        return out

    def log_tail(self, chars: int = 4000) -> str:
        """The end of its log."""
        return self.text()[-chars:]

    def tail(self, chars: int = 3000) -> str:
        """The end of its log under a header naming it, for failure messages."""
        return f"--- controller {self.name} log tail ---\n{self.log_tail(chars)}"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 15 s."""
        if self.alive():
            assert self.proc is not None
            stop_process(self.proc, grace=15)
