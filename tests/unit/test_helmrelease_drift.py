"""``driftDetection.ignore`` rules (Flux's ``ssa/jsondiff`` semantics): JSON pointers,
anchored regular-expression targets, label and annotation selectors, and what drift
detection compares and corrects with them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ocigitops.puller.helmrelease import detect_drift
from ocigitops.puller.helmrelease_drift import (
    InvalidIgnoreRuleError,
    ignored,
    keep_live,
    parse_ignore_rules,
    parse_pointer,
    parse_selector,
    without,
)

DEPLOY: dict[str, Any] = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web-app", "namespace": "apps", "labels": {"tier": "front"},
                 "annotations": {"hpa": "on"}},
    "spec": {"replicas": 2, "template": {"metadata": {"annotations": {"a/b": "1"}},
                                         "spec": {"containers": [{"name": "c",
                                                                  "image": "x:1"}]}}}}


def test_pointers() -> None:
    assert parse_pointer("") == ()
    assert parse_pointer("/spec/replicas") == ("spec", "replicas")
    assert parse_pointer("/metadata/annotations/a~1b~0c") == ("metadata", "annotations",
                                                               "a/b~c")
    for bad in ("spec", "/a~2"):
        with pytest.raises(ValueError):
            parse_pointer(bad)
    out = without(DEPLOY, [("spec", "replicas"),
                           ("spec", "template", "spec", "containers", "0", "image"),
                           ("spec", "absent", "deeper")])
    assert "replicas" not in out["spec"] and DEPLOY["spec"]["replicas"] == 2
    assert out["spec"]["template"]["spec"]["containers"] == [{"name": "c"}]


def test_selectors() -> None:
    labels = {"tier": "front", "team": "a"}
    for expr, want in (("tier=front", True), ("tier==front", True), ("tier!=front", False),
                       ("tier in (back, front)", True), ("tier notin (front)", False),
                       ("team", True), ("!team", False), ("!absent,tier=front", True),
                       ("absent!=x", True), ("tier=back", False), ("", True)):
        assert all(r.matches(labels) for r in parse_selector(expr)) is want, expr
    with pytest.raises(ValueError):
        parse_selector("a in (b")


def test_rules_match_targets_by_anchored_regex_and_selectors() -> None:
    rules = parse_ignore_rules([
        {"paths": ["/spec/replicas"], "target": {"kind": "Deploy"}},        # anchored: no
        {"paths": ["/spec/replicas"], "target": {"kind": "Deploy.*", "group": "apps",
                                                 "version": "v1", "name": "web-.*",
                                                 "namespace": "apps",
                                                 "labelSelector": "tier=front",
                                                 "annotationSelector": "hpa"}},
        {"paths": ["/metadata/labels/x"]},                                    # no target: all
        {"paths": [""], "target": {"kind": "ConfigMap"}}])
    got = ignored(rules, DEPLOY)
    assert not got.whole
    assert got.paths == [("spec", "replicas"), ("metadata", "labels", "x")]
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    assert ignored(rules, cm).whole
    other = {**DEPLOY, "metadata": {**DEPLOY["metadata"], "labels": {"tier": "back"}}}
    assert ignored(rules, other).paths == [("metadata", "labels", "x")]


def test_invalid_rules_are_named() -> None:
    for raw, msg in (([{"paths": []}], r"ignore\[0\]\.paths"),
                     ([{"paths": ["spec"]}], r"ignore\[0\]\.paths: JSON pointer"),
                     ([{"paths": ["/a"], "target": {"kind": "("}}],
                      r"ignore\[0\]\.target\.kind: invalid regular expression"),
                     ([{"paths": ["/a"], "target": {"labelSelector": "a in (b"}}],
                      r"labelSelector"),
                     ([{"paths": ["/a"], "target": {"colour": "red"}}], "unknown"),
                     ({"paths": ["/a"]}, "must be a list")):
        with pytest.raises(InvalidIgnoreRuleError, match=msg):
            parse_ignore_rules(raw)
    assert parse_ignore_rules(None) == []


def test_keep_live_takes_ignored_values_from_the_cluster() -> None:
    live = {**DEPLOY, "spec": {**DEPLOY["spec"], "replicas": 5}}
    out = keep_live(DEPLOY, live, [("spec", "replicas"), ("metadata", "labels", "gone")])
    assert out["spec"]["replicas"] == 5 and DEPLOY["spec"]["replicas"] == 2
    assert "gone" not in out["metadata"]["labels"]


class FakeKube:
    """The live Deployment was scaled to 5 and its image edited by hand."""

    def __init__(self) -> None:
        self.live = {**DEPLOY, "metadata": {**DEPLOY["metadata"], "uid": "u1"},
                     "spec": {**DEPLOY["spec"], "replicas": 5}}
        self.applied: list[dict[str, Any]] = []

    async def resource(self, api: str, kind: str) -> Any:
        return type("Info", (), {"namespaced": True})()

    async def get(self, api: str, kind: str, name: str, ns: str | None, *,
                  impersonate: str | None = None) -> dict[str, Any]:
        return self.live

    async def apply(self, obj: dict[str, Any], *, dry_run: bool = False, force: bool = False,
                    impersonate: str | None = None) -> dict[str, Any]:
        if not dry_run:
            self.applied.append(obj)
        return {**obj, "metadata": {**obj["metadata"], "uid": "u1"}}


def test_detect_drift_neither_reports_nor_corrects_ignored_paths() -> None:
    import yaml
    manifest = yaml.safe_dump(DEPLOY)
    kube = FakeKube()
    rules = parse_ignore_rules([{"paths": ["/spec/replicas"],
                                 "target": {"kind": "Deployment"}}])
    assert asyncio.run(detect_drift(kube, manifest, "apps", None, correct=True,  # type: ignore[arg-type]
                                    ignore=rules)) == []
    assert kube.applied == []
    # Without the rule the scaled replicas are a drift, corrected back to 2.
    assert asyncio.run(detect_drift(kube, manifest, "apps", None,  # type: ignore[arg-type]
                                    correct=True)) == ["Deployment/apps/web-app"]
    assert kube.applied[-1]["spec"]["replicas"] == 2
    # With the rule and another drift: corrected, the ignored replicas kept as they are.
    kube.live = {**kube.live, "spec": {**kube.live["spec"], "template": {}}}
    assert asyncio.run(detect_drift(kube, manifest, "apps", None, correct=True,  # type: ignore[arg-type]
                                    ignore=rules)) == ["Deployment/apps/web-app"]
    assert kube.applied[-1]["spec"]["replicas"] == 5
    assert kube.applied[-1]["spec"]["template"] == DEPLOY["spec"]["template"]
