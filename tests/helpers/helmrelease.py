"""HelmRelease e2e helpers shared by tests/e2e/test_helmrelease.py and
test_helmrelease_sdk.py: the ``tiny`` chart pushed once per module, a namespace per test
with its OCIRepository, and HelmRelease shortcuts."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.devcluster import Cluster
from tests.helpers.charts import DEPLOYMENT_TEMPLATE, TEST_HOOK_TEMPLATE
from tests.helpers.cli import ocigitops
from tests.helpers.kube import ControllerProcess, Kube, condition
from tests.helpers.registries import Registry
from tests.helpers.tools import tool

LAYER = {"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
         "operation": "copy"}

TEMPLATES = {
    "cm.yaml": """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ if .Values.broken }}Not_A_Valid_Name{{ else }}{{ .Release.Name }}-cm{{ end }}
data:
  message: {{ required "message is required" .Values.message | quote }}
  note: {{ .Values.extra.note | default "none" | quote }}
""",
    "deploy.yaml": DEPLOYMENT_TEMPLATE,
    "test.yaml": TEST_HOOK_TEMPLATE,
}


def _chart_dir(root: Path, version: str) -> Path:
    d = root / "tiny"
    (d / "templates").mkdir(parents=True, exist_ok=True)
    (d / "Chart.yaml").write_text(f"apiVersion: v2\nname: tiny\nversion: {version}\n"
                                  "appVersion: \"1.0.0\"\n")
    (d / "values.yaml").write_text("message: hello\nbroken: false\nextra: {}\n")
    for name, text in TEMPLATES.items():
        (d / "templates" / name).write_text(text)
    return d


@pytest.fixture(scope="module")
def chart_url(embedded_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``tiny`` 0.1.0 pushed once for the module."""
    src = _chart_dir(tmp_path_factory.mktemp("chart"), "0.1.0")
    ocigitops("push", "chart", str(src), f"oci://{embedded_registry.host}/hr/charts")
    return f"oci://{embedded_registry.host}/hr/charts/tiny"


@pytest.fixture
def hrns(request: pytest.FixtureRequest, kube_api: Kube,
         controller: ControllerProcess, chart_url: str) -> Iterator[Kube]:
    """A namespace of the test's own with the OCIRepository ``tiny``; HelmReleases
    suspended and released afterwards."""
    kube_api.wait("CRD helmreleases.ocigitops.dev", lambda: condition(kube_api.get(
        "apiextensions.k8s.io/v1", "CustomResourceDefinition", "helmreleases.ocigitops.dev",
        None), "Established").get("status") == "True", 30)
    name = "hr-" + request.node.name.removeprefix("test_").replace("_", "-")[:40].rstrip("-")
    kube_api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    kube = kube_api.in_ns(name)
    kube.apply({"apiVersion": API_VERSION, "kind": "OCIRepository",
                "metadata": {"name": "tiny", "namespace": name},
                "spec": {"url": chart_url, "ref": {"tag": "0.1.0"}, "interval": "1m",
                         "insecure": True, "layerSelector": LAYER}})
    yield kube
    for kind in ("HelmRelease", "HelmChart", "OCIRepository"):
        for obj in kube.list(API_VERSION, kind):
            kube.call(lambda d, k=kind, n=obj["metadata"]["name"]: d.merge_patch(
                API_VERSION, k, n, name, {"metadata": {"finalizers": None},
                                          "spec": {"suspend": True}}))
    kube_api.call(lambda d: d.delete("v1", "Namespace", name, None))


def _hr(kube: Kube, name: str, **spec: Any) -> None:
    kube.apply({"apiVersion": API_VERSION, "kind": "HelmRelease",
                "metadata": {"name": name, "namespace": kube.namespace},
                "spec": {"interval": "1m", "timeout": "60s",
                         "chartRef": {"kind": "OCIRepository", "name": "tiny"}, **spec}})


def _get(kube: Kube, name: str) -> dict[str, Any]:
    return kube.get(API_VERSION, "HelmRelease", name) or {}


def _wait(kube: Kube, name: str, ctype: str, status: str, reason: str | None = None,
          timeout: float = 60) -> dict[str, Any]:
    def ok() -> bool:
        c = condition(_get(kube, name), ctype)
        return c.get("status") == status and (reason is None or c.get("reason") == reason)
    kube.wait(f"HelmRelease/{name} {ctype}={status} {reason or ''}", ok, timeout)
    return _get(kube, name)


def _releases(kube: Kube, name: str) -> list[str]:
    return sorted(s["metadata"]["name"] for s in kube.list("v1", "Secret")
                  if s["metadata"]["name"].startswith(f"sh.helm.release.v1.{name}.v"))


def helm_cli(cluster: Cluster, which: str, *args: str) -> str:
    """The Helm 3.19 (``helm``) or Helm 4 (``helm4``) CLI against the dev cluster."""
    binary = tool("helm", "helm") if which == "helm" else tool("helm4", "helm")
    home = Path(cluster.state_dir) / f"home-hr-{which}"
    env = {"PATH": os.defpath, "HOME": str(home), "HELM_DRIVER": "secret"}
    p = subprocess.run([binary, *args, "--kubeconfig", str(cluster.kubeconfig)],
                       capture_output=True, text=True, timeout=120, env=env, check=False)
    assert p.returncode == 0, f"{which} {' '.join(args)}: {p.stderr.strip()}"
    return p.stdout


def _post_renderers(tag: str) -> list[dict[str, Any]]:
    return [{"kustomize": {
        "patches": [
            {"target": {"kind": "Deployment", "name": "post-app"},
             "patch": "- op: replace\n  path: /spec/replicas\n  value: 2\n"},
            {"patch": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: post-app\n"
                      "  labels:\n    post-rendered: \"yes\"\n"}],
        "images": [{"name": "registry.example/app", "newName": "registry.example/patched",
                    "newTag": "1"}]}},
            {"kustomize": {"images": [{"name": "registry.example/patched", "newTag": tag}]}}]
