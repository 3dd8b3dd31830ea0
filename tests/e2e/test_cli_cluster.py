"""The cluster commands of the CLI against a real kube-apiserver (issue 9): Flux's forms
(``reconcile ks``, ``suspend/resume --all``), ``--context``, ``-o json|yaml`` on ``get``,
``version`` with the controller's version, one-line errors and their exit codes.

Objects are created suspended where the controller does not need to act, so these tests
check the CLI, not reconciliation (tests/e2e/test_puller_behaviours.py does that).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ocigitops import exitcodes
from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.devcluster import Cluster
from ocigitops.version import __version__
from tests.helpers.cli import cli, one_error
from tests.helpers.kube import Kube


def _kustomization(name: str, *, suspend: bool = True) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Kustomization",
            "metadata": {"name": name},
            "spec": {"sourceRef": {"kind": "OCIRepository", "name": "none"}, "path": "./",
                     "interval": "10m", "prune": False, "suspend": suspend}}


def _source(name: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "OCIRepository", "metadata": {"name": name},
            "spec": {"url": "oci://127.0.0.1:1/none", "ref": {"tag": "v1"},
                     "interval": "10m", "suspend": True}}


def _apply(ns: Kube, obj: dict[str, Any]) -> None:
    obj["metadata"]["namespace"] = ns.namespace
    ns.apply(obj)


def _run(cluster: Cluster, ns: Kube, *args: str) -> Any:
    return cli(*args, "-n", str(ns.namespace), "--kubeconfig", str(cluster.kubeconfig))


def test_get_prints_json_and_yaml(kube_cluster: Cluster, ns: Kube) -> None:
    _apply(ns, _kustomization("one"))
    _apply(ns, _source("src"))
    as_json = _run(kube_cluster, ns, "get", "kustomizations", "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    assert [(r["namespace"], r["name"], r["suspended"]) for r in rows] == \
        [(ns.namespace, "one", True)]
    as_yaml = _run(kube_cluster, ns, "get", "sources", "oci", "-o", "yaml")
    assert [r["name"] for r in yaml.safe_load(as_yaml.stdout)] == ["src"]
    table = _run(kube_cluster, ns, "get", "kustomizations")
    assert table.stdout.splitlines()[0].split()[:2] == ["NAME", "REVISION"]


def test_suspend_and_resume_all_and_the_ks_alias(kube_cluster: Cluster, ns: Kube) -> None:
    for name in ("a", "b", "c"):
        _apply(ns, _kustomization(name, suspend=False))

    def suspended() -> dict[str, bool]:
        return {o["metadata"]["name"]: bool(o["spec"].get("suspend"))
                for o in ns.list(API_VERSION, "Kustomization")}

    out = _run(kube_cluster, ns, "suspend", "ks", "--all", "-o", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["names"] == ["a", "b", "c"]
    assert suspended() == {"a": True, "b": True, "c": True}
    one = _run(kube_cluster, ns, "resume", "ks", "b")
    assert one.stdout.strip() == f"Kustomization {ns.namespace}/b resumed", one.stderr
    assert suspended() == {"a": True, "b": False, "c": True}
    everyone = _run(kube_cluster, ns, "resume", "kustomization", "--all")
    assert everyone.returncode == 0 and len(everyone.stdout.splitlines()) == 3
    assert suspended() == {"a": False, "b": False, "c": False}
    # Suspended again, so the controller leaves them alone for the rest of the test.
    _run(kube_cluster, ns, "suspend", "ks", "--all")
    both = _run(kube_cluster, ns, "suspend", "ks", "a", "--all")
    one_error(both, "usage: ks", "--all names no object")
    assert both.returncode == exitcodes.USAGE


def test_missing_object_is_not_found(kube_cluster: Cluster, ns: Kube) -> None:
    proc = _run(kube_cluster, ns, "reconcile", "ks", "nothing-here", "--timeout", "20s")
    one_error(proc, f"Kustomization {ns.namespace}/nothing-here not found")
    assert proc.returncode == exitcodes.NOT_FOUND
    proc = _run(kube_cluster, ns, "suspend", "source", "oci", "nothing-here", "-o", "json")
    one_error(proc, "not found")
    assert json.loads(proc.stdout)["exitCode"] == exitcodes.NOT_FOUND


def test_context_flag_picks_the_context(kube_cluster: Cluster, ns: Kube,
                                        tmp_path: Path) -> None:
    """A kubeconfig whose current context points nowhere: ``--context`` picks the real one."""
    doc = yaml.safe_load(Path(kube_cluster.kubeconfig).read_text())
    real = doc["contexts"][0]["name"]
    doc["clusters"].append({"name": "dead", "cluster": {"server": "https://127.0.0.1:1"}})
    doc["contexts"].append({"name": "dead", "context": {
        "cluster": "dead", "user": doc["contexts"][0]["context"]["user"]}})
    doc["current-context"] = "dead"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(doc))
    _apply(ns, _kustomization("ctx"))
    base = ["get", "kustomizations", "-n", str(ns.namespace), "--kubeconfig", str(kubeconfig)]
    dead = cli(*base)
    one_error(dead, "cannot reach the Kubernetes API server https://127.0.0.1:1",
              "context dead")
    assert dead.returncode == exitcodes.UNREACHABLE
    ok = cli(*base, "--context", real, "-o", "json")
    assert ok.returncode == 0, ok.stderr
    assert [r["name"] for r in json.loads(ok.stdout)] == ["ctx"]


def test_version_reports_the_controller_deployment(kube_cluster: Cluster, kube_api: Kube,
                                                   ns: Kube) -> None:
    """``version`` reads the controller Deployment's version label (deploy/ sets it with
    the image tag), here in a namespace of the test's own."""
    kube_api.apply({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "ocigitops-controller", "namespace": ns.namespace,
                     "labels": {"app.kubernetes.io/version": "v9.8.7"}},
        "spec": {"replicas": 0,
                 "selector": {"matchLabels": {"app": "ocigitops-controller"}},
                 "template": {"metadata": {"labels": {"app": "ocigitops-controller"}},
                              "spec": {"containers": [{
                                  "name": "controller",
                                  "image": "ghcr.io/ocigitops/ocigitops:v9.8.7"}]}}}})
    proc = _run(kube_cluster, ns, "version", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["client"] == f"v{__version__}" and doc["controller"] == "v9.8.7"
    assert str(doc["kubernetes"]).startswith("v1.")
    text = _run(kube_cluster, ns, "version")
    assert text.stdout.splitlines()[:2] == [f"ocigitops: v{__version__}", "controller: v9.8.7"]
    # Without a controller in the namespace: the client version, and why on stderr.
    none = cli("version", "-n", "default", "--kubeconfig", str(kube_cluster.kubeconfig))
    assert none.returncode == 0 and none.stdout.startswith(f"ocigitops: v{__version__}")
    assert "Deployment default/ocigitops-controller not found" in none.stderr
