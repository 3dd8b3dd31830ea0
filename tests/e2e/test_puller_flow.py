"""The puller end to end: a real kube-apiserver (with kwok nodes so Deployments become
Ready), a real registry, real signatures, and the controller as a real process.

Signed revision applied and Ready, with the verifying authority in status; a new revision
applied and the old objects pruned; an unsigned revision refused with the cluster left
unchanged; a revision the API server rejects leaves nothing of it applied.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ocigitops.puller.api.meta import API_VERSION
from ocigitops.verifier.keys import generate_key_pair
from tests.helpers.kube import ControllerProcess, Kube, condition
from tests.helpers.publish import publish
from tests.helpers.registries import Registry

pytestmark = pytest.mark.e2e

NS = "e2e-flow"


@pytest.fixture(scope="module")
def kube(kube_api: Kube) -> Kube:
    """The cluster helper bound to this module's namespace."""
    return kube_api.in_ns(NS)


def _tree(tmp: Path, version: str, configmap: str, extra: str = "") -> Path:
    root = tmp / f"tree-{version}"
    root.mkdir()
    (root / "deploy.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n"
        "  replicas: 1\n  selector:\n    matchLabels: {app: web}\n  template:\n"
        "    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n"
        f"      - name: web\n        image: registry.example/web:{version}\n")
    (root / "cm.yaml").write_text(f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
                                  f"  name: {configmap}\ndata:\n  version: {version}\n")
    if extra:
        (root / "extra.yaml").write_text(extra)
    return root


def _publish(host: str, tree: Path, key_pem: bytes | None) -> str:
    """Push ``tree`` as ``e2e/app:latest`` (signed with ``key_pem`` when given); its digest."""
    return publish(host, "e2e/app", tree, key_pem=key_pem).partition("@")[2]


def _request(kube: Kube, kind: str, name: str) -> None:
    obj = {"apiVersion": API_VERSION, "kind": kind,
           "metadata": {"name": name, "namespace": NS,
                        "annotations": {"reconcile.ocigitops.dev/requestedAt": str(time.time())}}}
    kube.call(lambda d: d.merge_patch(API_VERSION, kind, name, NS,
                                      {"metadata": obj["metadata"]}))


def test_signed_flow(kube: Kube, controller: ControllerProcess,
                     embedded_registry: Registry, tmp_path: Path) -> None:
    pair = generate_key_pair(b"pw", scrypt_n=1 << 12)
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cosign-pub",
                                                                   "namespace": NS},
                "stringData": {"cosign.pub": pair.public_pem.decode()}})
    digest1 = _publish(embedded_registry.host, _tree(tmp_path, "v1", "cm-a"),
                       pair.private_pem)
    kube.apply({"apiVersion": API_VERSION, "kind": "OCIRepository",
                "metadata": {"name": "app", "namespace": NS},
                "spec": {"url": f"oci://{embedded_registry.host}/e2e/app", "insecure": True,
                         "interval": "5s", "ref": {"tag": "latest"},
                         "verify": {"provider": "cosign", "secretRef": {"name": "cosign-pub"}}}})
    kube.apply({"apiVersion": API_VERSION, "kind": "Kustomization",
                "metadata": {"name": "app", "namespace": NS},
                "spec": {"sourceRef": {"kind": "OCIRepository", "name": "app"}, "path": "./",
                         "interval": "5s", "prune": True, "wait": True, "timeout": "60s",
                         "targetNamespace": NS}})

    # 1. signed revision verified, stored, applied, Ready
    rev1 = f"latest@{digest1}"
    kube.wait("OCIRepository Ready", lambda: condition(
        kube.get(API_VERSION, "OCIRepository", "app"), "Ready").get("status") == "True")
    src = kube.get(API_VERSION, "OCIRepository", "app") or {}
    assert src["status"]["artifact"]["revision"] == rev1
    assert condition(src, "SourceVerified").get("status") == "True"
    (auth,) = src["status"]["verification"]["authorities"]
    assert auth["passed"] and auth["signer"].startswith("key sha256:")
    kube.wait("Kustomization applied rev1", lambda: (kube.get(
        API_VERSION, "Kustomization", "app") or {}).get("status", {}).get(
        "lastAppliedRevision") == rev1)
    ks = kube.get(API_VERSION, "Kustomization", "app") or {}
    assert condition(ks, "Ready").get("status") == "True", ks["status"]
    assert kube.get("v1", "ConfigMap", "cm-a") is not None
    dep = kube.get("apps/v1", "Deployment", "web") or {}
    assert dep["status"].get("availableReplicas") == 1  # wait: true saw it Ready (kwok)
    ids = {e["id"] for e in ks["status"]["inventory"]["entries"]}
    assert ids == {f"{NS}_cm-a__ConfigMap", f"{NS}_web_apps_Deployment"}

    # 2. new signed revision: applied, the old ConfigMap pruned
    digest2 = _publish(embedded_registry.host, _tree(tmp_path, "v2", "cm-b"),
                       pair.private_pem)
    _request(kube, "OCIRepository", "app")
    kube.wait("rev2 applied", lambda: (kube.get(API_VERSION, "Kustomization", "app") or {})
              .get("status", {}).get("lastAppliedRevision") == f"latest@{digest2}")
    assert kube.get("v1", "ConfigMap", "cm-b") is not None
    kube.wait("cm-a pruned", lambda: kube.get("v1", "ConfigMap", "cm-a") is None, 20)

    # 3. an unsigned revision is refused; the cluster keeps rev2
    digest3 = _publish(embedded_registry.host, _tree(tmp_path, "v3", "cm-c"), None)
    _request(kube, "OCIRepository", "app")
    kube.wait("verification failure", lambda: condition(kube.get(
        API_VERSION, "OCIRepository", "app"), "SourceVerified").get("status") == "False")
    src = kube.get(API_VERSION, "OCIRepository", "app") or {}
    assert condition(src, "Ready")["status"] == "False"
    assert digest3 in condition(src, "Ready")["message"] and "no" in condition(
        src, "Ready")["message"].lower()
    assert src["status"]["artifact"]["revision"] == f"latest@{digest2}"  # last good kept
    time.sleep(3)
    assert kube.get("v1", "ConfigMap", "cm-c") is None
    assert (kube.get(API_VERSION, "Kustomization", "app") or {})["status"][
        "lastAppliedRevision"] == f"latest@{digest2}"

    # 4. a signed revision the API server rejects: nothing of it is applied
    bad = ("apiVersion: v1\nkind: Service\nmetadata:\n  name: broken\nspec:\n"
           "  ports:\n  - port: 99999\n")
    digest4 = _publish(embedded_registry.host, _tree(tmp_path, "v4", "cm-d", bad),
                       pair.private_pem)
    _request(kube, "OCIRepository", "app")
    kube.wait("rev4 attempted and failed", lambda: (
        (kube.get(API_VERSION, "Kustomization", "app") or {}).get("status", {}).get(
            "lastAttemptedRevision") == f"latest@{digest4}"
        and condition(kube.get(API_VERSION, "Kustomization", "app"), "Ready").get("status")
        == "False"))
    ks = kube.get(API_VERSION, "Kustomization", "app") or {}
    assert "dry-run failed" in condition(ks, "Ready")["message"]
    assert "broken" in condition(ks, "Ready")["message"]
    assert kube.get("v1", "ConfigMap", "cm-d") is None  # nothing of rev4 applied
    assert kube.get("v1", "ConfigMap", "cm-b") is not None
    assert ks["status"]["lastAppliedRevision"] == f"latest@{digest2}"
    events = kube.list("v1", "Event")
    reasons = {e.get("reason") for e in events}
    assert {"NewArtifact", "ReconciliationSucceeded", "VerificationError"} <= reasons, reasons
    assert json.dumps(ks).count("latest@") >= 2
