"""The operator on the dev cluster: ``ocigitops operator run`` (a real process) reconciles
an Instance whose distribution is pushed and signed by ``ocigitops dist push --sign`` into
the embedded registry. One scenario, in file order: a fresh install (the controller's
Deployment becomes Available through kwok), an upgrade to a newer signed version, a wrongly
signed and an unsigned version refused with the cluster unchanged, components and the
multitenant lockdown changing the controller's flags, sync creating an owned source and
Kustomization, a second Instance refused, and a deletion that removes the controller but
keeps the CRDs and the user's objects."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ocigitops.puller.api.meta import API_VERSION, RECONCILE_REQUESTED_AT
from ocigitops.puller.devcluster import Cluster
from ocigitops.puller.operator.manifests import OWNER_NAME_LABEL, OWNER_NAMESPACE_LABEL
from tests.helpers.cli import ocigitops
from tests.helpers.kube import ControllerProcess, Kube, condition, wait_for
from tests.helpers.paths import DEPLOY
from tests.helpers.registries import Registry

pytestmark = pytest.mark.e2e

NS = "op-e2e"
ENV = {"COSIGN_PASSWORD": "operator test"}
REV = "main@sha1:0123456789abcdef0123456789abcdef01234567"
WAIT = 45.0


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class OperatorProcess(ControllerProcess):
    """``ocigitops operator run`` watching :data:`NS`."""

    def start(self) -> OperatorProcess:
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ocigitops.cli", "operator", "run", "--kubeconfig",
                 str(self.kubeconfig), "--namespace", NS,
                 "--metrics-addr", f"127.0.0.1:{self.metrics_port}",
                 "--health-addr", f"127.0.0.1:{self.health_port}"],
                stdout=logf, stderr=logf, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self


class Scenario:
    """What the tests share: the cluster, the registry, the keys, the operator."""

    def __init__(self, kube: Kube, reg: Registry, tmp: Path, op: OperatorProcess) -> None:
        self.kube = kube
        self.reg = reg
        self.tmp = tmp
        self.op = op
        self.repo = "operator/dist"

    def push(self, version: str, *, key: str | None = "cosign") -> str:
        """Push version ``version`` (its controller image digest derived from it)."""
        image = f"{self.reg.host}/ocigitops/controller@{_digest(version)}"
        sign = ["--sign", "--key", str(self.tmp / f"{key}.key")] if key else []
        ocigitops("dist", "push", f"{self.reg.url(self.repo)}:{version}", "--image", image,
                  "--revision", REV, *self.reg.cli_flags(), *sign, env=ENV)
        return image

    def instance(self, name: str = "ocigitops") -> dict[str, Any]:
        obj = self.kube.get(API_VERSION, "Instance", name)
        assert obj is not None
        return obj

    def apply_instance(self, name: str = "ocigitops", **spec: Any) -> None:
        dist = {"version": ">=0.1.0 <1.0.0", "artifact": self.reg.url(self.repo),
                "verify": {"provider": "cosign", "secretRef": {"name": "dist-keys"}}}
        self.kube.apply({"apiVersion": API_VERSION, "kind": "Instance",
                         "metadata": {"name": name, "namespace": NS},
                         "spec": {"distribution": {**dist, **spec.pop("distribution", {})},
                                  "interval": "1h", "timeout": "60s", **spec}})

    def request(self) -> None:
        """Ask for a reconcile now (the tags are polled at ``interval`` otherwise)."""
        self.kube.call(lambda d: d.merge_patch(
            API_VERSION, "Instance", "ocigitops", NS,
            {"metadata": {"annotations": {RECONCILE_REQUESTED_AT: str(time.time())}}}))

    def wait_ready(self, revision_prefix: str, name: str = "ocigitops") -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            obj = self.instance(name)
            st = obj.get("status") or {}
            ok = (condition(obj, "Ready").get("status") == "True"
                  and st.get("observedGeneration") == obj["metadata"]["generation"]
                  and str(st.get("lastAppliedRevision", "")).startswith(revision_prefix))
            return obj if ok else None

        out: dict[str, Any] = wait_for(f"Instance Ready at {revision_prefix}", ready, WAIT,
                                       explain=self.explain)
        return out

    def wait_refused(self, reason: str, name: str = "ocigitops",
                     attempted: str = "") -> dict[str, Any]:
        def refused() -> dict[str, Any] | None:
            obj = self.instance(name)
            ready = condition(obj, "Ready")
            st = obj.get("status") or {}
            ok = (ready.get("status") == "False" and ready.get("reason") == reason
                  and str(st.get("lastAttemptedRevision", "")).startswith(attempted))
            return obj if ok else None

        out: dict[str, Any] = wait_for(f"Instance {name} refused ({reason})", refused, WAIT,
                                       explain=self.explain)
        return out

    def explain(self) -> str:
        objs = {o["metadata"]["name"]: o.get("status") for o in
                self.kube.list(API_VERSION, "Instance")}
        return f"instances: {yaml.safe_dump(objs)[:4000]}\n{self.op.tail()}"

    def controller(self) -> dict[str, Any]:
        dep = self.kube.get("apps/v1", "Deployment", "ocigitops-controller")
        assert dep is not None
        return dep

    def container(self) -> dict[str, Any]:
        return dict(self.controller()["spec"]["template"]["spec"]["containers"][0])


def _release(kube: Kube, kind: str, name: str) -> None:
    kube.call(lambda d: d.merge_patch(API_VERSION, kind, name, NS,
                                      {"metadata": {"finalizers": None}}))


def _unlabel_crds(kube: Kube) -> None:
    drop = {"metadata": {"labels": {OWNER_NAME_LABEL: None, OWNER_NAMESPACE_LABEL: None}}}
    for crd in kube.list("apiextensions.k8s.io/v1", "CustomResourceDefinition", None):
        if OWNER_NAME_LABEL in (crd["metadata"].get("labels") or {}):
            _patch_crd(kube, crd["metadata"]["name"], drop)


def _patch_crd(kube: Kube, name: str, body: dict[str, Any]) -> None:
    kube.call(lambda d: d.merge_patch("apiextensions.k8s.io/v1", "CustomResourceDefinition",
                                      name, "", body))


@pytest.fixture(scope="module")
def scenario(kube_api: Kube, kube_cluster: Cluster, embedded_registry: Registry,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    tmp = tmp_path_factory.mktemp("operator")
    ocigitops("generate", "key-pair", cwd=tmp, env=ENV)
    ocigitops("generate", "key-pair", "--output-key-prefix", "other", cwd=tmp, env=ENV)
    kube_api.apply(yaml.safe_load((DEPLOY / "operator" / "instances.yaml").read_text()))
    kube_api.wait("CRD instances", lambda: condition(kube_api.get(
        "apiextensions.k8s.io/v1", "CustomResourceDefinition", "instances.ocigitops.dev", None),
        "Established").get("status") == "True", 30)
    kube_api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    kube = kube_api.in_ns(NS)
    kube.apply({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "dist-keys", "namespace": NS},
                "stringData": {"cosign.pub": (tmp / "cosign.pub").read_text()}})
    op = OperatorProcess("operator", kube_cluster.kubeconfig, tmp, [])
    op.start().wait_ready(30)
    try:
        yield Scenario(kube, embedded_registry, tmp, op)
    finally:
        op.stop()
        print(f"\noperator log tail:\n{op.log_tail()}")
        for kind in ("Instance", "Kustomization", "OCIRepository"):
            for o in kube.list(API_VERSION, kind):
                _release(kube, kind, o["metadata"]["name"])
        kube_api.call(lambda d: d.delete("v1", "Namespace", NS, None))
        # The CRDs stay (as designed) with the operator's owner labels: dropped, so the
        # session's other modules see them as the kube_api fixture applied them.
        _unlabel_crds(kube_api)


def test_fresh_install_from_a_signed_distribution(scenario: Scenario) -> None:
    image = scenario.push("v0.1.0")
    scenario.apply_instance()
    obj = scenario.wait_ready("v0.1.0@sha256:")
    st = obj["status"]
    # The controller's Deployment, pinned by digest, became Available (kwok) before Ready.
    dep = scenario.controller()
    assert dep["status"].get("availableReplicas") == 1
    assert scenario.container()["image"] == image
    assert st["verification"]["authorities"][0]["passed"] is True
    assert st["components"][0] == {"name": "oci", "image": image.split("@")[0],
                                   "digest": image.split("@")[1]}
    ids = {e["id"] for e in st["inventory"]["entries"]}
    assert "_ocirepositories.ocigitops.dev_apiextensions.k8s.io_CustomResourceDefinition" in ids
    assert f"{NS}_ocigitops-controller_apps_Deployment" in ids
    assert condition(obj, "Reconciling") == {} and condition(obj, "Stalled") == {}


def test_upgrade_to_a_newer_signed_version(scenario: Scenario) -> None:
    image = scenario.push("v0.1.1")
    scenario.request()
    scenario.wait_ready("v0.1.1@sha256:")
    assert scenario.container()["image"] == image


def test_wrongly_signed_and_unsigned_versions_are_refused(scenario: Scenario) -> None:
    before = scenario.controller()
    scenario.push("v0.1.2", key="other")
    scenario.request()
    obj = scenario.wait_refused("VerificationError", attempted="v0.1.2@")
    msg = condition(obj, "Ready")["message"]
    assert "nothing applied" in msg and "cosign" in msg, msg
    assert obj["status"]["lastAppliedRevision"].startswith("v0.1.1@")
    assert obj["status"]["verification"]["authorities"][0]["passed"] is False
    scenario.push("v0.1.3", key=None)
    scenario.request()
    obj = scenario.wait_refused("VerificationError", attempted="v0.1.3@")
    assert "cosign: no key-signed cosign signature found" in condition(obj, "Ready")["message"]
    assert obj["status"]["verification"]["authorities"][0]["passed"] is False
    # The cluster is as it was: the same Deployment spec (generation), the same image.
    after = scenario.controller()
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert scenario.container()["image"] == \
        before["spec"]["template"]["spec"]["containers"][0]["image"]
    # Back to a range without the refused versions.
    scenario.apply_instance(distribution={"version": ">=0.1.0 <0.1.2"})
    scenario.wait_ready("v0.1.1@")


def test_components_and_multitenant_change_the_flags(scenario: Scenario) -> None:
    scenario.apply_instance(distribution={"version": ">=0.1.0 <0.1.2"},
                            components=["oci", "kustomization"],
                            cluster={"multitenant": True},
                            commonMetadata={"labels": {"team": "platform"}},
                            kustomize={"patches": [{
                                "target": {"kind": "Deployment",
                                           "name": "ocigitops-controller"},
                                "patch": "- op: add\n  path: /metadata/annotations/patched\n"
                                         "  value: 'yes'\n"}]})
    obj = scenario.wait_ready("v0.1.1@")
    dep = scenario.controller()
    assert dep["metadata"]["annotations"]["patched"] == "yes"
    assert dep["metadata"]["labels"]["team"] == "platform"
    args = scenario.container()["args"]
    assert "--controllers=oci,kustomization" in args
    assert "--no-cross-namespace-refs" in args
    assert "--default-service-account=default" in args
    assert [c["name"] for c in obj["status"]["components"]] == ["oci", "kustomization"]
    # Those flags, run by a real controller: a cross-namespace sourceRef is refused.
    own = [a for a in args[2:] if not a.startswith(("--leader-elect", "--metrics-addr",
                                                    "--health-addr"))]
    ctl = ControllerProcess("multitenant", scenario.op.kubeconfig, scenario.tmp,
                            [*own, "--watch-namespace", NS])
    try:
        ctl.start().wait_ready(30)
        scenario.kube.apply({"apiVersion": API_VERSION, "kind": "Kustomization",
                             "metadata": {"name": "cross", "namespace": NS},
                             "spec": {"interval": "1h", "path": "./", "prune": True,
                                      "sourceRef": {"kind": "OCIRepository", "name": "x",
                                                    "namespace": "elsewhere"}}})
        refused = wait_for("cross-namespace Kustomization refused", lambda: condition(
            scenario.kube.get(API_VERSION, "Kustomization", "cross"), "Stalled"), WAIT,
            explain=ctl.tail)
        assert condition(scenario.kube.get(API_VERSION, "Kustomization", "cross"),
                         "Ready")["reason"] == "AccessDenied", refused
        # ... and one without serviceAccountName acts as the namespace's default one
        # (which has no RBAC here: the API server's refusal names it).
        (scenario.tmp / "app").mkdir(exist_ok=True)
        (scenario.tmp / "app" / "cm.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: tenant-cm}\n")
        ocigitops("push", "artifact", f"{scenario.reg.url('operator/app')}:v1", "--path",
                  str(scenario.tmp / "app"), "--source", "e2e", "--revision", REV,
                  *scenario.reg.cli_flags())
        scenario.kube.apply({"apiVersion": API_VERSION, "kind": "OCIRepository",
                             "metadata": {"name": "tenant", "namespace": NS},
                             "spec": {"url": scenario.reg.url("operator/app"),
                                      "interval": "1h", "ref": {"tag": "v1"}}})
        scenario.kube.apply({"apiVersion": API_VERSION, "kind": "Kustomization",
                             "metadata": {"name": "tenant", "namespace": NS},
                             "spec": {"interval": "1h", "path": "./", "prune": True,
                                      "sourceRef": {"kind": "OCIRepository",
                                                    "name": "tenant"}}})
        who = f"system:serviceaccount:{NS}:default"
        wait_for(f"the Kustomization applied as {who}", lambda: who in condition(
            scenario.kube.get(API_VERSION, "Kustomization", "tenant"), "Ready").get(
                "message", ""), WAIT, explain=ctl.tail)
        assert scenario.kube.get("v1", "ConfigMap", "tenant-cm") is None
    finally:
        ctl.stop()
        for kind, name in (("Kustomization", "cross"), ("Kustomization", "tenant"),
                           ("OCIRepository", "tenant")):
            if scenario.kube.get(API_VERSION, kind, name) is not None:
                _release(scenario.kube, kind, name)
                scenario.kube.delete(API_VERSION, kind, name)
    # Toggled back: every reconciler, no lockdown.
    scenario.apply_instance(distribution={"version": ">=0.1.0 <0.1.2"})
    scenario.wait_ready("v0.1.1@")
    args = scenario.container()["args"]
    assert not any(a.startswith(("--controllers", "--no-cross", "--default-service"))
                   for a in args), args


def test_sync_creates_an_owned_source_and_kustomization(scenario: Scenario) -> None:
    scenario.apply_instance(distribution={"version": ">=0.1.0 <0.1.2"},
                            sync={"url": scenario.reg.url("operator/fleet"), "ref": "prod",
                                  "path": "./clusters/a"})
    obj = scenario.wait_ready("v0.1.1@")
    uid = obj["metadata"]["uid"]
    src = scenario.kube.get(API_VERSION, "OCIRepository", "ocigitops")
    ks = scenario.kube.get(API_VERSION, "Kustomization", "ocigitops")
    assert src is not None and ks is not None
    assert src["spec"]["ref"] == {"tag": "prod"}
    assert ks["spec"]["sourceRef"] == {"kind": "OCIRepository", "name": "ocigitops"}
    for o in (src, ks):
        assert o["metadata"]["ownerReferences"][0]["uid"] == uid
    ids = {e["id"] for e in obj["status"]["inventory"]["entries"]}
    assert f"{NS}_ocigitops_ocigitops.dev_Kustomization" in ids


def test_a_second_instance_is_refused(scenario: Scenario) -> None:
    scenario.apply_instance("second")
    obj = scenario.wait_refused("DuplicateInstance", name="second")
    assert f"{NS}/ocigitops already manages this cluster" in condition(obj, "Ready")["message"]
    assert condition(obj, "Stalled")["status"] == "True"
    scenario.kube.delete(API_VERSION, "Instance", "second")
    wait_for("Instance second gone", lambda: scenario.kube.get(
        API_VERSION, "Instance", "second") is None, 15)


def test_delete_removes_the_controller_and_keeps_crds_and_user_objects(
        scenario: Scenario) -> None:
    kube = scenario.kube
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "mine", "namespace": NS}, "data": {"a": "b"}})
    kube.apply({"apiVersion": API_VERSION, "kind": "OCIRepository",
                "metadata": {"name": "users-own", "namespace": NS},
                "spec": {"url": "oci://example.invalid/x", "interval": "1h",
                         "suspend": True}})
    kube.delete(API_VERSION, "Instance", "ocigitops")
    wait_for("Instance gone (its finalizer ran)",
             lambda: kube.get(API_VERSION, "Instance", "ocigitops") is None, WAIT,
             explain=scenario.explain)
    assert kube.get("apps/v1", "Deployment", "ocigitops-controller") is None
    assert kube.get("rbac.authorization.k8s.io/v1", "ClusterRole", "ocigitops-controller",
                    None) is None
    assert kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition",
                    "kustomizations.ocigitops.dev", None) is not None
    assert kube.get("v1", "ConfigMap", "mine") is not None
    assert kube.get(API_VERSION, "OCIRepository", "users-own") is not None
    # The sync Kustomization was released, not pruned: no finalizer left on it.
    ks = kube.get(API_VERSION, "Kustomization", "ocigitops")
    assert ks is None or not ks["metadata"].get("finalizers")


def test_install_and_uninstall_commands(scenario: Scenario, kube_cluster: Cluster) -> None:
    kubeconfig = str(kube_cluster.kubeconfig)
    out = ocigitops("install", "--artifact", scenario.reg.url(scenario.repo),
                    "--version", "<0.1.2", "--namespace", NS, "--components", "oci",
                    "--verify-key", str(scenario.tmp / "cosign.pub"),
                    "--manifests", str(DEPLOY / "operator"), "--timeout", "60s",
                    "--kubeconfig", kubeconfig)
    assert "ready at v0.1.1@sha256:" in out.stdout, out.stdout + out.stderr
    assert "--controllers=oci" in scenario.container()["args"]
    assert scenario.kube.get("apps/v1", "Deployment", "ocigitops-operator") is not None
    out = ocigitops("uninstall", "--namespace", NS, "--manifests", str(DEPLOY / "operator"),
                    "--timeout", "60s", "--kubeconfig", kubeconfig)
    assert f"deleted Instance/{NS}/ocigitops" in out.stdout, out.stdout
    assert scenario.kube.get("apps/v1", "Deployment", "ocigitops-operator") is None
    assert scenario.kube.get("apps/v1", "Deployment", "ocigitops-controller") is None
