"""ocigitops.render against the real kustomize and helm (``scripts/install-tools``).

Renders the examples/ tree and broken inputs, and checks that the errors a user sees
are one line, name their files, and never point into the sandbox.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ocigitops import render as r
from ocigitops.errors import RenderError
from tests.helpers.paths import EXAMPLES
from tests.helpers.tools import tool
from tests.helpers.trees import write

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def real_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point render at the installed tools, whatever else is on PATH."""
    monkeypatch.setenv("OCIGITOPS_KUSTOMIZE", tool("kustomize"))
    monkeypatch.setenv("OCIGITOPS_HELM", tool("helm"))


def objects(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The objects of a multi-document YAML file by (kind, name)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def render_error(src: Path, mode: r.RenderMode, out: Path, **kwargs: Any) -> str:
    """Render, expecting failure; return the message after checking its shape."""
    with pytest.raises(RenderError) as e:
        r.render(src, mode, out, **kwargs)
    message = str(e.value)
    assert message.startswith("render: ")
    assert "\n" not in message
    assert "ocigitops-render-" not in message  # sandbox paths are mapped back
    assert not out.exists()
    return message


# ------------------------------------------------------------------ examples


@pytest.mark.parametrize(("env", "replicas"), [("staging", 2), ("production", 3)])
def test_example_overlays(tmp_path: Path, env: str, replicas: int) -> None:
    out = tmp_path / "out"
    files = r.render(EXAMPLES / "app" / "overlays" / env, "kustomize", out)
    assert files == [out / "kustomization.yaml", out / "manifests.yaml"]
    assert r.validate_manifests(files[1:]) == 3
    objs = objects(out / "manifests.yaml")
    assert set(objs) == {("ConfigMap", f"{env}-podinfo-config"),
                         ("Service", f"{env}-podinfo"), ("Deployment", f"{env}-podinfo")}
    deploy = objs[("Deployment", f"{env}-podinfo")]
    assert deploy["spec"]["replicas"] == replicas
    assert deploy["metadata"]["labels"]["environment"] == env
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/stefanprodan/podinfo:6.7.0"
    assert container["envFrom"] == [{"configMapRef": {"name": f"{env}-podinfo-config"}}]
    data = objs[("ConfigMap", f"{env}-podinfo-config")]["data"]
    assert data["PODINFO_UI_MESSAGE"] == f"hello from {env}"
    assert data["PODINFO_UI_COLOR"] == "#34577c"  # merged from the base


def test_rendered_output_builds_again(tmp_path: Path) -> None:
    # What an in-cluster Kustomization does with the artifact: build the output dir.
    out = tmp_path / "out"
    r.render(EXAMPLES / "app" / "overlays" / "production", "kustomize", out)
    rebuilt = subprocess.run([tool("kustomize"), "build", str(out)], check=True,
                             capture_output=True, text=True, timeout=60).stdout
    write(tmp_path / "rebuilt.yaml", rebuilt)
    assert objects(tmp_path / "rebuilt.yaml") == objects(out / "manifests.yaml")


def test_example_base(tmp_path: Path) -> None:
    r.render(EXAMPLES / "app" / "base", "kustomize", tmp_path / "out")
    assert set(objects(tmp_path / "out" / "manifests.yaml")) == {
        ("ConfigMap", "podinfo-config"), ("Service", "podinfo"), ("Deployment", "podinfo")}


def test_example_chart_defaults(tmp_path: Path) -> None:
    out = tmp_path / "out"
    files = r.render(EXAMPLES / "charts" / "hello", "helm", out)
    assert files == [out / "kustomization.yaml", out / "manifests.yaml"]
    objs = objects(out / "manifests.yaml")
    # The release is named after the chart directory.
    assert set(objs) == {("Service", "hello"), ("Deployment", "hello")}
    deploy = objs[("Deployment", "hello")]
    assert deploy["spec"]["replicas"] == 1
    assert deploy["metadata"]["labels"]["app.kubernetes.io/instance"] == "hello"
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/stefanprodan/podinfo:6.7.0"


def test_example_chart_values_release_namespace(tmp_path: Path) -> None:
    chart = EXAMPLES / "charts" / "hello"
    out = tmp_path / "out"
    r.render(chart, "helm", out, values=[chart / "values-production.yaml"],
             release_name="web", namespace="prod")
    deploy = objects(out / "manifests.yaml")[("Deployment", "web-hello")]
    assert deploy["spec"]["replicas"] == 3
    env = deploy["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "PODINFO_UI_MESSAGE", "value": "hello from production"}]


def test_chart_namespace_reaches_templates(tmp_path: Path) -> None:
    chart = tmp_path / "ns"
    write(chart / "Chart.yaml", "apiVersion: v2\nname: ns\nversion: 0.1.0\n")
    write(chart / "templates" / "cm.yaml",
          "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n"
          "  namespace: {{ .Release.Namespace }}\n")
    r.render(chart, "helm", tmp_path / "out", namespace="team-a")
    cm = objects(tmp_path / "out" / "manifests.yaml")[("ConfigMap", "cm")]
    assert cm["metadata"]["namespace"] == "team-a"


# -------------------------------------------------------------- bad inputs


def test_remote_resource_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "overlay"
    write(src / "kustomization.yaml",
          "resources:\n- https://github.com/stefanprodan/podinfo//kustomize?ref=6.7.0\n")
    message = render_error(src, "kustomize", tmp_path / "out")
    assert message == (
        "render: overlay/kustomization.yaml: resources: "
        "'https://github.com/stefanprodan/podinfo//kustomize?ref=6.7.0' is a remote "
        "reference; remote resources are refused, vendor them into the tree")


def test_remote_base_of_a_local_base_refused(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "repo" / "base" / "kustomization.yaml",
          "resources:\n- github.com/org/repo/deploy?ref=v1\n")
    src = write(tmp_path / "repo" / "prod" / "kustomization.yaml",
                "resources:\n- ../base\n").parent
    message = render_error(src, "kustomize", tmp_path / "out", root=tmp_path / "repo")
    assert message.startswith("render: repo/base/kustomization.yaml: resources: "
                              "'github.com/org/repo/deploy?ref=v1' is a remote reference")


def test_kustomize_missing_resource(tmp_path: Path) -> None:
    src = tmp_path / "app"
    write(src / "kustomization.yaml", "resources:\n- deployment.yaml\n")
    message = render_error(src, "kustomize", tmp_path / "out")
    assert message.startswith("render: kustomize: accumulating resources")
    assert f"{src}/deployment.yaml" in message  # the user's path, not the sandbox's


def test_kustomize_patch_without_target(tmp_path: Path) -> None:
    src = tmp_path / "app"
    write(src / "kustomization.yaml", "resources: [cm.yaml]\npatches:\n- path: patch.yaml\n")
    write(src / "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n")
    write(src / "patch.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n"
                              "  name: nope\nspec:\n  replicas: 2\n")
    message = render_error(src, "kustomize", tmp_path / "out")
    assert message.startswith("render: kustomize: ")
    assert "nope" in message and "no resource matches" in message


def test_kustomize_invalid_resource_yaml(tmp_path: Path) -> None:
    src = tmp_path / "app"
    write(src / "kustomization.yaml", "resources: [cm.yaml]\n")
    write(src / "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [\n")
    message = render_error(src, "kustomize", tmp_path / "out")
    assert message.startswith("render: kustomize: ")
    assert "cm.yaml" in message


def test_kustomize_load_restrictor(tmp_path: Path) -> None:
    # Inside the tree, but outside the kustomization's own directory: kustomize's
    # LoadRestrictionsRootOnly refuses it.
    repo = tmp_path / "repo"
    write(repo / "shared" / "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
                                       "  name: cm\n")
    src = write(repo / "app" / "kustomization.yaml", "resources: [../shared/cm.yaml]\n").parent
    message = render_error(src, "kustomize", tmp_path / "out", root=repo)
    assert "security" in message and "is not in or below" in message
    assert str(repo / "app") in message


def test_kustomize_helm_charts_are_not_inflated(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    src = write(repo / "app" / "kustomization.yaml",
                "helmCharts:\n- name: hello\n  releaseName: hello\n").parent
    (src / "charts").mkdir()
    message = render_error(src, "kustomize", tmp_path / "out")
    assert "--enable-helm" in message


def test_chart_template_with_invalid_yaml(tmp_path: Path) -> None:
    chart = tmp_path / "bad"
    write(chart / "Chart.yaml", "apiVersion: v2\nname: bad\nversion: 0.1.0\n")
    write(chart / "templates" / "cm.yaml",
          "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n data: [\n")
    message = render_error(chart, "helm", tmp_path / "out")
    assert message.startswith("render: helm template: YAML parse error on "
                              "bad/templates/cm.yaml")


def test_chart_object_without_name(tmp_path: Path) -> None:
    chart = tmp_path / "noname"
    write(chart / "Chart.yaml", "apiVersion: v2\nname: noname\nversion: 0.1.0\n")
    write(chart / "templates" / "a.yaml",
          "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n")
    write(chart / "templates" / "b.yaml",
          "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels: {a: b}\n")
    message = render_error(chart, "helm", tmp_path / "out")
    assert message == "render: manifests.yaml document 2: missing metadata.name"


def test_chart_template_failure(tmp_path: Path) -> None:
    chart = tmp_path / "req"
    write(chart / "Chart.yaml", "apiVersion: v2\nname: req\nversion: 0.1.0\n")
    write(chart / "templates" / "cm.yaml",
          '{{ required "tag is required" .Values.tag }}\n')
    message = render_error(chart, "helm", tmp_path / "out")
    assert message.startswith("render: helm template: ")
    assert message.endswith("tag is required")


def test_chart_dependencies_are_never_downloaded(tmp_path: Path) -> None:
    chart = tmp_path / "deps"
    write(chart / "Chart.yaml",
          "apiVersion: v2\nname: deps\nversion: 0.1.0\ndependencies:\n"
          "- name: redis\n  version: 20.0.0\n  repository: https://charts.bitnami.com/bitnami\n")
    write(chart / "templates" / "cm.yaml",
          "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n")
    message = render_error(chart, "helm", tmp_path / "out")
    assert "missing in charts/ directory: redis" in message


# ------------------------------------------------------------------ in place (controller)


def test_private_tree_builds_in_place_like_the_sandbox_copy(tmp_path: Path) -> None:
    # The controller's builds read the tree it just extracted (private, link-free) in place:
    # the same output as a build of a copy, and the same refusals.
    repo = tmp_path / "repo"
    write(repo / "base" / "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
                                     "  name: cm\ndata:\n  k: v\n")
    write(repo / "base" / "kustomization.yaml", "resources: [cm.yaml]\n")
    overlay = write(repo / "ov" / "kustomization.yaml",
                    "resources: [../base]\nnamePrefix: p-\nnamespace: team\n").parent
    copied = r.build_kustomization(overlay, root=repo)
    assert r.build_kustomization(overlay, root=repo, private=True) == copied
    assert "name: p-cm" in copied and "namespace: team" in copied

    # What the build does not read is not its business (as with the copy).
    write(repo / "other" / "kustomization.yaml", "resources:\n- github.com/org/r/d?ref=v1\n")
    assert r.build_kustomization(overlay, root=repo, private=True) == copied
    write(repo / "base" / "sub" / "kustomization.yaml",
          "resources:\n- github.com/org/r/d?ref=v1\n")
    with pytest.raises(RenderError, match="is a remote reference"):
        r.build_kustomization(overlay, root=repo, private=True)

    (repo / "base" / "sub" / "kustomization.yaml").unlink()
    (repo / "base" / "link.yaml").symlink_to(repo / "base" / "cm.yaml")
    with pytest.raises(RenderError, match="is a symlink"):
        r.build_kustomization(overlay, root=repo, private=True)
