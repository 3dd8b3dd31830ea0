"""e2e fixtures: a real local control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok with fake Nodes), started once per session by
:func:`ocigitops.puller.devcluster.cluster_up` in a temporary state directory.

A missing binary fails the tests with the install command (``scripts/install-tools
kubernetes etcd kwok``), never a skip. When a test that uses the cluster fails, the log
tail of every component is attached to its report.

For the puller's tests: ``kube_api`` (our CRDs applied, a
:class:`tests.helpers.kube.Kube`), ``controller`` (one ``ocigitops controller run`` process
per module, watching every namespace) and ``ns`` (a namespace of the test's own). A failed
test that used the controller gets its log tail attached. The helpers these fixtures build
on are in ``tests.helpers.kube``.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import yaml
from lightkube import Client, KubeConfig

from ocigitops.errors import OcigitopsError
from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.devcluster import Cluster, cluster_down, cluster_up
from tests.helpers.kube import ControllerProcess, Kube, condition
from tests.helpers.paths import CRDS

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


@pytest.fixture(scope="session")
def kube_api(kube_cluster: Cluster) -> Kube:
    """The dev cluster with our CRDs applied and Established (no default namespace)."""
    k = Kube(kube_cluster.kubeconfig)
    for crd in sorted(CRDS.glob("*.yaml")):
        k.apply(yaml.safe_load(crd.read_text()))

    def established(name: str) -> bool:
        crd = k.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name, None)
        return condition(crd, "Established").get("status") == "True"

    for name in ("ocirepositories.ocigitops.dev", "kustomizations.ocigitops.dev"):
        k.wait(f"CRD {name}", lambda n=name: established(n), 30)
    return k


@pytest.fixture(scope="module")
def controller(kube_api: Kube, kube_cluster: Cluster,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    """One controller per test module, watching all namespaces (each test uses its own).

    Module scope, not session: it must be gone before a module that runs controllers of
    its own (test_puller_ha.py) starts, or it would reconcile their objects too.
    """
    ctl = ControllerProcess("shared", kube_cluster.kubeconfig,
                            tmp_path_factory.mktemp("controller"), ["--concurrent", "4"])
    try:
        ctl.start().wait_ready(30)
        yield ctl
    finally:
        ctl.stop()
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
