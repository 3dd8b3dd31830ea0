"""The controller's runtime on a real kube-apiserver: leader election, a kill in the middle
of an apply, graceful shutdown, label-selector sharding, metrics and health endpoints.

Every test runs its controllers as real ``ocigitops controller run`` processes restricted
to the test's own namespace (``--watch-namespace``), publishes unsigned artifacts to the
embedded registry, and leaves nothing behind that a later controller would pick up (its
namespace is deleted, finalizers released, at the end).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lightkube import Client, codecs
from lightkube.core.exceptions import ApiError
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap, Namespace

from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.apply import OWNER_NAME_LABEL
from ocigitops.puller.devcluster import Cluster
from ocigitops.puller.manager import KustomizationRes, OCIRepositoryRes
from tests.helpers.kube import ControllerProcess, Kube, condition, wait_for
from tests.helpers.publish import publish
from tests.helpers.registries import Registry

pytestmark = pytest.mark.e2e

LEASE = "ocigitops-controller"
LEASE_DURATION = 15.0  # ocigitops.puller.runtime.leader.LeaderElector's default
SHARD_LABEL = "sharding.ocigitops.dev/key"


# --- helpers -------------------------------------------------------------------------


class Env:
    """A test's namespace, its controllers, and helpers over the admin client."""

    def __init__(self, client: Client, cluster: Cluster, registry: Registry, tmp: Path,
                 ns: str) -> None:
        self.client = client
        self.cluster = cluster
        self.registry = registry
        self.tmp = tmp
        self.ns = ns
        self.ctls: list[ControllerProcess] = []

    def controller(self, name: str, *extra: str, start: bool = True) -> ControllerProcess:
        ctl = ControllerProcess(name, self.cluster.kubeconfig, self.tmp,
                                ["--watch-namespace", self.ns, "--concurrent", "4", *extra])
        self.ctls.append(ctl)
        return ctl.start() if start else ctl

    def apply(self, obj: dict[str, Any]) -> None:
        self.client.apply(codecs.from_dict(obj), force=True)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        res = {"OCIRepository": OCIRepositoryRes, "Kustomization": KustomizationRes}[kind]
        try:
            obj = self.client.get(res, name, namespace=self.ns)
            return dict(obj.to_dict())  # type: ignore[no-untyped-call]
        except ApiError as e:
            if e.status.code == 404:
                return None
            raise

    def configmaps(self, owner: str) -> list[str]:
        return sorted(str(c.metadata.name) for c in self.client.list(
            ConfigMap, namespace=self.ns, labels={OWNER_NAME_LABEL: owner})
            if c.metadata is not None)

    def lease(self) -> Lease | None:
        try:
            return self.client.get(Lease, LEASE, namespace=self.ns)
        except ApiError as e:
            if e.status.code == 404:
                return None
            raise

    def holder(self) -> str | None:
        lease = self.lease()
        return lease.spec.holderIdentity if lease is not None and lease.spec else None

    def publish(self, repo: str, files: dict[str, str]) -> str:
        """Push a tree of ``files`` as ``<repo>:latest``; returns ``latest@<digest>``."""
        root = self.tmp / f"tree-{repo.replace('/', '-')}-{time.monotonic_ns()}"
        root.mkdir()
        for name, text in files.items():
            (root / name).write_text(text)
        return publish(self.registry.host, repo, root)

    def pair(self, name: str, repo: str, labels: dict[str, str] | None = None,
             interval: str = "10m") -> None:
        """An OCIRepository and a Kustomization (``prune``) both called ``name``."""
        md = {"name": name, "namespace": self.ns, "labels": labels or {}}
        self.apply({"apiVersion": API_VERSION, "kind": "OCIRepository", "metadata": md,
                    "spec": {"url": f"oci://{self.registry.host}/{repo}", "insecure": True,
                             "interval": interval, "ref": {"tag": "latest"}}})
        self.apply({"apiVersion": API_VERSION, "kind": "Kustomization", "metadata": md,
                    "spec": {"sourceRef": {"kind": "OCIRepository", "name": name},
                             "path": "./", "interval": interval, "prune": True,
                             "timeout": "60s", "targetNamespace": self.ns}})

    def applied(self, name: str) -> str | None:
        return ((self.get("Kustomization", name) or {}).get("status") or {}).get(
            "lastAppliedRevision")

    def explain(self, *names: str) -> Callable[[], str]:
        def out() -> str:
            states = {f"{k}/{n}": (self.get(k, n) or {}).get("status")
                      for n in names for k in ("OCIRepository", "Kustomization")}
            tails = "\n".join(c.tail(2000) for c in self.ctls)
            return f"status: {json.dumps(states, indent=1)[:3000]}\n{tails}"
        return out

    def cleanup(self) -> None:
        """Stop the controllers, release finalizers, delete the namespace (no waiting)."""
        for c in self.ctls:
            c.stop()
        try:
            for ks in self.client.list(KustomizationRes, namespace=self.ns):
                if ks.metadata is not None and ks.metadata.finalizers:
                    self.client.patch(KustomizationRes, str(ks.metadata.name),
                                      {"metadata": {"finalizers": None}},
                                      namespace=self.ns)
            self.client.delete(Namespace, self.ns)
        except ApiError:
            pass


def _configmaps(names: list[str], data: str = "v1") -> str:
    return "".join(f"---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {n}\n"
                   f"data:\n  version: {data}\n" for n in names)


@pytest.fixture
def env(request: pytest.FixtureRequest, kube_api: Kube, kube_client: Client,
        kube_cluster: Cluster, embedded_registry: Registry, tmp_path: Path) -> Iterator[Env]:
    """The test's namespace (our CRDs applied by ``kube_api``), cleaned up afterwards."""
    ns = "e2e-ha-" + request.node.name.removeprefix("test_").replace("_", "-")[:40]
    e = Env(kube_client, kube_cluster, embedded_registry, tmp_path, ns)
    e.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    try:
        yield e
    finally:
        e.cleanup()
        for c in e.ctls:  # shown by pytest only when the test failed
            print(c.tail(6000))


# --- tests ---------------------------------------------------------------------------


def test_leader_election(env: Env) -> None:
    """Two replicas: one leads (the Lease names it) and only it reconciles; when it is
    SIGKILLed the other takes over within the lease duration and applies a new revision."""
    rev1 = env.publish("e2e/ha-leader", {"cm.yaml": _configmaps(["leader-v1"])})
    env.pair("app", "e2e/ha-leader")
    flags = ("--leader-elect", "--leader-election-namespace", env.ns)
    a = env.controller("a", *flags)
    a_started = time.monotonic()
    wait_for("a holds the Lease", lambda: env.holder() == a.identity, 30,
             explain=lambda: a.tail())
    b = env.controller("b", *flags)
    b.wait_ready()  # its informers sync, but it must not reconcile
    wait_for("rev1 applied", lambda: env.applied("app") == rev1, 30, explain=env.explain("app"))
    assert env.configmaps("app") == ["leader-v1"]

    # Renewals work against the real API server (MicroTime with microseconds): the
    # renewTime moves on while acquireTime stays.
    lease = env.lease()
    assert lease is not None and lease.spec is not None
    first_renew, acquired = lease.spec.renewTime, lease.spec.acquireTime

    def renewed() -> bool:
        spec = (env.lease() or Lease()).spec
        return spec is not None and spec.holderIdentity == a.identity \
            and spec.renewTime != first_renew

    wait_for("a renews the Lease", renewed, 10)
    lease = env.lease()
    assert lease is not None and lease.spec is not None
    assert lease.spec.acquireTime is not None and lease.spec.renewTime is not None
    assert lease.spec.acquireTime == acquired
    assert lease.spec.renewTime > lease.spec.acquireTime
    assert lease.spec.leaseDurationSeconds == int(LEASE_DURATION)
    transitions = lease.spec.leaseTransitions or 0

    # Only the leader reconciles: b has informers but no workers.
    assert a.reconciles("Kustomization") >= 1 and a.reconciles("OCIRepository") >= 1
    assert b.reconciles("Kustomization") == 0 and b.reconciles("OCIRepository") == 0
    assert any(r.get("msg") == "became leader" for r in a.records())
    assert not any(r.get("msg") == "became leader" for r in b.records())
    failures = [r for r in a.records() + b.records() if r.get("msg") == "lease attempt failed"]
    assert not failures, failures

    # The leader dies without releasing the Lease: b takes over once it expires.
    rev2 = env.publish("e2e/ha-leader", {"cm.yaml": _configmaps(["leader-v2"])})
    a.kill()
    killed = time.monotonic()
    wait_for("b takes the Lease", lambda: env.holder() == b.identity, LEASE_DURATION + 10,
             explain=lambda: b.tail())
    took = time.monotonic() - killed
    assert took <= LEASE_DURATION + 5, took
    wait_for("rev2 applied by b", lambda: env.applied("app") == rev2, 30,
             explain=env.explain("app"))
    wait_for("leader-v1 pruned", lambda: env.configmaps("app") == ["leader-v2"], 15)
    lease = env.lease()
    assert lease is not None and lease.spec is not None
    assert (lease.spec.leaseTransitions or 0) == transitions + 1
    assert b.reconciles("Kustomization") >= 1
    assert any(r.get("msg") == "became leader" for r in b.records())
    assert b.alive()
    print(f"\nleader a killed after {killed - a_started:.1f}s; b took over {took:.1f}s"
          " later")


N_OBJECTS = 150


def test_kill_mid_apply(env: Env) -> None:
    """SIGKILL while the objects of a revision are being written; a restarted controller
    converges: every object once, a complete inventory, Ready, nothing extra."""
    names = [f"cm-{i:03d}" for i in range(N_OBJECTS)]
    # A little payload per object so the apply takes a measurable moment.
    payload = "x" * 2000
    rev = env.publish("e2e/ha-kill", {"cms.yaml": "".join(
        f"---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {n}\n"
        f"data:\n  pad: {payload}\n" for n in names)})
    env.pair("bulk", "e2e/ha-kill")
    ctl = env.controller("first")

    def under_way() -> int:
        n = len(env.configmaps("bulk"))
        if n >= N_OBJECTS:
            raise AssertionError(f"the apply finished before the kill ({n} objects)")
        return n

    seen = wait_for("the apply to be under way", under_way, 60, interval=0.01,
                    explain=env.explain("bulk"))
    ctl.kill()
    partial = len(env.configmaps("bulk"))
    assert 0 < partial < N_OBJECTS, partial
    assert env.applied("bulk") is None  # the status never saw this revision applied

    again = env.controller("second")
    wait_for("converged after the restart", lambda: env.applied("bulk") == rev, 60,
             explain=env.explain("bulk"))
    ks = env.get("Kustomization", "bulk") or {}
    assert condition(ks, "Ready").get("status") == "True", ks.get("status")
    assert env.configmaps("bulk") == names  # all present, each once, nothing extra
    entries = [e["id"] for e in ks["status"]["inventory"]["entries"]]
    assert sorted(entries) == sorted(f"{env.ns}_{n}__ConfigMap" for n in names)
    assert len(entries) == len(set(entries))
    # Nothing else was created in the namespace by this Kustomization's revision.
    others = [c.metadata.name for c in env.client.list(ConfigMap, namespace=env.ns)
              if c.metadata is not None and c.metadata.name not in names
              and c.metadata.name != "kube-root-ca.crt"]
    assert others == []
    assert again.alive()
    print(f"\nkilled with {seen}->{partial}/{N_OBJECTS} objects written; converged")


def test_graceful_shutdown(env: Env) -> None:
    """SIGTERM: exit code 0 within the shutdown timeout, with a "shutting down" log line."""
    rev = env.publish("e2e/ha-term", {"cm.yaml": _configmaps(["term"])})
    env.pair("term", "e2e/ha-term")
    ctl = env.controller("term")
    ctl.wait_ready()
    wait_for("applied", lambda: env.applied("term") == rev, 30, explain=env.explain("term"))
    start = time.monotonic()
    ctl.kill(signal.SIGTERM)
    assert ctl.proc is not None
    try:
        code = ctl.proc.wait(30)  # Options.shutdown_timeout
    except subprocess.TimeoutExpired:
        raise AssertionError(f"no exit within 30s after SIGTERM\n{ctl.tail()}") from None
    took = time.monotonic() - start
    assert code == 0, ctl.tail()
    records = ctl.records()
    assert any(r.get("msg") == "shutting down" and r.get("level") == "info"
               for r in records), ctl.tail()
    assert "Traceback" not in ctl.text(), ctl.tail()
    assert took < 10, took
    print(f"\nexited {took:.2f}s after SIGTERM")


def test_label_selector_sharding(env: Env) -> None:
    """Two controllers with disjoint ``--watch-label-selector`` each reconcile only their
    own shard's objects."""
    revs = {}
    for shard in ("shard1", "shard2"):
        revs[shard] = env.publish(f"e2e/ha-{shard}", {"cm.yaml": _configmaps([f"cm-{shard}"])})
        env.pair(shard, f"e2e/ha-{shard}", labels={SHARD_LABEL: shard})
    # An object in no shard: neither controller may touch it.
    env.pair("unsharded", "e2e/ha-shard1")
    c1 = env.controller("shard1", "--watch-label-selector", f"{SHARD_LABEL}=shard1")
    c2 = env.controller("shard2", "--watch-label-selector", f"{SHARD_LABEL}=shard2")
    for shard in ("shard1", "shard2"):
        rev = revs[shard]
        wait_for(f"{shard} applied", lambda: env.applied(shard) == rev, 30,  # noqa: B023
                 explain=env.explain(shard))
        assert env.configmaps(shard) == [f"cm-{shard}"]
    for ctl, mine, other in ((c1, "shard1", "shard2"), (c2, "shard2", "shard1")):
        metrics = ctl.metrics()
        assert f'name="{mine}"' in metrics
        assert f'name="{other}"' not in metrics and 'name="unsharded"' not in metrics
    time.sleep(1)
    for kind in ("OCIRepository", "Kustomization"):
        status = (env.get(kind, "unsharded") or {}).get("status") or {}
        # (the CRD's schema defaults observedGeneration to -1; nothing else may be set)
        assert set(status) <= {"observedGeneration"}, (kind, status)
    assert env.configmaps("unsharded") == []


def test_metrics_and_health(env: Env) -> None:
    """``/healthz`` and ``/readyz`` answer 200; ``/metrics`` has the reconcile duration
    histogram, the condition gauge and the queue depth."""
    rev = env.publish("e2e/ha-metrics", {"cm.yaml": _configmaps(["metrics"])})
    env.pair("metrics", "e2e/ha-metrics")
    ctl = env.controller("metrics")
    wait_for("/healthz", lambda: _ok(ctl, "/healthz"), 30, explain=ctl.tail)
    ctl.wait_ready()
    assert ctl.get("/readyz").text.strip() == "ok"
    assert ctl.get("/nope").status_code == 404
    wait_for("applied", lambda: env.applied("metrics") == rev, 30, explain=env.explain("metrics"))

    def exported() -> str:
        t = ctl.metrics()
        return t if 'ocigitops_reconcile_condition{kind="Kustomization"' in t else ""

    text: str = wait_for("metrics for the Kustomization", exported, 10)
    assert re.search(r'^ocigitops_reconcile_duration_seconds_bucket\{kind="Kustomization",'
                     r'le="\+Inf"\} [1-9]', text, re.M), text
    assert re.search(r'^ocigitops_reconcile_duration_seconds_count\{kind="OCIRepository"\}'
                     r' [1-9]', text, re.M), text
    assert re.search(r'^ocigitops_reconcile_condition\{kind="Kustomization",name="metrics",'
                     rf'namespace="{env.ns}",status="True",type="Ready"\}} 1\.0$', text,
                     re.M), text
    assert re.search(r'^ocigitops_reconcile_condition\{kind="OCIRepository",name="metrics",'
                     rf'namespace="{env.ns}",status="False",type="Ready"\}} 0\.0$', text,
                     re.M), text
    for kind in ("OCIRepository", "Kustomization"):
        assert re.search(rf'^ocigitops_workqueue_depth\{{kind="{kind}"\}} 0\.0$', text,
                         re.M), text
    assert ctl.get("/healthz").status_code == 200


def _ok(ctl: ControllerProcess, path: str) -> bool:
    try:
        return ctl.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def test_leader_releases_lease_on_sigterm(env: Env) -> None:
    """A leader stopped gracefully hands the Lease back: a standby need not wait for it
    to expire (client-go's ReleaseOnCancel)."""
    flags = ("--leader-elect", "--leader-election-namespace", env.ns)
    a = env.controller("rel-a", *flags)
    wait_for("a holds the Lease", lambda: env.holder() == a.identity, 30)
    a.kill(signal.SIGTERM)
    assert a.proc is not None and a.proc.wait(30) == 0, a.tail()
    assert env.holder() in (None, ""), env.lease()
    b = env.controller("rel-b", *flags)
    start = time.monotonic()
    wait_for("b takes the released Lease", lambda: env.holder() == b.identity, 10)
    assert time.monotonic() - start < 8  # far below the 15 s lease duration
