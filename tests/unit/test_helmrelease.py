"""HelmRelease's pure logic: the API (parse, defaults, CRD), values composition
(merge, targetPath), the remediation rule and the refusal of unsupported fields."""

from __future__ import annotations

from typing import Any

import pytest

from ocigitops.puller import crdgen
from ocigitops.puller.api.helmrelease import parse_helmrelease
from ocigitops.puller.api.schema import ValidationError
from ocigitops.puller.helmrelease import (
    Decision,
    ValuesError,
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
             postRenderers=[{"kustomize": {}}], kubeConfig={"secretRef": {"name": "k"}},
             upgrade={"preserveValues": True, "crds": "CreateReplace"},
             install={"crds": "CreateReplace"}, rollback={"recreate": True})
    assert unsupported_fields(parse_helmrelease(on)) == [
        "spec.postRenderers", "spec.kubeConfig", "spec.driftDetection.ignore",
        "spec.upgrade.preserveValues", "spec.upgrade.crds=CreateReplace",
        "spec.install.crds=CreateReplace", "spec.rollback.recreate"]


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
