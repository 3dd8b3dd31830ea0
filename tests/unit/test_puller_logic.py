"""Puller logic without a cluster: substitution, kstatus health, inventory ids."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

import pytest

from ocigitops.puller.apply import ApplyError, ObjRef, health, validate_objects, wait_ready
from ocigitops.puller.substitute import SubstitutionError, substitute_objects, substitute_text

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("text", "want"), [
    ("${a}", "A"), ("${missing}", ""), ("${missing:=d}", "d"), ("${empty:=d}", "d"),
    ("${empty=d}", ""), ("${missing-d}", "d"), ("${a:-d}", "A"), ("$${a}", "${a}"),
    ("${1bad}", "${1bad}"), ("x-${a}-${a}", "x-A-A"),
])
def test_substitute_text(text: str, want: str) -> None:
    assert substitute_text(text, {"a": "A", "empty": ""}) == want


def test_substitute_objects_respects_opt_out_and_validates() -> None:
    objs = [{"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "${v}"}},
            {"kind": "ConfigMap", "metadata": {"name": "keep", "annotations": {
                "kustomize.ocigitops.dev/substitute": "disabled"}}, "data": {"k": "${v}"}}]
    out = substitute_objects(objs, {"v": "1"})
    # As in Flux, substitution happens on YAML text: an unquoted number becomes a number
    # (users quote "${v}" to keep strings), and opted-out objects are untouched.
    assert out[0]["data"]["k"] == 1 and out[1]["data"]["k"] == "${v}"
    quoted = [{"kind": "ConfigMap", "metadata": {"name": "q"}, "data": {"k": "'${v}'"}}]
    assert substitute_objects(quoted, {"v": "1"})[0]["data"]["k"] == "'1'"
    with pytest.raises(SubstitutionError, match="invalid variable name"):
        substitute_objects(objs, {"bad-name": "x"})
    with pytest.raises(SubstitutionError, match="substituted YAML is invalid"):
        substitute_objects(objs[:1], {"v": "[unclosed"})


def test_inventory_ids_round_trip() -> None:
    ref = ObjRef.of({"apiVersion": "apps/v1", "kind": "Deployment",
                     "metadata": {"name": "web", "namespace": "team"}})
    assert ref.id == "team_web_apps_Deployment" and ref.api_version == "apps/v1"
    assert ObjRef.from_inventory(ref.inventory_entry()) == ref
    ns = ObjRef.of({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    assert ns.id == "_team__Namespace" and ObjRef.from_inventory(ns.inventory_entry()) == ns


def test_validate_objects_names_every_problem() -> None:
    with pytest.raises(ApplyError) as e:
        validate_objects([{"apiVersion": "v1", "kind": "ConfigMap"},
                          {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
                          {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}])
    assert len(e.value.failures) == 2 and "defined twice" in str(e.value.failures)


@pytest.mark.parametrize(("obj", "state"), [
    (None, "InProgress"),
    ({"kind": "ConfigMap"}, "Current"),
    ({"kind": "Deployment", "metadata": {"generation": 2},
      "status": {"observedGeneration": 1}}, "InProgress"),
    ({"kind": "Deployment", "spec": {"replicas": 2}, "metadata": {"generation": 1},
      "status": {"observedGeneration": 1, "updatedReplicas": 2, "availableReplicas": 2,
                 "replicas": 2}}, "Current"),
    ({"kind": "Deployment", "spec": {"replicas": 2},
      "status": {"updatedReplicas": 2, "availableReplicas": 1, "replicas": 2}}, "InProgress"),
    ({"kind": "Deployment", "status": {"conditions": [
        {"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]}}, "Failed"),
    ({"kind": "Job", "status": {"conditions": [{"type": "Failed", "status": "True"}]}},
     "Failed"),
    ({"kind": "Job", "status": {"conditions": [{"type": "Complete", "status": "True"}]}},
     "Current"),
    ({"kind": "CustomResourceDefinition", "status": {"conditions": [
        {"type": "Established", "status": "True"}]}}, "Current"),
    ({"kind": "Namespace", "status": {"phase": "Terminating"}}, "InProgress"),
    ({"kind": "Widget", "status": {"conditions": [{"type": "Ready", "status": "False",
                                                   "message": "warming"}]}}, "InProgress"),
    ({"kind": "Widget", "status": {"conditions": [{"type": "Stalled", "status": "True"}]}},
     "Failed"),
])
def test_health_rules(obj: dict[str, object] | None, state: str) -> None:
    assert health(obj)[0] == state


def test_strict_substitution_names_the_variable() -> None:
    objs = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
             "data": {"a": "${defined}", "b": "${missing}"}}]
    with pytest.raises(SubstitutionError, match="ConfigMap c: variable 'missing' is not"):
        substitute_objects(objs, {"defined": "1"}, strict=True)
    # Defaults and escapes are fine in strict mode; without it the variable is emptied.
    assert substitute_text("${missing:=x} $${missing}", {}, strict=True) == "x ${missing}"
    assert substitute_objects(objs, {"defined": "1"})[0]["data"] == {"a": 1, "b": None}


def test_fetch_failure_reason_comes_from_the_error_type() -> None:
    """Before: any message containing "credentials" was AuthenticationFailed."""
    from ocigitops.errors import AuthenticationError, OcigitopsError
    from ocigitops.puller.sources.oci import _failed

    def reason(e: Exception) -> str:
        conditions: list[dict[str, object]] = []
        out = _failed({}, conditions, 1, 60.0, e)
        assert out.failed
        return str(next(c for c in conditions if c["type"] == "Ready")["reason"])

    assert reason(AuthenticationError("registry r refused us")) == "AuthenticationFailed"
    assert reason(OcigitopsError("tag 'credentials' not found")) == "OCIArtifactPullFailed"


class _Reader:
    """Serves health reads from a dict and records which objects were read."""

    def __init__(self, objs: Mapping[str, dict[str, Any]]) -> None:
        self.objs = objs
        self.read: list[str] = []

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None,
                  *, impersonate: str | None = None) -> dict[str, Any] | None:
        self.read.append(f"{kind}/{name}")
        return self.objs.get(f"{kind}/{name}")


def test_wait_ready_reads_only_what_the_apply_did_not_show_current() -> None:
    cm = ObjRef("", "ConfigMap", "ns", "cm", "v1")
    dep = ObjRef("apps", "Deployment", "ns", "web", "v1")
    applied = {cm: {"kind": "ConfigMap", "metadata": {"name": "cm"}},
               dep: {"kind": "Deployment", "metadata": {"name": "web", "generation": 1},
                     "spec": {"replicas": 1}, "status": {}}}
    ready_dep = {**applied[dep], "status": {"observedGeneration": 1, "replicas": 1,
                                            "updatedReplicas": 1, "availableReplicas": 1}}
    reader = _Reader({"Deployment/web": ready_dep})
    asyncio.run(wait_ready(cast(Any, None), [cm, dep], seconds=5, reader=reader,
                           known=applied))
    assert reader.read == ["Deployment/web"]  # the ConfigMap was Current as applied
    reader.read.clear()
    asyncio.run(wait_ready(cast(Any, None), [cm], seconds=5, reader=reader, known=applied))
    assert reader.read == []
