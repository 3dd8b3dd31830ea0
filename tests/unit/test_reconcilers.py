"""Each reconciler through its injected context, below the API server.

OCIRepository talks to a real registry (the embedded one, on 127.0.0.1) and stores into a
real artifact cache; the cluster reads come from :class:`tests.helpers.memkube.MemKube`,
a read-only stand-in (everything that writes to a cluster is tested in tests/e2e). Every
status a reconcile returns must fit the kind's typed status, as the runtime requires.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from ocigitops.publisher.artifacts import build_artifact_file
from ocigitops.puller import conditions as cond
from ocigitops.puller import kustomization as ks_rec
from ocigitops.puller import reconcilers
from ocigitops.puller.api.kustomization import KustomizationStatus
from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.api.ocirepository import OCIRepositoryStatus
from ocigitops.puller.api.schema import ValidationError
from ocigitops.puller.cache import ArtifactCache
from ocigitops.puller.reconcile import Outcome, begin, merge_patch, typed_status
from ocigitops.puller.sources import oci
from ocigitops.puller.sources.contract import SourceKind
from ocigitops.regserver import BackgroundRegistry
from tests.helpers.memkube import MemKube
from tests.helpers.publish import configmap, manifest_tree, publish

NS = "apps"


def conditions_of(out: Outcome | Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    status = out.status if isinstance(out, Outcome) else out
    return {c["type"]: c for c in status.get("conditions") or []}


class Progress:
    """Records the statuses a reconcile reports while it works."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    async def __call__(self, obj: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        self.reports.append(dict(status, conditions=[dict(c) for c in
                                                     status.get("conditions") or []]))


# -- runtime pieces -----------------------------------------------------------------------

def test_controllers_are_selected_by_name_alias_or_kind() -> None:
    assert reconcilers.names() == ["oci", "git", "helmrepository", "helmchart",
                                   "kustomization", "helmrelease"]
    assert reconcilers.select([]) == reconcilers.ALL
    assert reconcilers.select(["all"]) == reconcilers.ALL
    assert [r.kind for r in reconcilers.select(["KS"])] == ["Kustomization"]
    # Order is the registry's, whatever the order asked.
    assert [r.kind for r in reconcilers.select(["kustomization", "OCIRepository"])] == [
        "OCIRepository", "Kustomization"]
    # Flux's CLI words: `helm` is HelmRepository, `chart` HelmChart, `hr` HelmRelease.
    assert [r.kind for r in reconcilers.select(["helm", "chart", "hr"])] == [
        "HelmRepository", "HelmChart", "HelmRelease"]
    with pytest.raises(Exception, match="unknown controller nope: choose from oci, git,"
                                        " helmrepository, helmchart, kustomization,"
                                        " helmrelease or all"):
        reconcilers.select(["nope"])


def test_every_kind_declares_a_typed_status_and_sources_their_contract() -> None:
    for rec in reconcilers.ALL:
        assert typed_status(rec.status_type, {})["conditions"] == []
    assert {r.source.kind for r in reconcilers.ALL if r.source} == {
        "OCIRepository", "GitRepository", "HelmRepository", "HelmChart"}
    assert ks_rec.RECONCILER.finalizer == "finalizers.ocigitops.dev"


def test_merge_patch_nulls_what_the_new_status_dropped() -> None:
    old = {"artifact": {"digest": "a", "metadata": {"x": "1", "y": "2"}},
           "verification": {"digest": "d"}, "observedGeneration": 1}
    new = {"artifact": {"digest": "a", "metadata": {"x": "1"}}, "observedGeneration": 2}
    assert merge_patch(old, new) == {"artifact": {"metadata": {"y": None}},
                                     "verification": None, "observedGeneration": 2}
    assert merge_patch(new, new) == {}


def test_typed_status_refuses_what_the_api_does_not_declare() -> None:
    with pytest.raises(ValidationError, match=r"status\.lastAppliedRevision: unknown field"):
        typed_status(OCIRepositoryStatus, {"lastAppliedRevision": "v1"})
    with pytest.raises(ValidationError, match="reason"):
        typed_status(KustomizationStatus, {"conditions": [
            {"type": "Ready", "status": "True", "reason": "not a reason!",
             "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]})


def test_begin_drops_status_fields_an_older_version_left() -> None:
    start = begin({"metadata": {"name": "a", "generation": 3},
                   "status": {"observedGeneration": 2, "legacyField": 1}},
                  KustomizationStatus)
    assert start.status == {"observedGeneration": 2, "conditions": []}
    assert start.generation == 3


def test_failure_keeps_reconciling_with_retry_and_stall_drops_it() -> None:
    conditions: list[dict[str, Any]] = []
    cond.mark_reconciling(conditions, cond.PROGRESSING, "working", 1)
    cond.mark_failed(conditions, cond.BUILD_FAILED, "broken", 1)
    by = {c["type"]: c for c in conditions}
    assert (by["Ready"]["status"], by["Ready"]["reason"]) == ("False", "BuildFailed")
    assert (by["Reconciling"]["status"], by["Reconciling"]["reason"]) == (
        "True", "ProgressingWithRetry")
    assert "Stalled" not in by
    cond.mark_failed(conditions, cond.INVALID_SPEC, "bad", 2, stalled=True)
    by = {c["type"]: c for c in conditions}
    assert "Reconciling" not in by and by["Stalled"]["status"] == "True"
    cond.mark_ready(conditions, cond.SUCCEEDED, "ok", 3)
    assert [c["type"] for c in conditions] == ["Ready"]


# -- OCIRepository ------------------------------------------------------------------------

def source_obj(host: str, tag: str = "v1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "OCIRepository",
            "metadata": {"name": "web", "namespace": NS, "generation": 1},
            "spec": {"url": f"oci://{host}/apps/web", "ref": {"tag": tag}, "interval": "5m",
                     "insecure": True, **spec}}


def oci_context(tmp_path: Path, kube: MemKube | None = None,
                ) -> tuple[oci.SourceContext, Progress]:
    progress = Progress()
    ctx = oci.SourceContext(kube=kube or MemKube(),  # type: ignore[arg-type]
                            cache=ArtifactCache(tmp_path / "cache"), progress=progress)
    return ctx, progress


def test_oci_stores_a_new_revision_reports_progress_then_stays_quiet(
        tmp_path: Path, reg: BackgroundRegistry) -> None:
    revision = publish(reg.host, "apps/web",
                       manifest_tree(tmp_path, "a", configmap("one", {"k": "v"})), "v1")
    ctx, progress = oci_context(tmp_path)
    obj = source_obj(reg.host)
    out = asyncio.run(oci.reconcile(obj, ctx))
    typed_status(OCIRepositoryStatus, out.status)
    by = conditions_of(out)
    assert (by["Ready"]["status"], by["Ready"]["reason"]) == ("True", "Succeeded")
    assert by["ArtifactInStorage"]["status"] == "True"
    assert "Reconciling" not in by and "FetchFailed" not in by
    assert out.changed and not out.failed and out.requeue_after == 300
    assert out.status["artifact"]["revision"] == revision
    assert ctx.cache.has(out.status["artifact"]["digest"])
    assert [e[1] for e in out.events] == ["NewArtifact"]
    # While it worked it said so: Reconciling=True, Ready=Unknown.
    [report] = progress.reports
    during = conditions_of(report)
    assert (during["Reconciling"]["status"], during["Reconciling"]["reason"]) == (
        "True", "Progressing")
    assert during["Ready"]["status"] == "Unknown"
    assert revision in during["Reconciling"]["message"]

    again = asyncio.run(oci.reconcile({**obj, "status": out.status}, ctx))
    assert not again.changed and not again.events and len(progress.reports) == 1
    assert conditions_of(again)["Ready"]["status"] == "True"


def test_oci_fetch_failure_is_retried_and_says_why(tmp_path: Path,
                                                   reg: BackgroundRegistry) -> None:
    ctx, _ = oci_context(tmp_path)
    out = asyncio.run(oci.reconcile(source_obj(reg.host, tag="absent"), ctx))
    typed_status(OCIRepositoryStatus, out.status)
    by = conditions_of(out)
    assert (by["Ready"]["status"], by["Ready"]["reason"]) == ("False", "OCIArtifactPullFailed")
    assert (by["Reconciling"]["status"], by["Reconciling"]["reason"]) == (
        "True", "ProgressingWithRetry")
    assert by["FetchFailed"]["status"] == "True" and "Stalled" not in by
    assert out.failed and out.requeue_after == 300 and "absent" in by["Ready"]["message"]


def test_oci_missing_credentials_secret_is_named(tmp_path: Path,
                                                 reg: BackgroundRegistry) -> None:
    ctx, _ = oci_context(tmp_path)
    out = asyncio.run(oci.reconcile(source_obj(reg.host, secretRef={"name": "creds"}),
                                    ctx))
    assert f"Secret {NS}/creds not found" in conditions_of(out)["Ready"]["message"]


def test_oci_invalid_spec_stalls(tmp_path: Path) -> None:
    ctx, _ = oci_context(tmp_path)
    obj = source_obj("127.0.0.1:1")
    del obj["spec"]["url"]
    out = asyncio.run(oci.reconcile(obj, ctx))
    typed_status(OCIRepositoryStatus, out.status)
    by = conditions_of(out)
    assert by["Stalled"]["status"] == "True" and "Reconciling" not in by
    assert out.requeue_after is None and by["Ready"]["reason"] == "InvalidSpec"


# -- Kustomization ------------------------------------------------------------------------

def ks_obj(source_kind: str = "OCIRepository", source_ns: str | None = None,
           **spec: Any) -> dict[str, Any]:
    ref: dict[str, Any] = {"kind": source_kind, "name": "web"}
    if source_ns:
        ref["namespace"] = source_ns
    return {"apiVersion": API_VERSION, "kind": "Kustomization",
            "metadata": {"name": "app", "namespace": NS, "generation": 1},
            "spec": {"interval": "10m", "retryInterval": "2m", "path": "./",
                     "prune": True, "sourceRef": ref, **spec}}


def ks_context(tmp_path: Path, kube: MemKube, **kw: Any,
               ) -> tuple[ks_rec.KustomizeContext, Progress]:
    progress = Progress()
    sources = {"OCIRepository": oci.SOURCE}
    kw.setdefault("served", frozenset(sources))
    ctx = ks_rec.KustomizeContext(kube=kube,  # type: ignore[arg-type]
                                  cache=ArtifactCache(tmp_path / "cache"), sources=sources,
                                  requeue_dependency=30.0, progress=progress, **kw)
    return ctx, progress


def stored_source(tmp_path: Path, cache: ArtifactCache, kind: str = "OCIRepository",
                  revision: str = "v1@sha256:" + "1" * 64) -> dict[str, Any]:
    """A source object whose status publishes an artifact that is in ``cache``."""
    tree = manifest_tree(tmp_path, f"src-{kind}", configmap("one", {"k": "v"}))
    layer = build_artifact_file(tree, tmp_path / f"{kind}.tar.gz")

    async def chunks() -> AsyncIterator[bytes]:
        yield layer.path.read_bytes()

    asyncio.run(cache.store(layer.digest, chunks()))
    return {"apiVersion": API_VERSION, "kind": kind,
            "metadata": {"name": "web", "namespace": NS, "generation": 1},
            "spec": {}, "status": {"artifact": {"digest": layer.digest, "revision": revision,
                                                "path": "x", "url": "file:///x",
                                                "lastUpdateTime": "2026-01-01T00:00:00Z"}}}


def check_ks(out: Outcome, reason: str) -> dict[str, dict[str, Any]]:
    typed_status(KustomizationStatus, out.status)
    by = conditions_of(out)
    assert (by["Ready"]["status"], by["Ready"]["reason"]) == ("False", reason)
    return by


def test_ks_missing_source_is_artifact_failed_and_waits(tmp_path: Path) -> None:
    ctx, _ = ks_context(tmp_path, MemKube())
    out = asyncio.run(ks_rec.reconcile(ks_obj(), ctx))
    by = check_ks(out, "ArtifactFailed")
    assert by["Ready"]["message"] == f"Source 'OCIRepository/{NS}/web' not found"
    assert by["Reconciling"]["reason"] == "ProgressingWithRetry"
    assert out.waiting and out.requeue_after == 120 and out.add_finalizer
    assert not out.events


def test_ks_source_without_artifact_retries_at_the_dependency_period(tmp_path: Path) -> None:
    src = {"apiVersion": API_VERSION, "kind": "OCIRepository",
           "metadata": {"name": "web", "namespace": NS}, "spec": {}}
    ctx, _ = ks_context(tmp_path, MemKube(src))
    out = asyncio.run(ks_rec.reconcile(ks_obj(), ctx))
    by = check_ks(out, "ArtifactFailed")
    assert by["Ready"]["message"] == (f"Source 'OCIRepository/{NS}/web' has no artifact yet,"
                                      " retrying in 30s")
    assert out.waiting and out.requeue_after == 30


def test_ks_source_kind_not_served_says_so(tmp_path: Path) -> None:
    ctx, _ = ks_context(tmp_path, MemKube(), served=frozenset())
    by = check_ks(asyncio.run(ks_rec.reconcile(ks_obj(), ctx)), "ArtifactFailed")
    assert "not reconciled by this controller" in by["Ready"]["message"]
    ctx, _ = ks_context(tmp_path, MemKube())
    by = check_ks(asyncio.run(ks_rec.reconcile(ks_obj("GitRepository"), ctx)),
                  "ArtifactFailed")
    assert by["Ready"]["message"] == ("source kind GitRepository is not supported"
                                      " (supported: OCIRepository)")


def test_ks_cross_namespace_source_is_denied_and_stalls(tmp_path: Path) -> None:
    ctx, _ = ks_context(tmp_path, MemKube(), no_cross_namespace_refs=True)
    out = asyncio.run(ks_rec.reconcile(ks_obj(source_ns="other"), ctx))
    by = check_ks(out, "AccessDenied")
    assert by["Stalled"]["status"] == "True" and "Reconciling" not in by
    assert out.requeue_after is None and out.failed
    assert "cross-namespace references have been blocked" in by["Ready"]["message"]


def test_ks_dependency_not_ready_waits(tmp_path: Path) -> None:
    kube = MemKube()
    ctx, progress = ks_context(tmp_path, kube)
    kube.put(stored_source(tmp_path, ctx.cache))
    out = asyncio.run(ks_rec.reconcile(ks_obj(dependsOn=[{"name": "infra"}]), ctx))
    by = check_ks(out, "DependencyNotReady")
    assert by["Ready"]["message"] == f"dependency '{NS}/infra' is not ready"
    assert out.waiting and out.requeue_after == 30 and not progress.reports


def test_ks_build_failure_after_reporting_progress(tmp_path: Path) -> None:
    kube = MemKube()
    ctx, progress = ks_context(tmp_path, kube)
    kube.put(stored_source(tmp_path, ctx.cache))
    out = asyncio.run(ks_rec.reconcile(ks_obj(path="./absent"), ctx))
    by = check_ks(out, "BuildFailed")
    assert "spec.path './absent' not found in the artifact" in by["Ready"]["message"]
    assert by["Reconciling"]["reason"] == "ProgressingWithRetry"
    assert out.status["lastAttemptedRevision"] == "v1@sha256:" + "1" * 64
    assert not out.waiting and out.failed and out.requeue_after == 120
    [report] = progress.reports
    assert conditions_of(report)["Reconciling"]["message"] == (
        "Fetching manifests for revision v1@sha256:" + "1" * 64 + " with a timeout of 10m0s")


def test_ks_reads_any_source_kind_through_the_contract(tmp_path: Path) -> None:
    """A new source kind is a SourceKind and an object publishing Flux's artifact status:
    the Kustomization reconciler does not change."""
    kube = MemKube()
    ctx, _ = ks_context(tmp_path, kube)
    git = SourceKind(kind="GitRepository")
    ctx.sources = {**ctx.sources, "GitRepository": git}
    ctx.served = frozenset(ctx.sources)
    kube.put(stored_source(tmp_path, ctx.cache, kind="GitRepository",
                           revision="main@sha1:" + "a" * 40))
    out = asyncio.run(ks_rec.reconcile(ks_obj("GitRepository", path="./absent"), ctx))
    check_ks(out, "BuildFailed")  # got as far as the build: the artifact was read
    assert out.status["lastAttemptedRevision"] == "main@sha1:" + "a" * 40
    assert ("GitRepository", NS, "web") in kube.gets


def test_ks_references_are_its_source_and_dependencies() -> None:
    obj = ks_obj(dependsOn=[{"name": "infra"}, {"name": "crds", "namespace": "base"}])
    assert ks_rec.references(obj) == [("OCIRepository", NS, "web"),
                                      ("Kustomization", NS, "infra"),
                                      ("Kustomization", "base", "crds")]


def test_ks_invalid_spec_stalls(tmp_path: Path) -> None:
    ctx, _ = ks_context(tmp_path, MemKube())
    obj = ks_obj()
    del obj["spec"]["sourceRef"]
    out = asyncio.run(ks_rec.reconcile(obj, ctx))
    by = check_ks(out, "InvalidSpec")
    assert by["Stalled"]["status"] == "True" and out.requeue_after is None
