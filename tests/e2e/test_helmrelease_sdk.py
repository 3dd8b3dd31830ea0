"""The controller with ``--helm-engine sdk`` and ``--default-service-account tenant`` (a
controller of this module's own: both flags change how every object is reconciled).

1. A HelmRelease with ``postRenderers`` and no ``serviceAccountName``: installed and
   upgraded by Helm's Go SDK in the controller process (the objects' field manager is not
   ``helm``, the binary engine's), post-rendered, as the default service account (which
   the namespace grants ``edit``).
2. A Kustomization with no ``serviceAccountName`` in a namespace that grants the default
   service account nothing: refused by the API server as that service account.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ocigitops.puller.devcluster import Cluster
from tests.helpers import helmrelease as base
from tests.helpers.kube import (
    KS,
    ControllerProcess,
    Kube,
    apply_kustomization,
    apply_source,
    wait_ready_verdict,
)
from tests.helpers.publish import configmap, manifest_tree, publish
from tests.helpers.registries import Registry

pytestmark = pytest.mark.e2e

# The shared chart and namespace fixtures (tests/helpers/helmrelease.py), with this
# module's controller.
chart_url = base.chart_url
hrns = base.hrns
_get, _hr, _wait, helm_cli = base._get, base._hr, base._wait, base.helm_cli
_post_renderers = base._post_renderers

TENANT = "tenant"


@pytest.fixture(scope="module")
def controller(kube_api: Kube, kube_cluster: Cluster,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    """This module's controller: the SDK engine, and a default service account."""
    ctl = ControllerProcess("sdk", kube_cluster.kubeconfig,
                            tmp_path_factory.mktemp("controller-sdk"),
                            ["--concurrent", "2", "--helm-engine", "sdk",
                             "--default-service-account", TENANT])
    try:
        ctl.start().wait_ready(30)
        yield ctl
    finally:
        ctl.stop()
        print(f"\ncontroller log tail:\n{ctl.log_tail()}")


def _tenant(kube: Kube, *, grant: bool) -> None:
    kube.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": TENANT, "namespace": kube.namespace}})
    if grant:
        kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": "tenant-edit", "namespace": kube.namespace},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                "kind": "ClusterRole", "name": "edit"},
                    "subjects": [{"kind": "ServiceAccount", "name": TENANT,
                                  "namespace": kube.namespace}]})


def test_sdk_engine_install_upgrade_post_renderers(hrns: Kube, kube_cluster: Cluster) -> None:
    ns = hrns.namespace
    _tenant(hrns, grant=True)
    _hr(hrns, "post", values={"message": "hi"}, postRenderers=_post_renderers("2"))
    hr = _wait(hrns, "post", "Ready", "True", "InstallSucceeded", timeout=90)
    dep = hrns.get("apps/v1", "Deployment", "post-app") or {}
    assert dep["spec"]["replicas"] == 2
    assert dep["metadata"]["labels"]["post-rendered"] == "yes"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.example/patched:2"
    # Applied by the SDK in the controller process, not by a helm binary.
    managers = {m.get("manager") for m in dep["metadata"]["managedFields"]}
    assert "helm" not in managers, managers
    manifest = helm_cli(kube_cluster, "helm4", "get", "manifest", "post", "-n", ns)
    assert "registry.example/patched:2" in manifest

    _hr(hrns, "post", values={"message": "bye"}, postRenderers=_post_renderers("3"))
    hr = _wait(hrns, "post", "Ready", "True", "UpgradeSucceeded", timeout=90)
    assert [h["version"] for h in hr["status"]["history"]] == [2, 1]
    assert (hrns.get("v1", "ConfigMap", "post-cm") or {})["data"]["message"] == "bye"
    dep = hrns.get("apps/v1", "Deployment", "post-app") or {}
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.example/patched:3"
    assert _get(hrns, "post")["status"]["history"][0]["status"] == "deployed"


def test_default_service_account_for_kustomizations(ns: Kube, embedded_registry: Registry,
                                                    tmp_path: Path) -> None:
    host, repo = embedded_registry.host, f"sdk/{ns.namespace}"
    rev = publish(host, repo, manifest_tree(tmp_path, "v1", configmap("locked", {"a": "b"})))
    _tenant(ns, grant=False)
    apply_source(ns, "app", host, repo)
    apply_kustomization(ns, "app", "app")  # no serviceAccountName
    message = wait_ready_verdict(
        ns, KS, "app", "Kustomization refused as the default service account",
        lambda ready, st: ready.get("status") == "False"
        and st.get("lastAttemptedRevision") == rev)["message"]
    assert "forbidden" in message, message
    assert f"system:serviceaccount:{ns.namespace}:{TENANT}" in message, message
    assert ns.get("v1", "ConfigMap", "locked") is None
