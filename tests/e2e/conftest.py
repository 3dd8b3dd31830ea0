"""e2e fixtures: a real local control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok with fake Nodes), started once per session by
:func:`puller.devcluster.cluster_up` in a temporary state directory.

A missing binary fails the tests with the install command (``scripts/install-tools
kubernetes etcd kwok``), never a skip. When a test that uses the cluster fails, the log
tail of every component is attached to its report.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from lightkube import Client, KubeConfig

from ocigitops.errors import OcigitopsError
from puller.devcluster import Cluster, cluster_down, cluster_up

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
    cluster = getattr(item, "funcargs", {}).get("kube_cluster")
    if isinstance(cluster, Cluster):
        rep.sections.append(("dev cluster logs", cluster.log_tails(20)))
