"""HelmRelease's pure logic: the API (parse, defaults, CRD), values composition
(merge, targetPath), the remediation rule, the refusal of unsupported fields, the
post-renderers (kustomizations, digest, the sandboxed kustomize) and the source-not-ready
message."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from ocigitops.puller import crdgen
from ocigitops.puller.api.helmrelease import parse_helmrelease
from ocigitops.puller.api.schema import ValidationError
from ocigitops.puller.helm.engine import PostRenderError
from ocigitops.puller.helmrelease import (
    Decision,
    ValuesError,
    _source_not_ready,
    chart_object,
    comparable,
    drift_mode,
    merge_values,
    references,
    remediation_decision,
    set_path,
    split_path,
    typed_value,
    unsupported_fields,
    values_document,
)
from ocigitops.puller.helmrelease_post import (
    InvalidPostRendererError,
    kustomizations,
    post_renderer,
    post_renderers_digest,
)
from ocigitops.render import find_kustomize


def obj(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "ocigitops.dev/v1", "kind": "HelmRelease",
            "metadata": {"name": "web", "namespace": "apps", "generation": 1},
            "spec": {"interval": "5m", "chartRef": {"kind": "OCIRepository", "name": "web"},
                     **spec}}


# -- API ---------------------------------------------------------------------------------------

def test_parse_keeps_values_free_form_and_defaults_names() -> None:
    hr = parse_helmrelease(obj(values={"a": {"b": [1, {"c": None}]}}))
    assert hr.values == {"a": {"b": [1, {"c": None}]}}
    assert hr.release_name == "web" and hr.release_namespace == "apps"
    assert hr.storage_namespace == "apps"
    hr = parse_helmrelease(obj(targetNamespace="prod", storageNamespace="store"))
    assert hr.release_name == "prod-web" and hr.release_namespace == "prod"
    assert hr.storage_namespace == "store"
    long = parse_helmrelease(obj(targetNamespace="n" * 50))
    assert len(long.release_name) <= 53
    assert parse_helmrelease(obj(releaseName="x")).release_name == "x"
    assert parse_helmrelease(obj()).spec.timeout_seconds == 300


def test_parse_refuses_a_bad_spec() -> None:
    with pytest.raises(ValidationError, match="exactly one of chartRef or chart"):
        parse_helmrelease({"metadata": {"name": "a", "namespace": "b"},
                           "spec": {"interval": "1m"}})
    with pytest.raises(ValidationError, match=r"spec\.values: must be an object"):
        parse_helmrelease(obj(values=[1]))
    with pytest.raises(ValidationError, match=r"chartRef\.kind"):
        parse_helmrelease(obj(chartRef={"kind": "GitRepository", "name": "x"}))
    with pytest.raises(ValidationError, match="exactly one of chartRef or chart"):
        parse_helmrelease(obj(chart={"spec": {"chart": "web", "sourceRef": {
            "kind": "HelmRepository", "name": "repo"}}}))
    with pytest.raises(ValidationError, match="strategy"):
        parse_helmrelease(obj(upgrade={"remediation": {"strategy": "delete"}}))


def test_crd_has_free_form_values_and_the_printer_columns() -> None:
    crd = crdgen.helm_release_crd()
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["values"]["x-kubernetes-preserve-unknown-fields"] is True
    assert spec["properties"]["postRenderers"]["type"] == "array"
    assert "chartRef" in spec["properties"] and "valuesFrom" in spec["properties"]
    assert spec["required"] == ["interval"]
    install = spec["properties"]["install"]["properties"]
    assert install["crds"]["enum"] == ["Skip", "Create", "CreateReplace"]
    assert "disableOpenAPIValidation" in install


def test_references_wake_on_chart_and_dependencies() -> None:
    o = obj(dependsOn=[{"name": "db"}, {"name": "crds", "namespace": "base"}])
    o["spec"]["chartRef"] = {"kind": "HelmChart", "name": "c", "namespace": "src"}
    assert references(o) == [("HelmChart", "src", "c"), ("HelmRelease", "apps", "db"),
                             ("HelmRelease", "base", "crds")]


# -- values ------------------------------------------------------------------------------------

def test_merge_is_helms_deep_merge() -> None:
    base = {"a": {"x": 1, "y": {"z": 1}}, "list": [1, 2], "s": "keep"}
    over = {"a": {"y": {"w": 2}, "x": None}, "list": [3], "new": True}
    assert merge_values(base, over) == {"a": {"x": None, "y": {"z": 1, "w": 2}},
                                        "list": [3], "s": "keep", "new": True}
    assert base == {"a": {"x": 1, "y": {"z": 1}}, "list": [1, 2], "s": "keep"}  # untouched
    assert merge_values({"a": 1}, {"a": {"b": 2}}) == {"a": {"b": 2}}
    assert merge_values({"a": {"b": 2}}, {"a": "flat"}) == {"a": "flat"}


def test_target_path_sets_a_typed_value() -> None:
    assert split_path("a.b.c") == ["a", "b", "c"]
    assert split_path(r"ingress.annotations.kubernetes\.io/class") == [
        "ingress", "annotations", "kubernetes.io/class"]
    assert set_path({"a": {"keep": 1}}, "a.b", 2) == {"a": {"keep": 1, "b": 2}}
    assert set_path({"a": "scalar"}, "a.b", 2) == {"a": {"b": 2}}
    assert [typed_value(v) for v in ("true", "false", "null", "42", "-3", "007", "1.5", "x")] \
        == [True, False, None, 42, -3, "007", "1.5", "x"]
    with pytest.raises(ValuesError, match="list indexes are not supported"):
        split_path("a[0].b")
    with pytest.raises(ValuesError, match="empty key"):
        split_path("a..b")


def test_values_document() -> None:
    assert values_document("", "cm") == {}
    assert values_document("a: 1\nb: [x]\n", "cm") == {"a": 1, "b": ["x"]}
    with pytest.raises(ValuesError, match="must hold a YAML map"):
        values_document("- 1\n", "ConfigMap apps/v key 'values.yaml'")
    with pytest.raises(ValuesError, match="not valid YAML"):
        values_document("a: [", "cm")


# -- remediation -------------------------------------------------------------------------------

@pytest.mark.parametrize(("failures", "retries", "last", "expected"), [
    (1, 0, None, Decision(remediate=False, retry=False)),   # Flux's default: stop, keep it
    (1, 0, True, Decision(remediate=True, retry=False)),
    (1, 2, None, Decision(remediate=True, retry=True)),
    (2, 2, None, Decision(remediate=True, retry=True)),
    (3, 2, None, Decision(remediate=True, retry=False)),    # retries > 0: last remediated
    (3, 2, False, Decision(remediate=False, retry=False)),
    (99, -1, None, Decision(remediate=True, retry=True)),   # forever
])
def test_remediation_decision(failures: int, retries: int, last: bool | None,
                              expected: Decision) -> None:
    assert remediation_decision(failures, retries, last) == expected


def test_unsupported_fields_are_named() -> None:
    assert unsupported_fields(parse_helmrelease(obj())) == []
    off = obj(test={"enable": False}, driftDetection={"mode": "disabled"}, postRenderers=[])
    assert unsupported_fields(parse_helmrelease(off)) == []
    for mode in ("warn", "enabled"):
        ok = parse_helmrelease(obj(driftDetection={"mode": mode}))
        assert unsupported_fields(ok) == [] and drift_mode(ok) == mode
    assert drift_mode(parse_helmrelease(obj())) == "disabled"
    assert unsupported_fields(parse_helmrelease(obj(driftDetection={"mode": "loud"}))) == [
        "spec.driftDetection.mode (disabled, warn or enabled)"]
    on = obj(test={"enable": True}, driftDetection={"mode": "enabled", "ignore": [
        {"paths": ["/spec/replicas"]}]},
             postRenderers=[{"kustomize": {"patchesStrategicMerge": [{"kind": "X"}],
                                           "patchesJson6902": [{"patch": []}]}}],
             kubeConfig={"secretRef": {"name": "k"}},
             upgrade={"preserveValues": True, "crds": "CreateReplace"},
             install={"crds": "CreateReplace"}, rollback={"recreate": True})
    assert unsupported_fields(parse_helmrelease(on)) == [
        "spec.kubeConfig (remote clusters are not supported yet)",
        "spec.postRenderers[0].kustomize.patchesStrategicMerge",
        "spec.postRenderers[0].kustomize.patchesJson6902",
        "spec.upgrade.preserveValues", "spec.rollback.recreate"]


def test_chart_template_makes_fluxs_helmchart() -> None:
    o = obj(chart={"metadata": {"labels": {"team": "a"}},
                   "spec": {"chart": "web", "version": "1.x",
                            "sourceRef": {"kind": "HelmRepository", "name": "repo",
                                          "namespace": "flux"},
                            "valuesFiles": ["values-prod.yaml"]}})
    del o["spec"]["chartRef"]
    hr = parse_helmrelease(o)
    assert unsupported_fields(hr) == []
    assert chart_object(hr) == {
        "apiVersion": "ocigitops.dev/v1", "kind": "HelmChart",
        "metadata": {"name": "apps-web", "namespace": "flux",
                     "labels": {"team": "a", "helmrelease.ocigitops.dev/name": "web",
                                "helmrelease.ocigitops.dev/namespace": "apps"}},
        "spec": {"chart": "web", "version": "1.x",
                 "sourceRef": {"kind": "HelmRepository", "name": "repo"},
                 "interval": "5m", "reconcileStrategy": "ChartVersion",
                 "ignoreMissingValuesFiles": False, "valuesFiles": ["values-prod.yaml"]}}
    assert references(o) == [("HelmChart", "flux", "apps-web")]


# -- command line --------------------------------------------------------------------------------

def test_cli_words_name_helmreleases() -> None:
    from ocigitops.puller import ops

    for word in ("hr", "helmrelease"):
        assert ops.parse_target(word, ["web"]) == ops.Target("HelmRelease", "web")
        assert ops.parse_target(word, [], all_=True) == ops.Target("HelmRelease", "")
    row = ops._row({"metadata": {"name": "web", "namespace": "apps"},
                    "spec": {"suspend": False},
                    "status": {"lastAttemptedRevision": "0.2.0@sha256:ab",
                               "history": [{"chartVersion": "0.1.0"}],
                               "conditions": [{"type": "Ready", "status": "True",
                                               "message": "ok"}]}}, "HelmRelease")
    assert (row.name, row.revision, row.ready, row.message) == ("web", "0.1.0", "True", "ok")
    fresh = ops._row({"metadata": {"name": "web", "namespace": "apps"},
                      "status": {"lastAttemptedRevision": "0.2.0@sha256:ab"}}, "HelmRelease")
    assert fresh.revision == "0.2.0@sha256:ab"


def test_drift_comparison_ignores_server_fields() -> None:
    live = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"},
            "metadata": {"name": "x", "resourceVersion": "9", "managedFields": [{}],
                         "uid": "u", "generation": 2, "creationTimestamp": "t"},
            "status": {"phase": "x"}}
    dry = {**live, "metadata": {"name": "x", "resourceVersion": "10"}}
    assert comparable(live) == comparable(dry)
    assert comparable(live) != comparable({**dry, "data": {"a": "2"}})


# -- postRenderers -------------------------------------------------------------------------------

PATCH = "- op: replace\n  path: /spec/replicas\n  value: 3\n"
LABEL = ("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web-app\n"
         "  labels:\n    patched: 'yes'\n")
RENDERED = """---
# Source: tiny/templates/deploy.yaml
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-app}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: registry.example/app:1.0}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web-cm}
data: {a: b}
"""


def test_post_renderers_make_kustomizations_in_order() -> None:
    prs = [{"kustomize": {
        "patches": [{"patch": PATCH, "target": {"kind": "Deployment", "name": "web-.*",
                                                 "labelSelector": None}},
                    {"patch": LABEL}],
        "images": [{"name": "registry.example/app", "newName": "registry.example/other",
                    "newTag": "2.0", "digest": None}]}},
           {"kustomize": {"images": [{"name": "x", "digest": "sha256:" + "a" * 64}]}}]
    first, second = kustomizations(prs)
    assert first == {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["manifests.yaml"],
        "patches": [{"patch": PATCH, "target": {"kind": "Deployment", "name": "web-.*"}},
                    {"patch": LABEL}],
        "images": [{"name": "registry.example/app", "newName": "registry.example/other",
                    "newTag": "2.0"}]}
    assert second["images"] == [{"name": "x", "digest": "sha256:" + "a" * 64}]
    assert "patches" not in second
    assert kustomizations(None) == [] and post_renderer([]) is None
    # The deprecated fields are refused elsewhere (UnsupportedField), not built.
    assert "patchesStrategicMerge" not in kustomizations(
        [{"kustomize": {"patchesStrategicMerge": ["x"]}}])[0]


@pytest.mark.parametrize(("prs", "message"), [
    ({"kustomize": {}}, r"spec\.postRenderers must be a list"),
    ([{}], r"spec\.postRenderers\[0\]\.kustomize is required"),
    ([{"kustomize": {}, "helm": 1}], r"unknown field\(s\) helm"),
    ([{"kustomize": {"patches": [{"target": {"kind": "A"}}]}}],
     r"patches\[0\]\.patch is required"),
    ([{"kustomize": {"patches": [{"patch": "x", "path": "p.yaml"}]}}],
     r"unknown field\(s\) path"),
    ([{"kustomize": {"patches": [{"patch": "x", "target": {"kind": 3}}]}}],
     r"target\.kind must be a string"),
    ([{"kustomize": {"images": [{"newTag": "2"}]}}], r"images\[0\]\.name is required"),
    ([{"kustomize": {"replicas": [{"name": "a", "count": 2}]}}], r"unknown field\(s\) replicas"),
])
def test_post_renderers_of_another_shape_are_refused(prs: Any, message: str) -> None:
    with pytest.raises(InvalidPostRendererError, match=message):
        kustomizations(prs)


def test_post_renderers_digest() -> None:
    assert post_renderers_digest(None) is None and post_renderers_digest([]) is None
    a = post_renderers_digest([{"kustomize": {"images": [{"name": "a", "newTag": "1"}]}}])
    b = post_renderers_digest([{"kustomize": {"images": [{"newTag": "1", "name": "a"}]}}])
    c = post_renderers_digest([{"kustomize": {"images": [{"name": "a", "newTag": "2"}]}}])
    assert a == b != c and str(a).startswith("sha256:")


def _kustomize_available() -> bool:
    try:
        find_kustomize()
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _kustomize_available(), reason="kustomize not installed")
def test_post_renderer_runs_kustomize_in_order() -> None:
    fn = post_renderer([
        {"kustomize": {"patches": [{"patch": PATCH, "target": {"kind": "Deployment"}},
                                   {"patch": LABEL}],
                       "images": [{"name": "registry.example/app",
                                   "newName": "registry.example/other", "newTag": "2.0"}]}},
        {"kustomize": {"images": [{"name": "registry.example/other", "newTag": "3.0"}]}}])
    assert fn is not None
    docs = {d["kind"]: d for d in yaml.safe_load_all(fn(RENDERED)) if d}
    dep = docs["Deployment"]
    assert dep["spec"]["replicas"] == 3
    assert dep["metadata"]["labels"] == {"patched": "yes"}
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.example/other:3.0"
    assert docs["ConfigMap"]["data"] == {"a": "b"}
    assert fn("---\n# Source: empty\n") == "---\n# Source: empty\n"  # nothing rendered
    bad = post_renderer([{"kustomize": {"patches": [{"patch": "nonsense: [",
                                                      "target": {"kind": "Deployment"}}]}}])
    assert bad is not None
    with pytest.raises(PostRenderError, match=r"^postRenderers\[0\]: kustomize: ") as e:
        bad(RENDERED)
    assert "\n" not in str(e.value)


def test_source_not_ready_names_the_sources_reason() -> None:
    class FakeKube:
        def __init__(self, ready: dict[str, Any] | None) -> None:
            self.ready = ready
            self.asked: list[tuple[str, str, str | None]] = []

        async def get(self, api: str, kind: str, name: str,
                      ns: str | None = None) -> dict[str, Any] | None:
            self.asked.append((kind, name, ns))
            if self.ready is None:
                return None
            return {"status": {"conditions": [{"type": "Ready", **self.ready}]}}

    hr = parse_helmrelease(obj())
    failed = FakeKube({"status": "False", "reason": "VerificationError",
                       "message": "no valid signature"})
    ctx: Any = SimpleNamespace(kube=failed)
    assert asyncio.run(_source_not_ready(ctx, hr)) == \
        ": source not ready: VerificationError: no valid signature"
    assert failed.asked == [("OCIRepository", "web", "apps")]
    for ready in (None, {"status": "Unknown", "reason": "Progressing", "message": "..."},
                  {"status": "True", "reason": "Succeeded", "message": "ok"}):
        ctx = SimpleNamespace(kube=FakeKube(ready))
        assert asyncio.run(_source_not_ready(ctx, hr)) == ""


def _tgz(path: Any, files: dict[str, str]) -> Any:
    import io
    import tarfile
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


CRD_DOC = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: %s.example.com}
spec: {group: example.com}
"""


def test_chart_crds_reads_only_crds_dirs_and_only_crds(tmp_path: Any) -> None:
    from ocigitops.puller.helmrelease_crds import CRDError, apply_crds, chart_crds
    ok = _tgz(tmp_path / "ok.tgz", {
        "web/Chart.yaml": "name: web", "web/templates/cm.yaml": "kind: ConfigMap",
        "web/crds/a.yaml": CRD_DOC % "as" + "---\n" + CRD_DOC % "bs",
        "web/crds/README.md": "not yaml: [", "web/charts/sub/crds/c.yml": CRD_DOC % "cs",
        "web/charts/sub/crds/deeper/d.yaml": CRD_DOC % "ds"})
    assert [d["metadata"]["name"] for d in chart_crds(ok)] == [
        "as.example.com", "bs.example.com", "cs.example.com"]
    bad = _tgz(tmp_path / "bad.tgz", {"web/crds/x.yaml": "apiVersion: v1\nkind: ConfigMap\n"
                                                         "metadata: {name: x}\n"})
    with pytest.raises(CRDError, match=r"only apiextensions\.k8s\.io/v1 CustomResourceDefinition"):
        chart_crds(bad)
    with pytest.raises(CRDError, match="could not be read"):
        chart_crds(tmp_path / "absent.tgz")

    class Kube:
        async def get(self, *a: Any, **k: Any) -> Any:
            return {"exists": True} if a[2] == "as.example.com" else None

    calls: list[list[str]] = []

    async def fake_apply_set(kube: Any, objs: Any, **k: Any) -> Any:
        calls.append([o["metadata"]["name"] for o in objs])
        return None

    import ocigitops.puller.helmrelease_crds as mod
    real = mod.apply_set
    mod.apply_set = fake_apply_set  # type: ignore[assignment]
    try:
        crds = chart_crds(ok)
        asyncio.run(apply_crds(Kube(), crds, "Create", impersonate=None,  # type: ignore[arg-type]
                               wait_seconds=5))
        asyncio.run(apply_crds(Kube(), crds, "CreateReplace",  # type: ignore[arg-type]
                               impersonate=None, wait_seconds=5))
        asyncio.run(apply_crds(Kube(), crds, "Skip", impersonate=None,  # type: ignore[arg-type]
                               wait_seconds=5))
    finally:
        mod.apply_set = real
    assert calls == [["bs.example.com", "cs.example.com"],
                     ["as.example.com", "bs.example.com", "cs.example.com"]]


def test_engine_flags_and_default_service_account() -> None:
    from ocigitops.puller.helm.binary import BinaryEngine
    from ocigitops.puller.helm.sdk import SdkEngine
    from ocigitops.puller.helmrelease import HelmReleaseContext, make_engine
    from ocigitops.puller.runtime.options import Options
    from ocigitops.puller.runtime.reconciler import Deps

    eng = make_engine("binary", 3)
    assert isinstance(eng, BinaryEngine) and eng.max_processes == 3
    assert isinstance(make_engine("sdk"), SdkEngine)
    with pytest.raises(ValueError, match="binary or sdk"):
        make_engine("helm2")
    deps = Deps(kube=None, cache=None, options=Options(  # type: ignore[arg-type]
        helm_engine="binary", concurrent_helm=1, default_service_account="tenant"))
    ctx = HelmReleaseContext.from_deps(deps)
    assert isinstance(ctx.engine, BinaryEngine) and ctx.engine.max_processes == 1
    ctx.kubeconfig = lambda: "{}"
    access = ctx.access(parse_helmrelease(obj()))
    assert access.impersonate is not None
    assert access.impersonate.user == "system:serviceaccount:apps:tenant"
    own = ctx.access(parse_helmrelease(obj(serviceAccountName="mine")))
    assert own.impersonate is not None
    assert own.impersonate.user == "system:serviceaccount:apps:mine"
