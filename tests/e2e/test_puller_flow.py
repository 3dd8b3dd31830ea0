"""The puller end to end: a real kube-apiserver (with kwok nodes so Deployments become
Ready), a real registry, real signatures, and the controller as a real process.

Signed revision applied and Ready, with the verifying authority in status; a new revision
applied and the old objects pruned; an unsigned revision refused with the cluster left
unchanged; a revision the API server rejects leaves nothing of it applied.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ocigitops.artifact import Metadata
from ocigitops.reference import parse_reference
from ocigitops.registry import RegistryClient
from publisher.artifacts import push_artifact
from publisher.sign_cosign import sign_cosign_key
from puller.api.meta import API_VERSION
from puller.devcluster import Cluster
from puller.kube import DynamicClient
from tests.registries import Registry, free_port
from verifier.keys import generate_key_pair, load_private_key

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
NS = "e2e-flow"


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


class Kube:
    """Synchronous helpers over the dynamic client, for assertions."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = str(kubeconfig)

    async def _with(self, fn: Callable[[DynamicClient], Any]) -> Any:
        dyn = DynamicClient.from_kubeconfig(self.kubeconfig)
        try:
            return await fn(dyn)
        finally:
            await dyn.aclose()

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        return dict(_run(self._with(lambda d: d.apply(obj, force=True))))

    def get(self, api_version: str, kind: str, name: str, ns: str | None = NS,
            ) -> dict[str, Any] | None:
        out = _run(self._with(lambda d: d.get(api_version, kind, name, ns)))
        return dict(out) if out is not None else None

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.5)
        states = {k: (self.get(API_VERSION, k, "app") or {}).get("status")
                  for k in ("OCIRepository", "Kustomization")}
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; status:"
                             f" {json.dumps(states, indent=1)[:4000]}")


def _cond(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return {}


@pytest.fixture(scope="module")
def kube(kube_cluster: Cluster) -> Kube:
    k = Kube(kube_cluster.kubeconfig)
    for crd in sorted((REPO_ROOT / "deploy" / "crds").glob("*.yaml")):
        import yaml

        k.apply(yaml.safe_load(crd.read_text()))
    def established(name: str) -> bool:
        crd = k.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name, None)
        return _cond(crd, "Established").get("status") == "True"

    for name in ("ocirepositories.ocigitops.dev", "kustomizations.ocigitops.dev"):
        k.wait(f"CRD {name}", lambda n=name: established(n), 30)
    return k


@pytest.fixture(scope="module")
def controller(kube: Kube, kube_cluster: Cluster,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
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
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{health}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"controller not ready:\n{log.read_text()[-3000:]}")
        if proc.poll() is not None:
            pytest.fail(f"controller exited:\n{log.read_text()[-3000:]}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(f"\ncontroller log tail:\n{log.read_text()[-4000:]}")


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


async def _publish(host: str, tree: Path, key_pem: bytes | None) -> str:
    ref = parse_reference(f"{host}/e2e/app:latest")
    async with RegistryClient(insecure=True) as c:
        pushed = await push_artifact(c, ref, tree, Metadata("https://example.com/app",
                                                            f"main@sha1:{'a' * 40}"))
        if key_pem is not None:
            await sign_cosign_key(c, ref.repo_only(), pushed.digest,
                                  load_private_key(key_pem, b"pw"))
        return pushed.digest


def _request(kube: Kube, kind: str, name: str) -> None:
    obj = {"apiVersion": API_VERSION, "kind": kind,
           "metadata": {"name": name, "namespace": NS,
                        "annotations": {"reconcile.ocigitops.dev/requestedAt": str(time.time())}}}
    _run(kube._with(lambda d: d.merge_patch(API_VERSION, kind, name, NS,
                                             {"metadata": obj["metadata"]})))


def test_signed_flow(kube: Kube, controller: subprocess.Popen[bytes],
                     embedded_registry: Registry, tmp_path: Path) -> None:
    pair = generate_key_pair(b"pw", scrypt_n=1 << 12)
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cosign-pub",
                                                                   "namespace": NS},
                "stringData": {"cosign.pub": pair.public_pem.decode()}})
    digest1 = _run(_publish(embedded_registry.host, _tree(tmp_path, "v1", "cm-a"),
                            pair.private_pem))
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
    kube.wait("OCIRepository Ready", lambda: _cond(
        kube.get(API_VERSION, "OCIRepository", "app"), "Ready").get("status") == "True")
    src = kube.get(API_VERSION, "OCIRepository", "app") or {}
    assert src["status"]["artifact"]["revision"] == rev1
    assert _cond(src, "SourceVerified").get("status") == "True"
    (auth,) = src["status"]["verification"]["authorities"]
    assert auth["passed"] and auth["signer"].startswith("key sha256:")
    kube.wait("Kustomization applied rev1", lambda: (kube.get(
        API_VERSION, "Kustomization", "app") or {}).get("status", {}).get(
        "lastAppliedRevision") == rev1)
    ks = kube.get(API_VERSION, "Kustomization", "app") or {}
    assert _cond(ks, "Ready").get("status") == "True", ks["status"]
    assert kube.get("v1", "ConfigMap", "cm-a") is not None
    dep = kube.get("apps/v1", "Deployment", "web") or {}
    assert dep["status"].get("availableReplicas") == 1  # wait: true saw it Ready (kwok)
    ids = {e["id"] for e in ks["status"]["inventory"]["entries"]}
    assert ids == {f"{NS}_cm-a__ConfigMap", f"{NS}_web_apps_Deployment"}

    # 2. new signed revision: applied, the old ConfigMap pruned
    digest2 = _run(_publish(embedded_registry.host, _tree(tmp_path, "v2", "cm-b"),
                            pair.private_pem))
    _request(kube, "OCIRepository", "app")
    kube.wait("rev2 applied", lambda: (kube.get(API_VERSION, "Kustomization", "app") or {})
              .get("status", {}).get("lastAppliedRevision") == f"latest@{digest2}")
    assert kube.get("v1", "ConfigMap", "cm-b") is not None
    kube.wait("cm-a pruned", lambda: kube.get("v1", "ConfigMap", "cm-a") is None, 20)

    # 3. an unsigned revision is refused; the cluster keeps rev2
    digest3 = _run(_publish(embedded_registry.host, _tree(tmp_path, "v3", "cm-c"), None))
    _request(kube, "OCIRepository", "app")
    kube.wait("verification failure", lambda: _cond(kube.get(
        API_VERSION, "OCIRepository", "app"), "SourceVerified").get("status") == "False")
    src = kube.get(API_VERSION, "OCIRepository", "app") or {}
    assert _cond(src, "Ready")["status"] == "False"
    assert digest3 in _cond(src, "Ready")["message"] and "no" in _cond(
        src, "Ready")["message"].lower()
    assert src["status"]["artifact"]["revision"] == f"latest@{digest2}"  # last good kept
    time.sleep(3)
    assert kube.get("v1", "ConfigMap", "cm-c") is None
    assert (kube.get(API_VERSION, "Kustomization", "app") or {})["status"][
        "lastAppliedRevision"] == f"latest@{digest2}"

    # 4. a signed revision the API server rejects: nothing of it is applied
    bad = ("apiVersion: v1\nkind: Service\nmetadata:\n  name: broken\nspec:\n"
           "  ports:\n  - port: 99999\n")
    digest4 = _run(_publish(embedded_registry.host, _tree(tmp_path, "v4", "cm-d", bad),
                            pair.private_pem))
    _request(kube, "OCIRepository", "app")
    kube.wait("rev4 attempted and failed", lambda: (
        (kube.get(API_VERSION, "Kustomization", "app") or {}).get("status", {}).get(
            "lastAttemptedRevision") == f"latest@{digest4}"
        and _cond(kube.get(API_VERSION, "Kustomization", "app"), "Ready").get("status")
        == "False"))
    ks = kube.get(API_VERSION, "Kustomization", "app") or {}
    assert "dry-run failed" in _cond(ks, "Ready")["message"]
    assert "broken" in _cond(ks, "Ready")["message"]
    assert kube.get("v1", "ConfigMap", "cm-d") is None  # nothing of rev4 applied
    assert kube.get("v1", "ConfigMap", "cm-b") is not None
    assert ks["status"]["lastAppliedRevision"] == f"latest@{digest2}"
    events = _run(kube._with(lambda d: d.list("v1", "Event", NS)))
    reasons = {e.get("reason") for e in events}
    assert {"NewArtifact", "ReconciliationSucceeded", "VerificationError"} <= reasons, reasons
    assert json.dumps(ks).count("latest@") >= 2
