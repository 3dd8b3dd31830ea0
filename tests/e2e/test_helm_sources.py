"""HelmRepository and HelmChart on a real kube-apiserver, reconciled by the controller
process (the module's shared fixture), with our generated CRDs.

Real pieces: the dev cluster's API server, a Helm repository served over HTTP with basic
auth (an index built by ``helm repo index``), the embedded registry on 127.0.0.1 with charts
pushed by ``ocigitops push chart`` (signed with a cosign key, or not).

1. HelmRepository (basic auth) + HelmChart: the index is stored (revision ``sha256:...``),
   the chart pulled, ``get sources helm|chart`` list them; then the repository goes away:
   the HelmRepository says so and keeps its index, the HelmChart keeps its chart, Ready;
2. a HelmRepository of type oci + HelmChart with ``spec.verify``: the signed version passes
   (``SourceVerified=True``), an unsigned one is refused (``SourceVerified=False``) and the
   last chart is kept;
3. an OCIRepository (verified, the Helm chart layer selected) as a HelmChart's source: the
   chart folder is packaged with merged values files; a HelmChart with ``spec.verify`` on an
   unverified OCIRepository is refused.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ocigitops.puller.api.meta import API_VERSION
from ocigitops.verifier.keys import generate_key_pair
from tests.helpers.cli import ocigitops
from tests.helpers.helmrepo import helm, helm_repo_server, make_chart
from tests.helpers.kube import ControllerProcess, Kube, condition
from tests.helpers.registries import Registry

pytestmark = pytest.mark.e2e

KINDS = ("HelmChart", "HelmRepository", "OCIRepository")


@pytest.fixture(scope="module")
def helm_crds(kube_api: Kube) -> Kube:
    """Our Helm CRDs Established before the module's controller starts."""
    for name in ("helmrepositories.ocigitops.dev", "helmcharts.ocigitops.dev"):
        kube_api.wait(f"CRD {name}", lambda n=name: condition(kube_api.get(
            "apiextensions.k8s.io/v1", "CustomResourceDefinition", n, None),
            "Established").get("status") == "True", 30)
    return kube_api


@pytest.fixture
def hns(request: pytest.FixtureRequest, helm_crds: Kube,
        controller: ControllerProcess) -> Iterator[Kube]:
    """A namespace of the test's own; its sources suspended and released afterwards."""
    name = "helm-" + request.node.name.removeprefix("test_").replace("_", "-")[:40].rstrip("-")
    helm_crds.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    kube = helm_crds.in_ns(name)
    yield kube
    for kind in KINDS:
        for obj in kube.list(API_VERSION, kind):
            kube.call(lambda d, k=kind, n=obj["metadata"]["name"]: d.merge_patch(
                API_VERSION, k, n, name, {"spec": {"suspend": True}}))
    helm_crds.call(lambda d: d.delete("v1", "Namespace", name, None))


def _get(kube: Kube, kind: str, name: str) -> dict[str, Any]:
    return kube.get(API_VERSION, kind, name) or {}


def _wait_cond(kube: Kube, kind: str, name: str, ctype: str, status: str,
               timeout: float = 60) -> dict[str, Any]:
    kube.wait(f"{kind}/{name} {ctype}={status}", lambda: condition(
        _get(kube, kind, name), ctype).get("status") == status, timeout)
    return _get(kube, kind, name)


def _chart(kube: Kube, name: str, source_kind: str, source: str, chart: str,
           **spec: Any) -> None:
    kube.apply({"apiVersion": API_VERSION, "kind": "HelmChart",
                "metadata": {"name": name, "namespace": kube.namespace},
                "spec": {"chart": chart, "interval": "5s",
                         "sourceRef": {"kind": source_kind, "name": source}, **spec}})


def test_http_repository_and_unreachable_index(hns: Kube, tmp_path: Path,
                                               kube_cluster: Any) -> None:
    home = tmp_path / "helm"
    root = tmp_path / "repo"
    for v in ("1.0.0", "1.1.0"):
        helm("package", str(make_chart(tmp_path / "src" / v, "web", v)), "-d", str(root),
             home=home)
    helm("repo", "index", str(root), home=home)
    hns.apply({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "auth", "namespace": hns.namespace},
               "stringData": {"username": "u", "password": "p"}})
    srv_cm = helm_repo_server(root, username="u", password="p")
    srv = srv_cm.__enter__()
    try:
        hns.apply({"apiVersion": API_VERSION, "kind": "HelmRepository",
                   "metadata": {"name": "charts", "namespace": hns.namespace},
                   "spec": {"url": srv.url, "interval": "3s", "timeout": "3s",
                            "secretRef": {"name": "auth"}}})
        _chart(hns, "web", "HelmRepository", "charts", "web", version="~1.0")
        repo = _wait_cond(hns, "HelmRepository", "charts", "Ready", "True")
        assert repo["status"]["artifact"]["revision"].startswith("sha256:")
        chart = _wait_cond(hns, "HelmChart", "web", "Ready", "True")
        art = chart["status"]["artifact"]
        assert art["revision"] == "1.0.0"
        assert art["path"] == f"helmchart/{hns.namespace}/web/web-1.0.0.tgz"
        assert chart["status"]["observedChartName"] == "web"
        out = ocigitops("get", "sources", "chart", "-n", hns.namespace, "--kubeconfig",
                        str(kube_cluster.kubeconfig)).stdout
        assert "web" in out and "1.0.0" in out
        out = ocigitops("get", "sources", "helm", "-n", hns.namespace, "--kubeconfig",
                        str(kube_cluster.kubeconfig)).stdout
        assert "charts" in out and "sha256:" in out
        # Each interval costs one conditional request answered 304 and nothing more.
        srv.clear()
        hns.wait("two more intervals", lambda: len(srv.requests()) >= 2, 20)
        assert {(s.path, s.status) for s in srv.requests()} == {("/index.yaml", 304)}
    finally:
        srv_cm.__exit__(None, None, None)

    # The repository is gone: the HelmRepository fails and keeps its index; the HelmChart
    # keeps its chart and stays Ready.
    repo = _wait_cond(hns, "HelmRepository", "charts", "Ready", "False")
    assert "the last index is kept" in condition(repo, "Ready")["message"]
    assert repo["status"]["artifact"]["revision"].startswith("sha256:")
    hns.call(lambda d: d.merge_patch(API_VERSION, "HelmChart", "web", hns.namespace, {
        "metadata": {"annotations": {"reconcile.ocigitops.dev/requestedAt": "now"}}}))
    hns.wait("chart reconciled again", lambda: _get(hns, "HelmChart", "web").get(
        "status", {}).get("lastHandledReconcileAt") == "now", 30)
    chart = _get(hns, "HelmChart", "web")
    assert condition(chart, "Ready")["status"] == "True", chart["status"]
    assert chart["status"]["artifact"] == art


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    pair = generate_key_pair(b"pw", scrypt_n=1 << 12)
    d = tmp_path_factory.mktemp("keys")
    (d / "cosign.key").write_bytes(pair.private_pem)
    return d / "cosign.key", pair.public_pem


def _push(tmp: Path, registry: Registry, repo: str, name: str, version: str,
          key: Path | None, **chart: Any) -> str:
    src = make_chart(tmp / f"{name}-{version}", name, version, **chart)
    args = ["push", "chart", str(src), f"oci://{registry.host}/{repo}"]
    if key is not None:
        args += ["--sign", "--key", str(key)]
    return ocigitops(*args, env={"COSIGN_PASSWORD": "pw"}).stdout.strip()


def test_oci_repository_type_with_verify(hns: Kube, tmp_path: Path,
                                         embedded_registry: Registry,
                                         keys: tuple[Path, bytes]) -> None:
    key, pub = keys
    repo = f"{hns.namespace}/charts"
    _push(tmp_path, embedded_registry, repo, "api", "2.0.0", key)
    hns.apply({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "cosign-pub", "namespace": hns.namespace},
               "stringData": {"cosign.pub": pub.decode()}})
    hns.apply({"apiVersion": API_VERSION, "kind": "HelmRepository",
               "metadata": {"name": "oci", "namespace": hns.namespace},
               "spec": {"url": f"oci://{embedded_registry.host}/{repo}", "type": "oci",
                        "insecure": True}})
    verify = {"provider": "cosign", "secretRef": {"name": "cosign-pub"}}
    _chart(hns, "api", "HelmRepository", "oci", "api", version="2.0.0", verify=verify)
    ready = _wait_cond(hns, "HelmChart", "api", "Ready", "True")
    assert condition(ready, "SourceVerified")["status"] == "True"
    assert ready["status"]["artifact"]["revision"] == "2.0.0"
    assert ready["status"]["verification"]["authorities"][0]["passed"] is True
    repo_obj = _get(hns, "HelmRepository", "oci")
    assert "artifact" not in repo_obj["status"]  # type oci: no index, no artifact

    _push(tmp_path, embedded_registry, repo, "api", "2.1.0", None)  # unsigned
    _chart(hns, "api", "HelmRepository", "oci", "api", version="2.1.0", verify=verify)
    refused = _wait_cond(hns, "HelmChart", "api", "SourceVerified", "False")
    assert condition(refused, "Ready")["reason"] == "VerificationError"
    assert refused["status"]["artifact"] == ready["status"]["artifact"]  # last chart kept


def test_oci_repository_source(hns: Kube, tmp_path: Path, embedded_registry: Registry,
                               keys: tuple[Path, bytes]) -> None:
    key, pub = keys
    repo = f"{hns.namespace}/charts"
    _push(tmp_path, embedded_registry, repo, "site", "3.0.0", key,
          extra={"values-prod.yaml": "replicas: 5\n"})
    hns.apply({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "cosign-pub", "namespace": hns.namespace},
               "stringData": {"cosign.pub": pub.decode()}})
    layer = {"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
             "operation": "copy"}
    for name, verify in (("signed", {"provider": "cosign",
                                     "secretRef": {"name": "cosign-pub"}}), ("plain", None)):
        hns.apply({"apiVersion": API_VERSION, "kind": "OCIRepository",
                   "metadata": {"name": name, "namespace": hns.namespace},
                   "spec": {"url": f"oci://{embedded_registry.host}/{repo}/site",
                            "ref": {"tag": "3.0.0"}, "interval": "1m", "insecure": True,
                            "layerSelector": layer, **({"verify": verify} if verify else {})}})
    chart_verify = {"provider": "cosign", "secretRef": {"name": "cosign-pub"}}
    _chart(hns, "site", "OCIRepository", "signed", "site",
           valuesFiles=["site/values.yaml", "site/values-prod.yaml"], verify=chart_verify)
    _chart(hns, "unverified", "OCIRepository", "plain", "site", verify=chart_verify)

    ok = _wait_cond(hns, "HelmChart", "site", "Ready", "True")
    assert condition(ok, "SourceVerified")["status"] == "True"
    assert ok["status"]["artifact"]["revision"] == "3.0.0+1"  # values files: + generation
    assert ok["status"]["observedValuesFiles"] == ["site/values.yaml", "site/values-prod.yaml"]
    cached = Path(ok["status"]["artifact"]["url"].removeprefix("file://"))
    if cached.is_file():  # the controller runs on this machine: read what it stored
        with tarfile.open(cached) as tar:
            values = tar.extractfile("site/values.yaml").read()  # type: ignore[union-attr]
        assert values == b"replicas: 5\n"

    refused = _wait_cond(hns, "HelmChart", "unverified", "SourceVerified", "False")
    assert "not verified by any authority" in condition(refused, "Ready")["message"]
    assert "artifact" not in refused["status"]
