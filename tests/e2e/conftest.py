"""e2e fixtures: a real local control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok with fake Nodes), started once per session by
:func:`ocigitops.puller.devcluster.cluster_up` in a temporary state directory.

A missing binary fails the tests with the install command (``scripts/install-tools
kubernetes etcd kwok``), never a skip. When a test that uses the cluster fails, the log
tail of every component is attached to its report.

For the puller's tests: ``kube_api`` (our CRDs applied, a :class:`Kube` helper) and
``controller`` (one ``ocigitops controller run`` process per module, watching every
namespace; each test works in namespaces of its own). A failed test that used the
controller gets its log tail attached.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import Client, KubeConfig

from ocigitops.errors import OcigitopsError
from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.devcluster import Cluster, cluster_down, cluster_up
from ocigitops.puller.kube import DynamicClient
from tests.registries import free_port, stop_process, wait_http

REPO_ROOT = Path(__file__).resolve().parents[2]

CLUSTER_TIMEOUT = float(os.environ.get("OCIGITOPS_E2E_CLUSTER_TIMEOUT", "120"))


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A running dev cluster for the whole session, torn down (data removed) at the end."""
    state_dir: Path = tmp_path_factory.mktemp("devcluster")
    try:
        cluster = cluster_up(state_dir, timeout=CLUSTER_TIMEOUT)
    except OcigitopsError as e:  # includes the failing component's log tail
        pytest.fail(f"the e2e cluster did not start: {e}", pytrace=False)
    print(f"\ne2e cluster: {cluster.server} started in {cluster.started_seconds:.1f}s "
          f"(state {state_dir})")
    try:
        yield cluster
    finally:
        cluster_down(state_dir)


@pytest.fixture(scope="session")
def kube_config(kube_cluster: Cluster) -> KubeConfig:
    """The admin kubeconfig as a lightkube ``KubeConfig`` (for ``AsyncClient(config=...)``)."""
    return KubeConfig.from_file(kube_cluster.kubeconfig)


@pytest.fixture(scope="session")
def kube_client(kube_config: KubeConfig) -> Client:
    """A synchronous lightkube client with cluster-admin rights (``O=system:masters``)."""
    return Client(config=kube_config, field_manager="ocigitops-e2e")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    """Attach the components' log tails to the report of a failed test using the cluster."""
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    if not rep.failed or rep.when != "call":
        return
    funcargs = getattr(item, "funcargs", {})
    cluster = funcargs.get("kube_cluster")
    if isinstance(cluster, Cluster):
        rep.sections.append(("dev cluster logs", cluster.log_tails(20)))
    ctl = funcargs.get("controller")
    if isinstance(ctl, ControllerProcess):
        rep.sections.append(("controller log", ctl.log_tail(6000)))


# --- shared by the puller e2e modules: CRDs installed, the controller as a process ------

def condition(obj: Mapping[str, Any] | None, ctype: str) -> dict[str, Any]:
    """The condition ``ctype`` of ``obj``'s status, or ``{}``."""
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return {}


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


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
        return _run(self._with(fn))

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
        for kind in ("OCIRepository", "Kustomization"):
            try:
                for o in self.list(API_VERSION, kind):
                    out[f"{kind}/{o['metadata']['name']}"] = o.get("status")
            except Exception as e:  # diagnostics only
                out[kind] = repr(e)
        return json.dumps(out, indent=1)[:6000]

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 90.0) -> None:
        """Poll ``check`` every half second; fail with our objects' status on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; status:"
                             f" {self.status_dump()}")


@pytest.fixture(scope="session")
def kube_api(kube_cluster: Cluster) -> Kube:
    """The dev cluster with our CRDs applied and Established (no default namespace)."""
    k = Kube(kube_cluster.kubeconfig)
    for crd in sorted((REPO_ROOT / "deploy" / "crds").glob("*.yaml")):
        k.apply(yaml.safe_load(crd.read_text()))

    def established(name: str) -> bool:
        crd = k.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name, None)
        return condition(crd, "Established").get("status") == "True"

    for name in ("ocirepositories.ocigitops.dev", "kustomizations.ocigitops.dev"):
        k.wait(f"CRD {name}", lambda n=name: established(n), 30)
    return k


@dataclass
class ControllerProcess:
    """``ocigitops controller run`` as a subprocess, and its log file."""

    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        """The end of its log."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@pytest.fixture(scope="module")
def controller(kube_api: Kube, kube_cluster: Cluster,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    """One controller per test module, watching all namespaces (each test uses its own).

    Module scope, not session: it must be gone before a module that runs controllers of
    its own (test_puller_ha.py) starts, or it would reconcile their objects too.
    """
    tmp = tmp_path_factory.mktemp("controller")
    health = free_port()
    log = tmp / "controller.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ocigitops.cli", "controller", "run", "--kubeconfig",
             str(kube_cluster.kubeconfig), "--metrics-addr", f"127.0.0.1:{free_port()}",
             "--health-addr", f"127.0.0.1:{health}", "--storage-path", str(tmp / "cache"),
             "--concurrent", "4"], stdout=logf, stderr=logf,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ctl = ControllerProcess(proc, log)
    try:
        try:
            wait_http(f"http://127.0.0.1:{health}/readyz", proc, log, timeout=30, status=200)
        except RuntimeError as e:
            pytest.fail(f"controller not ready: {e}")
        yield ctl
    finally:
        stop_process(proc, grace=15)
        print(f"\ncontroller log tail:\n{ctl.log_tail()}")


@pytest.fixture
def ns(request: pytest.FixtureRequest, kube_api: Kube,
       controller: ControllerProcess) -> Iterator[Kube]:
    """A fresh namespace named after the test, deleted (not waited for) afterwards."""
    name = "beh-" + request.node.name.removeprefix("test_").replace("_", "-")[:40].rstrip("-")
    kube_api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    kube = kube_api.in_ns(name)
    yield kube
    # Stop the controller working on this test's objects (a stopped registry, a missing
    # tag would keep failing every interval) and release the finalizers (the module's
    # controller may be gone before it handles the deletion), then drop the namespace.
    for kind in ("Kustomization", "OCIRepository"):
        for obj in kube.list(API_VERSION, kind):
            kube.call(lambda d, k=kind, n=obj["metadata"]["name"]: d.merge_patch(
                API_VERSION, k, n, name, {"metadata": {"finalizers": None},
                                          "spec": {"suspend": True}}))
    kube_api.call(lambda d: d.delete("v1", "Namespace", name, None))
