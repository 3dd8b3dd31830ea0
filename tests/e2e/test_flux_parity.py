"""Flux parity fixes of issue 8, on the real API server with the controller process.

postBuild substitution follows kustomize-controller (Flux 2.9):
- without ``postBuild`` nothing is substituted: a literal ``${X}`` a user ships (a shell
  script in a ConfigMap) arrives as written (before: replaced by an empty string);
- with ``postBuild`` and the default strategy ``WithVariables``, nothing is substituted when
  no variable is defined;
- strict mode (the default): an undefined variable without a default fails the
  Kustomization with a message naming it, and nothing of that revision is applied.

Prune: an object whose delete is refused stays in the inventory (PruneFailed) and is
pruned once the delete is allowed. ``deletionPolicy: WaitForTermination`` deletes whatever
``prune`` says and waits for the objects to go. ``history`` records failed revisions with
their reason.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.devcluster import Cluster
from tests.helpers.kube import (
    KS,
    WAIT,
    Kube,
    apply_kustomization,
    apply_source,
    condition,
    configmap_data,
    kube_cli,
    ready_condition,
    status_of,
    wait_applied,
    wait_ready_verdict,
)
from tests.helpers.publish import configmap, manifest_tree, publish
from tests.helpers.registries import Registry

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

SCRIPT = "#!/bin/sh\necho \"${HOME}\" ${1:-none}\n"


def test_no_post_build_substitutes_nothing(ns: Kube, embedded_registry: Registry,
                                           tmp_path: Path) -> None:
    host, repo = embedded_registry.host, f"parity/{ns.namespace}"
    rev = publish(host, repo, manifest_tree(tmp_path, "v1",
                                            configmap("script", {"run.sh": SCRIPT})))
    apply_source(ns, "app", host, repo)
    apply_kustomization(ns, "app", "app")
    wait_applied(ns, "app", rev)
    assert configmap_data(ns, "script") == {"run.sh": SCRIPT}


def test_post_build_without_variables_substitutes_nothing(ns: Kube, embedded_registry: Registry,
                                                          tmp_path: Path) -> None:
    host, repo = embedded_registry.host, f"parity/{ns.namespace}"
    rev = publish(host, repo, manifest_tree(tmp_path, "v1",
                                            configmap("script", {"run.sh": SCRIPT})))
    apply_source(ns, "app", host, repo)
    apply_kustomization(ns, "app", "app", postBuild={"substitute": {}})
    wait_applied(ns, "app", rev)
    assert configmap_data(ns, "script") == {"run.sh": SCRIPT}


def test_strict_substitution_names_the_undefined_variable(ns: Kube, kube_cluster: Cluster,
                                                          embedded_registry: Registry,
                                                          tmp_path: Path) -> None:
    host, repo = embedded_registry.host, f"parity/{ns.namespace}"
    publish(host, repo, manifest_tree(tmp_path, "v1", configmap(
        "settings", {"color": "${color}", "peer": "${peer_ip}"})))
    apply_source(ns, "app", host, repo)
    apply_kustomization(ns, "app", "app", postBuild={"substitute": {"color": "red"}})
    failed = wait_ready_verdict(ns, KS, "app", "the Kustomization fails on the undefined variable",
                                lambda ready, _st: ready.get("status") == "False"
                                and "peer_ip" in ready.get("message", ""))
    assert "not defined" in failed["message"]
    assert configmap_data(ns, "settings") is None  # nothing of that revision was applied
    # A default makes it pass, as in Flux.
    rev = publish(host, repo, manifest_tree(tmp_path, "v2", configmap(
        "settings", {"color": "${color}", "peer": "${peer_ip:=10.0.0.1}"})))
    kube_cli(kube_cluster, ns, "reconcile", "kustomization", "app", "--with-source",
             "--timeout", "40", check=False)
    wait_applied(ns, "app", rev)
    assert configmap_data(ns, "settings") == {"color": "red", "peer": "10.0.0.1"}


def _role(ns: Kube, verbs: list[str]) -> None:
    ns.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
              "metadata": {"name": "deployer", "namespace": ns.namespace},
              "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": verbs}]})


def test_objects_whose_delete_fails_stay_in_the_inventory(ns: Kube, kube_cluster: Cluster,
                                                          embedded_registry: Registry,
                                                          tmp_path: Path) -> None:
    """Before the fix an object whose delete was refused fell out of the inventory and was
    orphaned for good; now it stays, the Kustomization says PruneFailed, and once the
    delete is allowed the next reconcile prunes it."""
    host, repo = embedded_registry.host, f"parity/{ns.namespace}"
    ns.apply({"apiVersion": "v1", "kind": "ServiceAccount",
              "metadata": {"name": "deployer", "namespace": ns.namespace}})
    _role(ns, ["get", "list", "watch", "create", "patch", "update"])
    ns.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
              "metadata": {"name": "deployer", "namespace": ns.namespace},
              "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                          "name": "deployer"},
              "subjects": [{"kind": "ServiceAccount", "name": "deployer",
                            "namespace": ns.namespace}]})
    v1 = publish(host, repo, manifest_tree(tmp_path, "v1", configmap("keep", {"a": "1"}),
                                           configmap("gone", {"b": "2"})))
    apply_source(ns, "app", host, repo)
    apply_kustomization(ns, "app", "app", serviceAccountName="deployer")
    wait_applied(ns, "app", v1)

    def inventory() -> set[str]:
        entries = (status_of(ns, KS, "app").get("inventory") or {}).get("entries") or []
        return {e["id"].split("_")[1] for e in entries}

    assert inventory() == {"keep", "gone"}
    publish(host, repo, manifest_tree(tmp_path, "v2", configmap("keep", {"a": "1"})))
    kube_cli(kube_cluster, ns, "reconcile", "kustomization", "app", "--with-source",
             "--timeout", "40", check=False)
    refused = wait_ready_verdict(ns, KS, "app", "prune refused",
                                 lambda ready, _st: ready.get("reason") == "PruneFailed")
    assert "gone" in refused["message"]
    assert inventory() == {"keep", "gone"}
    assert configmap_data(ns, "gone") == {"b": "2"}

    _role(ns, ["get", "list", "watch", "create", "patch", "update", "delete"])
    kube_cli(kube_cluster, ns, "reconcile", "kustomization", "app", "--timeout", "40",
             check=False)
    ns.wait("pruned once allowed", lambda: configmap_data(ns, "gone") is None
            and ready_condition(ns, KS, "app").get("status") == "True", WAIT)
    assert inventory() == {"keep"}


def test_wait_for_termination_deletes_whatever_prune_says(ns: Kube,
                                                          embedded_registry: Registry,
                                                          tmp_path: Path) -> None:
    """``deletionPolicy: WaitForTermination`` deletes the objects even with ``prune: false``
    (before the fix it followed prune), and the Kustomization goes only once they are gone:
    a finalizer of the object's own holds it, and the Kustomization waits for it."""
    host, repo = embedded_registry.host, f"parity/{ns.namespace}"
    held = configmap("held", {"a": "1"})
    held["metadata"]["finalizers"] = ["example.com/hold"]
    rev = publish(host, repo, manifest_tree(tmp_path, "v1", held))
    apply_source(ns, "app", host, repo)
    apply_kustomization(ns, "app", "app", prune=False, deletionPolicy="WaitForTermination")
    wait_applied(ns, "app", rev)
    ns.delete(API_VERSION, KS, "app")
    ns.wait("the object is being deleted", lambda: bool(
        ((ns.get("v1", "ConfigMap", "held") or {}).get("metadata") or {})
        .get("deletionTimestamp")), WAIT)
    time.sleep(3)  # the Kustomization waits while the object's finalizer holds it
    ks = ns.get(API_VERSION, KS, "app")
    assert ks is not None, "the Kustomization went before its object terminated"
    assert ready_condition(ns, KS, "app").get("reason") == "WaitingForTermination" or \
        condition(ks, "Reconciling").get("reason") == "WaitingForTermination", ks
    ns.call(lambda d: d.merge_patch("v1", "ConfigMap", "held", str(ns.namespace),
                                    {"metadata": {"finalizers": None}}))
    ns.wait("the Kustomization goes once its object is gone",
            lambda: ns.get(API_VERSION, KS, "app") is None, WAIT)
    assert ns.get("v1", "ConfigMap", "held") is None


def test_history_records_failed_revisions(ns: Kube, kube_cluster: Cluster,
                                          embedded_registry: Registry,
                                          tmp_path: Path) -> None:
    host, repo = embedded_registry.host, f"parity/{ns.namespace}"
    good = publish(host, repo, manifest_tree(tmp_path, "v1", configmap("c", {"a": "1"})))
    apply_source(ns, "app", host, repo)
    apply_kustomization(ns, "app", "app")
    wait_applied(ns, "app", good)
    bad_cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
              "data": {"a": ["not", "a", "string"]}}  # refused by the API server
    bad = publish(host, repo, manifest_tree(tmp_path, "v2", bad_cm))
    kube_cli(kube_cluster, ns, "reconcile", "kustomization", "app", "--with-source",
             "--timeout", "40", check=False)
    ns.wait("the refused revision is in the history", lambda: any(
        h.get("metadata", {}).get("revision") == bad
        and h.get("lastReconciledStatus") == "ReconciliationFailed"
        for h in status_of(ns, KS, "app").get("history") or []), WAIT)
    history = status_of(ns, KS, "app")["history"]
    assert history[0]["metadata"]["revision"] == bad
    assert history[1]["metadata"]["revision"] == good
    assert history[1]["lastReconciledStatus"] == "ReconciliationSucceeded"
