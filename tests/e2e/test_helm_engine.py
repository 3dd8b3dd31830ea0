"""Both Helm engines (the Go SDK in process, the helm 4 binary) against the same cases, on the
real kube-apiserver with kwok: install, upgrade, rollback, test hooks, typed failures,
post-rendering, adoption of a CLI-installed release, uninstall with history. The release
Secrets are read directly, and the Helm 3.19 and Helm 4 CLIs must see what we stored."""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ocigitops.puller.devcluster import Cluster
from ocigitops.puller.helm.binary import BinaryEngine
from ocigitops.puller.helm.engine import (
    ChartInput,
    ClusterAccess,
    HelmEngine,
    InstallRequest,
    PostRenderError,
    ReleaseNotFoundError,
    ReleaseRef,
    RenderError,
    RollbackRequest,
    TestFailedError,
    TestRequest,
    UninstallRequest,
    UpgradeRequest,
)
from ocigitops.puller.helm.sdk import SdkEngine
from tests.helpers.charts import DEPLOYMENT_TEMPLATE, TEST_HOOK_TEMPLATE
from tests.helpers.kube import Kube, wait_for
from tests.helpers.tools import tool

pytestmark = pytest.mark.e2e

TEMPLATES = {
    "cm.yaml": """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-cm
data:
  message: {{ required "message is required" .Values.message | quote }}
""",
    "deploy.yaml": DEPLOYMENT_TEMPLATE,
    "test.yaml": TEST_HOOK_TEMPLATE,
}


def make_chart(dest: Path, *, version: str = "0.1.0",
               templates: dict[str, str] | None = None) -> Path:
    """A packaged chart ``tiny-<version>.tgz`` (what a HelmChart hands over)."""
    files = {"tiny/Chart.yaml": f"apiVersion: v2\nname: tiny\nversion: {version}\n"
                                "appVersion: \"1.0.0\"\n",
             "tiny/values.yaml": "message: hello\nfailTest: false\n"}
    for name, text in (templates or TEMPLATES).items():
        files[f"tiny/templates/{name}"] = text
    out = dest / f"tiny-{version}.tgz"
    with tarfile.open(out, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_chart(tmp_path_factory.mktemp("chart"))


@pytest.fixture(params=["sdk", "binary"])
def engine(request: pytest.FixtureRequest) -> HelmEngine:
    if request.param == "sdk":
        return SdkEngine()
    return BinaryEngine(Path(tool("helm4", "helm")))


@pytest.fixture(scope="module")
def kube(kube_cluster: Cluster) -> Kube:
    return Kube(kube_cluster.kubeconfig)


@pytest.fixture
def hns(request: pytest.FixtureRequest, kube: Kube, engine: HelmEngine) -> Iterator[str]:
    """A namespace of the test's own (per engine), deleted afterwards."""
    base = request.node.originalname.removeprefix("test_").replace("_", "-")[:40]
    name = f"h-{engine.name}-{base}".rstrip("-")
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    kube.call(lambda d: d.delete("v1", "Namespace", name, None))


@pytest.fixture(scope="module")
def access(kube_cluster: Cluster) -> ClusterAccess:
    return ClusterAccess(kubeconfig=Path(kube_cluster.kubeconfig).read_text())


def cli(cluster: Cluster, which: str, *args: str, check: bool = True) -> str:
    """Run the Helm 3.19 (``helm``) or Helm 4 (``helm4``) CLI against the dev cluster."""
    binary = tool("helm", "helm") if which == "helm" else tool("helm4", "helm")
    home = Path(cluster.state_dir) / f"home-{which}"
    env = {"PATH": os.defpath, "HOME": str(home), "HELM_DRIVER": "secret"}
    p = subprocess.run([binary, *args, "--kubeconfig", str(cluster.kubeconfig)],
                       capture_output=True, text=True, timeout=120, env=env, check=False)
    if check and p.returncode != 0:
        raise AssertionError(f"{which} {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout


def stored(kube: Kube, ns: str, name: str) -> dict[int, dict[str, Any]]:
    """The release Secrets ``sh.helm.release.v1.<name>.v<N>``, decoded as Helm encodes them
    (base64 of gzip of JSON, inside the Secret's base64)."""
    out: dict[int, dict[str, Any]] = {}
    for s in kube.list("v1", "Secret", ns):
        meta = s["metadata"]
        if not meta["name"].startswith(f"sh.helm.release.v1.{name}.v"):
            continue
        assert s["type"] == "helm.sh/release.v1"
        assert meta["labels"]["owner"] == "helm" and meta["labels"]["name"] == name
        raw = base64.b64decode(base64.b64decode(s["data"]["release"]))
        out[int(meta["name"].rsplit(".v", 1)[1])] = json.loads(gzip.decompress(raw))
    return out


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_lifecycle_seen_by_helm3_and_helm4(engine: HelmEngine, access: ClusterAccess,
                                           chart: Path, hns: str, kube: Kube,
                                           kube_cluster: Cluster) -> None:
    ref = ReleaseRef("app", hns)
    r1 = run(engine.install(access, InstallRequest(ref, ChartInput(chart, {"message": "one"}))))
    assert (r1.revision, r1.status, r1.chart_name, r1.chart_version, r1.app_version) == (
        1, "deployed", "tiny", "0.1.0", "1.0.0")
    dep = kube.get("apps/v1", "Deployment", "app-app", hns) or {}
    assert (dep.get("status") or {}).get("readyReplicas") == 1  # waited: Ready through kwok
    assert "message: \"one\"" in r1.manifest and [h.name for h in r1.hooks] == ["app-test"]

    for which in ("helm", "helm4"):
        listed = json.loads(cli(kube_cluster, which, "list", "-n", hns, "-o", "json"))
        assert [(x["name"], x["status"]) for x in listed] == [("app", "deployed")]
        assert json.loads(cli(kube_cluster, which, "get", "values", "app", "-n", hns,
                              "-o", "json")) == {"message": "one"}

    r2 = run(engine.upgrade(access, UpgradeRequest(ref, ChartInput(chart, {"message": "two"}))))
    assert r2.revision == 2 and r2.config_digest != r1.config_digest
    r3 = run(engine.rollback(access, RollbackRequest(ref, revision=1)))
    assert (r3.revision, r3.status, r3.config_digest) == (3, "deployed", r1.config_digest)
    cm = kube.get("v1", "ConfigMap", "app-cm", hns) or {}
    assert cm["data"]["message"] == "one"

    secrets = stored(kube, hns, "app")
    assert sorted(secrets) == [1, 2, 3]
    assert [secrets[n]["info"]["status"] for n in (1, 2, 3)] == [
        "superseded", "superseded", "deployed"]
    assert secrets[2]["config"] == {"message": "two"}
    for which in ("helm", "helm4"):
        hist = json.loads(cli(kube_cluster, which, "history", "app", "-n", hns, "-o", "json"))
        assert [h["revision"] for h in hist] == [1, 2, 3]

    # A person rolls back with Helm 3.19: we see the new revision.
    cli(kube_cluster, "helm", "rollback", "app", "2", "-n", hns, "--wait")
    now = run(engine.get(access, ref))
    assert (now.revision, now.config_digest) == (4, r2.config_digest)
    assert [h.revision for h in run(engine.history(access, ref))] == [1, 2, 3, 4]


def test_test_hooks(engine: HelmEngine, access: ClusterAccess, chart: Path, hns: str) -> None:
    ref = ReleaseRef("t", hns)
    run(engine.install(access, InstallRequest(ref, ChartInput(chart, {"message": "x"}))))
    result = run(engine.test(access, TestRequest(ref, timeout=60)))
    assert result.succeeded and [(h.name, h.phase) for h in result.hooks] == [
        ("t-test", "Succeeded")]
    run(engine.upgrade(access, UpgradeRequest(ref, ChartInput(chart, {"message": "x",
                                                                      "failTest": True}))))
    with pytest.raises(TestFailedError) as e:
        run(engine.test(access, TestRequest(ref, timeout=60)))
    assert e.value.result is not None and e.value.result.hooks[0].phase == "Failed"


def test_render_failure_is_typed(engine: HelmEngine, access: ClusterAccess, chart: Path,
                                 hns: str, kube: Kube) -> None:
    ref = ReleaseRef("bad", hns)
    with pytest.raises(RenderError, match="message is required"):
        run(engine.install(access, InstallRequest(ref, ChartInput(chart, {"message": None}))))
    assert stored(kube, hns, "bad") == {}
    with pytest.raises(ReleaseNotFoundError):
        run(engine.get(access, ref))


def test_post_renderer(engine: HelmEngine, access: ClusterAccess, chart: Path, hns: str,
                       kube: Kube) -> None:
    ref = ReleaseRef("pr", hns)
    r = run(engine.install(access, InstallRequest(
        ref, ChartInput(chart, {"message": "raw"}),
        post_renderer=lambda s: s.replace('message: "raw"', 'message: "post-rendered"'))))
    assert 'message: "post-rendered"' in r.manifest
    assert (kube.get("v1", "ConfigMap", "pr-cm", hns) or {})["data"]["message"] == (
        "post-rendered")

    def broken(s: str) -> str:
        raise ValueError("no such patch target")

    with pytest.raises(PostRenderError, match="no such patch target"):
        run(engine.upgrade(access, UpgradeRequest(ref, ChartInput(chart, {"message": "b"}),
                                                  post_renderer=broken)))


def test_adopts_a_cli_release(engine: HelmEngine, access: ClusterAccess, chart: Path,
                              hns: str, kube: Kube, kube_cluster: Cluster,
                              tmp_path: Path) -> None:
    values = tmp_path / "v.yaml"
    values.write_text("message: from-cli\n")
    cli(kube_cluster, "helm4", "install", "adopted", str(chart), "-n", hns, "-f", str(values),
        "--wait")
    uid = (kube.get("apps/v1", "Deployment", "adopted-app", hns) or {})["metadata"]["uid"]
    ref = ReleaseRef("adopted", hns)
    got = run(engine.get(access, ref))
    assert (got.revision, got.chart_name, got.status) == (1, "tiny", "deployed")
    up = run(engine.upgrade(access, UpgradeRequest(ref, ChartInput(chart, {"message": "ours"}))))
    assert up.revision == 2 and up.first_deployed == got.first_deployed
    assert (kube.get("apps/v1", "Deployment", "adopted-app", hns) or {})["metadata"]["uid"] == uid


def test_uninstall_keep_history(engine: HelmEngine, access: ClusterAccess, chart: Path,
                                hns: str, kube: Kube, kube_cluster: Cluster) -> None:
    ref = ReleaseRef("gone", hns)
    run(engine.install(access, InstallRequest(ref, ChartInput(chart, {"message": "x"}))))
    res = run(engine.uninstall(access, UninstallRequest(ref, keep_history=True)))
    assert res.release is not None and res.release.status == "uninstalled"
    assert stored(kube, hns, "gone")[1]["info"]["status"] == "uninstalled"
    wait_for("the Deployment deleted",
             lambda: kube.get("apps/v1", "Deployment", "gone-app", hns) is None, 30)
    hist = json.loads(cli(kube_cluster, "helm4", "history", "gone", "-n", hns, "-o", "json"))
    assert [h["status"] for h in hist] == ["uninstalled"]
