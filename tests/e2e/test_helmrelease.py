"""HelmRelease on a real kube-apiserver (kwok makes Pods ready), reconciled by the
controller process with the helm 4 binary engine; charts pushed to the embedded registry
with ``ocigitops push chart`` and read through an OCIRepository (Helm chart layer,
``operation: copy``); the Helm 3.19 and Helm 4 CLIs are the peers.

1. The flow: install (values + valuesFrom with targetPath), Deployment Ready, ``helm list``
   and ``helm get values`` with both CLIs; a values change upgrades to revision 2; deletion
   uninstalls.
2. A chart that fails to render: nothing installed, the reason in status; an unsupported
   field: Stalled ``UnsupportedField``, nothing installed.
3. An install the API server refuses, with ``retries: 1``: two attempts, each remediated by
   uninstall, then Stalled ``RetriesExceeded``.
4. ``postRenderers`` (kustomize patches and images): the cluster and ``helm get manifest``
   show the post-rendered objects; a post-renderers change upgrades; a failing one
   installs nothing.
5. Adoption: a release installed with the helm 4 CLI is upgraded in place (as Flux does
   with a release it did not install), never reinstalled.
6. An unsigned chart behind an OCIRepository with ``verify``: ``SourceVerified=False``,
   the HelmRelease ``SourceNotReady``, nothing installed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.devcluster import Cluster
from ocigitops.verifier.keys import generate_key_pair
from tests.helpers import helmrelease as h
from tests.helpers.cli import ocigitops
from tests.helpers.kube import Kube, condition
from tests.helpers.registries import Registry

pytestmark = pytest.mark.e2e

# The shared chart and namespace fixtures (tests/helpers/helmrelease.py).
chart_url = h.chart_url
hrns = h.hrns
LAYER, _get, _hr, _wait, _releases, helm_cli = h.LAYER, h._get, h._hr, h._wait, h._releases, \
    h.helm_cli
_post_renderers = h._post_renderers

def test_install_upgrade_uninstall(hrns: Kube, kube_cluster: Cluster) -> None:
    ns = hrns.namespace
    hrns.apply({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "notes", "namespace": ns}, "data": {"note": "from-cm"}})
    _hr(hrns, "web", values={"message": "hi"},
        valuesFrom=[{"kind": "ConfigMap", "name": "notes", "valuesKey": "note",
                     "targetPath": "extra.note"},
                    {"kind": "Secret", "name": "absent", "optional": True}])
    hr = _wait(hrns, "web", "Ready", "True", "InstallSucceeded")
    st = hr["status"]
    assert condition(hr, "Released")["reason"] == "InstallSucceeded"
    assert st["history"][0]["version"] == 1 and st["history"][0]["status"] == "deployed"
    assert st["history"][0]["chartName"] == "tiny"
    assert st["history"][0]["chartVersion"] == "0.1.0"
    assert st["history"][0]["appVersion"] == "1.0.0"
    assert st["lastAttemptedConfigDigest"] == st["history"][0]["configDigest"]
    assert st["lastAttemptedRevision"].startswith("0.1.0@sha256:")
    assert "finalizers.ocigitops.dev" in hr["metadata"]["finalizers"]
    dep = hrns.get("apps/v1", "Deployment", "web-app") or {}
    assert (dep.get("status") or {}).get("readyReplicas") == 1  # waited: Ready via kwok
    cm = hrns.get("v1", "ConfigMap", "web-cm") or {}
    assert cm["data"] == {"message": "hi", "note": "from-cm"}
    for which in ("helm", "helm4"):
        listed = json.loads(helm_cli(kube_cluster, which, "list", "-n", ns, "-o", "json"))
        assert [(r["name"], r["revision"], r["status"]) for r in listed] == [
            ("web", "1", "deployed")]
        values = json.loads(helm_cli(kube_cluster, which, "get", "values", "web", "-n", ns,
                                     "-o", "json"))
        assert values == {"message": "hi", "extra": {"note": "from-cm"}}

    kc = str(kube_cluster.kubeconfig)
    table = ocigitops("get", "hr", "-n", ns, "--kubeconfig", kc).stdout
    assert "web" in table and "0.1.0" in table and "True" in table
    out = ocigitops("reconcile", "hr", "web", "--with-source", "-n", ns, "--kubeconfig", kc,
                    "-o", "json").stdout
    done = json.loads(out)
    assert done["kind"] == "HelmRelease" and done["source"]["name"] == "tiny"
    ocigitops("suspend", "hr", "web", "-n", ns, "--kubeconfig", kc)
    assert _get(hrns, "web")["spec"]["suspend"] is True
    ocigitops("resume", "helmrelease", "web", "-n", ns, "--kubeconfig", kc)
    assert _get(hrns, "web")["spec"]["suspend"] is False

    # A values change: revision 2.
    _hr(hrns, "web", values={"message": "bye"},
        valuesFrom=[{"kind": "ConfigMap", "name": "notes", "valuesKey": "note",
                     "targetPath": "extra.note"}])
    hr = _wait(hrns, "web", "Ready", "True", "UpgradeSucceeded")
    assert [h["version"] for h in hr["status"]["history"]] == [2, 1]
    assert [h["status"] for h in hr["status"]["history"]] == ["deployed", "superseded"]
    assert (hrns.get("v1", "ConfigMap", "web-cm") or {})["data"]["message"] == "bye"
    history = json.loads(helm_cli(kube_cluster, "helm4", "history", "web", "-n", ns,
                                  "-o", "json"))
    assert [h["revision"] for h in history] == [1, 2]

    # Deletion uninstalls.
    hrns.delete(API_VERSION, "HelmRelease", "web")
    hrns.wait("HelmRelease gone", lambda: hrns.get(API_VERSION, "HelmRelease", "web") is None,
              60)
    assert _releases(hrns, "web") == []
    assert hrns.get("v1", "ConfigMap", "web-cm") is None


def test_render_failure_and_unsupported_field(hrns: Kube) -> None:
    _hr(hrns, "bad", values={"message": ""})
    hr = _wait(hrns, "bad", "Ready", "False", "RetriesExceeded")
    assert "message is required" in condition(hr, "Ready")["message"]
    assert condition(hr, "Released")["reason"] == "InstallFailed"
    assert hr["status"]["installFailures"] == 1
    assert _releases(hrns, "bad") == []

    _hr(hrns, "later", values={"message": "x"}, postRenderers=[{"kustomize": {
        "patchesStrategicMerge": [{"kind": "Deployment"}]}}])
    hr = _wait(hrns, "later", "Stalled", "True", "UnsupportedField")
    assert "spec.postRenderers[0].kustomize.patchesStrategicMerge" in condition(
        hr, "Stalled")["message"]
    assert "history" not in hr["status"] or not hr["status"]["history"]
    assert _releases(hrns, "later") == []

    _hr(hrns, "remote", values={"message": "x"},
        kubeConfig={"secretRef": {"name": "remote-kubeconfig"}})
    hr = _wait(hrns, "remote", "Stalled", "True", "UnsupportedField")
    msg = condition(hr, "Ready")["message"]
    assert "spec.kubeConfig (remote clusters are not supported yet)" in msg, msg
    assert condition(hr, "Ready")["status"] == "False"
    assert _releases(hrns, "remote") == []


def test_install_failure_retries_then_remediation(hrns: Kube) -> None:
    _hr(hrns, "refused", interval="2s", values={"message": "x", "broken": True},
        install={"remediation": {"retries": 1}})
    hr = _wait(hrns, "refused", "Stalled", "True", "RetriesExceeded", timeout=90)
    st = hr["status"]
    assert st["installFailures"] == 2 and st["failures"] == 2
    assert "Failed to install after 2 attempt(s)" in condition(hr, "Ready")["message"]
    assert condition(hr, "Released")["reason"] == "InstallFailed"
    remediated = condition(hr, "Remediated")
    assert (remediated["status"], remediated["reason"]) == ("True", "UninstallSucceeded")
    assert _releases(hrns, "refused") == []


def test_upgrade_failure_rolled_back(hrns: Kube, kube_cluster: Cluster) -> None:
    ns = hrns.namespace
    _hr(hrns, "roll", interval="2s", values={"message": "good"},
        upgrade={"remediation": {"retries": 1}})
    _wait(hrns, "roll", "Ready", "True", "InstallSucceeded")
    _hr(hrns, "roll", interval="2s", values={"message": "good", "broken": True},
        upgrade={"remediation": {"retries": 1}})
    hr = _wait(hrns, "roll", "Stalled", "True", "RetriesExceeded", timeout=90)
    st = hr["status"]
    assert st["upgradeFailures"] == 2
    assert "Failed to upgrade after 2 attempt(s)" in condition(hr, "Ready")["message"]
    remediated = condition(hr, "Remediated")
    assert (remediated["status"], remediated["reason"]) == ("True", "RollbackSucceeded")
    history = json.loads(helm_cli(kube_cluster, "helm", "history", "roll", "-n", ns,
                                  "-o", "json"))
    # install, failed upgrade, rollback, failed upgrade, rollback (the last one deployed)
    assert [h["status"] for h in history][-1] == "deployed"
    assert [h["description"].split(" ")[0] for h in history].count("Rollback") == 2
    values = json.loads(helm_cli(kube_cluster, "helm4", "get", "values", "roll", "-n", ns,
                                 "-o", "json"))
    assert values == {"message": "good"}
    assert st["history"][0]["status"] == "deployed"


def test_chart_template_creates_and_deletes_its_helmchart(hrns: Kube) -> None:
    ns = hrns.namespace
    # The chart folder in the OCIRepository's artifact: a second OCIRepository extracting
    # the chart layer (no copy), as a HelmChart from an OCIRepository reads it.
    hrns.apply({"apiVersion": API_VERSION, "kind": "OCIRepository",
                "metadata": {"name": "tiny-src", "namespace": ns},
                "spec": {**(hrns.get(API_VERSION, "OCIRepository", "tiny") or {})["spec"],
                         "layerSelector": {"mediaType": LAYER["mediaType"]}}})
    hrns.apply({"apiVersion": API_VERSION, "kind": "HelmRelease",
                "metadata": {"name": "tpl", "namespace": ns},
                "spec": {"interval": "1m", "timeout": "60s", "values": {"message": "t"},
                         "chart": {"spec": {"chart": "tiny", "sourceRef": {
                             "kind": "OCIRepository", "name": "tiny-src"}}}}})
    hr = _wait(hrns, "tpl", "Ready", "True", "InstallSucceeded", timeout=90)
    assert hr["status"]["helmChart"] == f"{ns}/{ns}-tpl"
    chart = hrns.get(API_VERSION, "HelmChart", f"{ns}-tpl") or {}
    assert chart["metadata"]["labels"]["helmrelease.ocigitops.dev/name"] == "tpl"
    assert (hrns.get("v1", "ConfigMap", "tpl-cm") or {})["data"]["message"] == "t"
    hrns.delete(API_VERSION, "HelmRelease", "tpl")
    hrns.wait("HelmRelease and HelmChart gone", lambda: hrns.get(
        API_VERSION, "HelmRelease", "tpl") is None and hrns.get(
        API_VERSION, "HelmChart", f"{ns}-tpl") is None, 60)
    assert _releases(hrns, "tpl") == []


def test_helm_test_hooks(hrns: Kube) -> None:
    test = {"enable": True, "timeout": "60s"}
    _hr(hrns, "tested", values={"message": "x"}, test=test)
    hr = _wait(hrns, "tested", "Ready", "True", "InstallSucceeded", timeout=90)
    ok = condition(hr, "TestSuccess")
    assert (ok["status"], ok["reason"]) == ("True", "TestSucceeded")
    hooks = hr["status"]["history"][0]["testHooks"]
    assert hooks["tested-test"]["phase"] == "Succeeded"

    # A failing test, ignored: the release stays Ready, TestSuccess says it failed.
    _hr(hrns, "tested", values={"message": "x", "failTest": True},
        test={**test, "ignoreFailures": True})
    hr = _wait(hrns, "tested", "TestSuccess", "False", "TestFailed", timeout=90)
    hr = _wait(hrns, "tested", "Ready", "True", "UpgradeSucceeded")
    assert hr["status"]["history"][0]["testHooks"]["tested-test"]["phase"] == "Failed"

    # Not ignored: the upgrade fails its tests and is rolled back (remediateLastFailure).
    _hr(hrns, "tested", values={"message": "y", "failTest": True}, test=test,
        upgrade={"remediation": {"remediateLastFailure": True}})
    hr = _wait(hrns, "tested", "Stalled", "True", "RetriesExceeded", timeout=90)
    assert hr["status"]["upgradeFailures"] == 1
    assert condition(hr, "TestSuccess")["status"] == "False"
    remediated = condition(hr, "Remediated")
    assert (remediated["status"], remediated["reason"]) == ("True", "RollbackSucceeded")
    assert (hrns.get("v1", "ConfigMap", "tested-cm") or {})["data"]["message"] == "x"


def test_drift_detection(hrns: Kube) -> None:
    ns = hrns.namespace
    _hr(hrns, "drift", interval="2s", values={"message": "desired"},
        driftDetection={"mode": "warn"})
    _wait(hrns, "drift", "Ready", "True", "InstallSucceeded")

    def edit(message: str) -> None:
        hrns.call(lambda d: d.merge_patch("v1", "ConfigMap", "drift-cm", ns,
                                          {"data": {"message": message}}))

    def events(reason: str) -> list[str]:
        return [e.get("message", "") for e in hrns.list("v1", "Event")
                if e.get("reason") == reason
                and (e.get("involvedObject") or {}).get("name") == "drift"]

    # warn: reported, not corrected.
    edit("by hand")
    hrns.wait("DriftDetected event", lambda: any("ConfigMap/" in m for m in
                                                 events("DriftDetected")), 30)
    assert (hrns.get("v1", "ConfigMap", "drift-cm") or {})["data"]["message"] == "by hand"
    # enabled: corrected at the next interval, no new release revision; a path an ignore
    # rule names (Flux's driftDetection.ignore) is left as it is in the cluster.
    hrns.call(lambda d: d.merge_patch("v1", "ConfigMap", "drift-cm", ns,
                                      {"data": {"note": "kept by hand"}}))
    hrns.call(lambda d: d.merge_patch(API_VERSION, "HelmRelease", "drift", ns, {
        "spec": {"driftDetection": {"mode": "enabled", "ignore": [
            {"paths": ["/data/note"], "target": {"kind": "Config.*", "version": "v1"}},
            {"paths": ["/spec/replicas"], "target": {"group": "apps",
                                                     "labelSelector": "app in (drift)"}},
        ]}}}))
    hrns.wait("ConfigMap corrected", lambda: (hrns.get("v1", "ConfigMap", "drift-cm") or {})
              .get("data", {}).get("message") == "desired", 30)
    hrns.wait("DriftCorrected event", lambda: bool(events("DriftCorrected")), 30)
    assert (hrns.get("v1", "ConfigMap", "drift-cm") or {})["data"]["note"] == "kept by hand"
    assert [h["version"] for h in _get(hrns, "drift")["status"]["history"]] == [1]
    # An ignore rule that does not parse: Stalled, InvalidSpec, naming it.
    hrns.call(lambda d: d.merge_patch(API_VERSION, "HelmRelease", "drift", ns, {
        "spec": {"driftDetection": {"ignore": [{"paths": ["data/note"]}]}}}))
    hr = _wait(hrns, "drift", "Stalled", "True", "InvalidSpec")
    assert "spec.driftDetection.ignore[0].paths" in condition(hr, "Stalled")["message"]


def test_post_renderers(hrns: Kube, kube_cluster: Cluster) -> None:
    ns = hrns.namespace
    _hr(hrns, "post", values={"message": "x"}, postRenderers=_post_renderers("2"))
    hr = _wait(hrns, "post", "Ready", "True", "InstallSucceeded", timeout=90)
    assert hr["status"]["observedPostRenderersDigest"].startswith("sha256:")
    dep = hrns.get("apps/v1", "Deployment", "post-app") or {}
    assert dep["spec"]["replicas"] == 2
    assert dep["metadata"]["labels"]["post-rendered"] == "yes"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.example/patched:2"  # both post-renderers, in order
    manifest = helm_cli(kube_cluster, "helm4", "get", "manifest", "post", "-n", ns)
    assert "registry.example/patched:2" in manifest and "post-rendered" in manifest
    assert "replicas: 2" in manifest

    # A post-renderers change alone upgrades (observedPostRenderersDigest).
    digest = hr["status"]["observedPostRenderersDigest"]
    _hr(hrns, "post", interval="1s", values={"message": "x"},
        postRenderers=_post_renderers("3"), driftDetection={"mode": "warn"})
    hr = _wait(hrns, "post", "Ready", "True", "UpgradeSucceeded", timeout=90)
    assert [h["version"] for h in hr["status"]["history"]] == [2, 1]
    assert hr["status"]["observedPostRenderersDigest"] != digest
    dep = hrns.get("apps/v1", "Deployment", "post-app") or {}
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.example/patched:3"
    # Drift detection compares with the stored (post-rendered) manifest: no drift.
    first = hr["status"]["history"][0]["lastDeployed"]
    time.sleep(4)  # a few 1s intervals of drift checks
    assert not [e for e in hrns.list("v1", "Event") if e.get("reason") == "DriftDetected"
                and (e.get("involvedObject") or {}).get("name") == "post"]
    hr = _get(hrns, "post")
    assert [h["version"] for h in hr["status"]["history"]] == [2, 1]
    assert hr["status"]["history"][0]["lastDeployed"] == first
    # ...and a hand edit of the post-rendered replicas is a drift.
    hrns.call(lambda d: d.merge_patch("apps/v1", "Deployment", "post-app", ns,
                                      {"spec": {"replicas": 1}}))
    hrns.wait("DriftDetected on the Deployment", lambda: any(
        "Deployment/" in e.get("message", "") for e in hrns.list("v1", "Event")
        if e.get("reason") == "DriftDetected"
        and (e.get("involvedObject") or {}).get("name") == "post"), 30)

    # A post-renderer kustomize refuses: one line in status, nothing installed.
    _hr(hrns, "postbad", values={"message": "x"}, postRenderers=[{"kustomize": {
        "patches": [{"target": {"kind": "Deployment"}, "patch": "nonsense: ["}]}}])
    hr = _wait(hrns, "postbad", "Stalled", "True", "RetriesExceeded", timeout=90)
    msg = condition(hr, "Ready")["message"]
    assert "post-renderer failed: postRenderers[0]: kustomize:" in msg and "\n" not in msg
    assert condition(hr, "Released")["reason"] == "InstallFailed"
    assert _releases(hrns, "postbad") == []
    assert hrns.get("apps/v1", "Deployment", "postbad-app") is None


def test_adoption_of_a_release_installed_with_the_helm_cli(
        hrns: Kube, kube_cluster: Cluster, chart_url: str) -> None:
    ns = hrns.namespace
    helm_cli(kube_cluster, "helm4", "install", "adopt", chart_url, "--version", "0.1.0",
             "--plain-http", "-n", ns, "--set", "message=cli", "--wait", "--timeout", "60s")
    assert _releases(hrns, "adopt") == ["sh.helm.release.v1.adopt.v1"]
    uids = {kind: (hrns.get(api, kind, name) or {})["metadata"]["uid"]
            for api, kind, name in (("apps/v1", "Deployment", "adopt-app"),
                                    ("v1", "ConfigMap", "adopt-cm"))}

    # Same chart, same values: the release is not in the HelmRelease's history, so it is
    # upgraded once (Flux: an "unmanaged" release is upgraded), in place: no reinstall.
    _hr(hrns, "adopt", interval="2s", values={"message": "cli"})
    hr = _wait(hrns, "adopt", "Ready", "True", "UpgradeSucceeded", timeout=90)
    assert [h["version"] for h in hr["status"]["history"]] == [2]
    assert hr["status"]["history"][0]["configDigest"] == \
        hr["status"]["lastAttemptedConfigDigest"]
    for api, kind, name in (("apps/v1", "Deployment", "adopt-app"),
                            ("v1", "ConfigMap", "adopt-cm")):
        assert (hrns.get(api, kind, name) or {})["metadata"]["uid"] == uids[kind]
    history = json.loads(helm_cli(kube_cluster, "helm4", "history", "adopt", "-n", ns,
                                  "-o", "json"))
    assert [(h["revision"], h["status"]) for h in history] == [
        (1, "superseded"), (2, "deployed")]

    # Managed from now on: later reconciles (interval 2s) release nothing new.
    kc = str(kube_cluster.kubeconfig)
    ocigitops("reconcile", "hr", "adopt", "-n", ns, "--kubeconfig", kc)
    hr = _get(hrns, "adopt")
    assert [h["version"] for h in hr["status"]["history"]] == [2]
    assert _releases(hrns, "adopt") == ["sh.helm.release.v1.adopt.v1",
                                        "sh.helm.release.v1.adopt.v2"]
    values = json.loads(helm_cli(kube_cluster, "helm4", "get", "values", "adopt", "-n", ns,
                                 "-o", "json"))
    assert values == {"message": "cli"}


def test_unsigned_chart_refused(hrns: Kube) -> None:
    ns = hrns.namespace
    pub = generate_key_pair(b"pw", scrypt_n=1 << 12).public_pem
    hrns.apply({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "cosign-pub", "namespace": ns},
                "stringData": {"cosign.pub": pub.decode()}})
    # The HelmRelease first, parked on a source that does not exist yet...
    _hr(hrns, "unsigned", values={"message": "x"},
        chartRef={"kind": "OCIRepository", "name": "tiny-verified"})
    _wait(hrns, "unsigned", "Ready", "False")  # ArtifactFailed: not found
    tiny = (hrns.get(API_VERSION, "OCIRepository", "tiny") or {})["spec"]
    hrns.apply({"apiVersion": API_VERSION, "kind": "OCIRepository",
                "metadata": {"name": "tiny-verified", "namespace": ns},
                "spec": {**tiny, "verify": {"provider": "cosign",
                                            "secretRef": {"name": "cosign-pub"}}}})
    hrns.wait("OCIRepository SourceVerified=False", lambda: condition(hrns.get(
        API_VERSION, "OCIRepository", "tiny-verified") or {}, "SourceVerified").get(
        "status") == "False", 60)
    # ...is woken when the source fails, and says why well before its 30 s requeue.
    hrns.wait("HelmRelease names the source's failure", lambda: "VerificationError" in
              condition(_get(hrns, "unsigned"), "Ready").get("message", ""), 12)
    hr = _get(hrns, "unsigned")
    msg = condition(hr, "Ready")["message"]
    assert condition(hr, "Ready")["reason"] == "SourceNotReady"
    assert "tiny-verified" in msg and "VerificationError" in msg, msg
    assert not (hr.get("status") or {}).get("history")
    assert _releases(hrns, "unsigned") == []
    assert hrns.get("apps/v1", "Deployment", "unsigned-app") is None


def _crd(plural: str, marker: str) -> str:
    kind = plural.capitalize()[:-1]
    return f"""apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {plural}.crdtest.ocigitops.dev
spec:
  group: crdtest.ocigitops.dev
  scope: Namespaced
  names: {{plural: {plural}, singular: {plural[:-1]}, kind: {kind}, listKind: {kind}List}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        description: {marker}
        x-kubernetes-preserve-unknown-fields: true
"""


def test_crd_policies(hrns: Kube, embedded_registry: Registry,
                      tmp_path: Path) -> None:
    """install.crds CreateReplace and upgrade.crds Create|CreateReplace: the controller
    applies the chart's crds/ (Helm only creates them at install, never replaces)."""
    ns = hrns.namespace
    d = tmp_path / "crdy"
    (d / "templates").mkdir(parents=True)
    (d / "crds").mkdir()
    (d / "Chart.yaml").write_text("apiVersion: v2\nname: crdy\nversion: 0.1.0\n")
    (d / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: '{{ .Release.Name }}-cm'}\n"
        "data: {message: {{ .Values.message | quote }}}\n")
    (d / "crds" / "widgets.yaml").write_text(_crd("widgets", "chart"))
    (d / "crds" / "gadgets.yaml").write_text(_crd("gadgets", "chart"))
    ocigitops("push", "chart", str(d), f"oci://{embedded_registry.host}/hr/crdy")
    hrns.apply({"apiVersion": API_VERSION, "kind": "OCIRepository",
                "metadata": {"name": "crdy", "namespace": ns},
                "spec": {"url": f"oci://{embedded_registry.host}/hr/crdy/crdy",
                         "ref": {"tag": "0.1.0"}, "interval": "1m", "insecure": True,
                         "layerSelector": LAYER}})
    ext = "apiextensions.k8s.io/v1"

    def marker(plural: str) -> str | None:
        crd = hrns.get(ext, "CustomResourceDefinition", f"{plural}.crdtest.ocigitops.dev")
        if crd is None:
            return None
        return str(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"])

    def by_hand(plural: str, text: str | None) -> None:
        if text is None:
            hrns.call(lambda c: c.delete(ext, "CustomResourceDefinition",
                                         f"{plural}.crdtest.ocigitops.dev", None))
            hrns.wait(f"{plural} CRD gone", lambda: marker(plural) is None, 30)
        else:
            hrns.apply(yaml.safe_load(_crd(plural, text)))

    try:
        by_hand("widgets", "by-hand")  # Helm's Create would leave it alone
        spec = {"chartRef": {"kind": "OCIRepository", "name": "crdy"},
                "install": {"crds": "CreateReplace"}}
        _hr(hrns, "crdy", values={"message": "a"}, **spec)
        _wait(hrns, "crdy", "Ready", "True", "InstallSucceeded", timeout=90)
        assert (marker("widgets"), marker("gadgets")) == ("chart", "chart")

        # upgrade.crds Create: new CRDs only.
        by_hand("widgets", "by-hand")
        by_hand("gadgets", None)
        _hr(hrns, "crdy", values={"message": "b"}, **spec, upgrade={"crds": "Create"})
        _wait(hrns, "crdy", "Ready", "True", "UpgradeSucceeded", timeout=90)
        assert (marker("widgets"), marker("gadgets")) == ("by-hand", "chart")
        # upgrade.crds CreateReplace: existing ones updated too.
        _hr(hrns, "crdy", values={"message": "c"}, **spec, upgrade={"crds": "CreateReplace"})
        hrns.wait("upgrade 3", lambda: [h["version"] for h in (_get(hrns, "crdy").get(
            "status") or {}).get("history", [])][:1] == [3], 90)
        _wait(hrns, "crdy", "Ready", "True", "UpgradeSucceeded")
        assert marker("widgets") == "chart"
    finally:
        for plural in ("widgets", "gadgets"):
            hrns.call(lambda c, p=plural: c.delete(ext, "CustomResourceDefinition",
                                                   f"{p}.crdtest.ocigitops.dev", None))
