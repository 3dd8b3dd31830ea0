"""Kustomization reconciliation, with Flux's semantics.

1. Read the source's artifact through the source contract (any source kind:
   :mod:`ocigitops.puller.sources.contract`), then wait for ``dependsOn``
   Kustomizations to be Ready.
2. Extract the source's artifact from the cache (verified on read) into a private
   directory, apply the source's ignore rules, and build ``path`` with the sandboxed real
   kustomize through a generated overlay carrying ``targetNamespace``,
   ``namePrefix``/``nameSuffix``, ``commonMetadata``, ``images``, ``patches`` and
   ``components`` (what Flux writes into the kustomization it builds).
3. Substitute ``postBuild`` variables; label every object with its owner.
4. Apply (dry-run of the whole set first: nothing is written when one object is
   refused), prune what left the inventory (only after a fully successful apply), then
   wait for health when ``wait`` or ``healthChecks`` ask for it.
5. Record inventory, revisions, a bounded history and conditions.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ocigitops.duration import format_duration
from ocigitops.errors import OcigitopsError
from ocigitops.ignore import matcher, read_sourceignore
from ocigitops.puller import conditions as cond
from ocigitops.puller.api.kustomization import (
    HISTORY_LIMIT,
    KIND,
    Kustomization,
    KustomizationStatus,
    parse_kustomization,
)
from ocigitops.puller.api.meta import FINALIZER
from ocigitops.puller.api.schema import ValidationError
from ocigitops.puller.apply import (
    OWNER_NAME_LABEL,
    OWNER_NAMESPACE_LABEL,
    ApplyError,
    ApplyResult,
    ObjRef,
    PruneError,
    apply_set,
    prune,
    wait_ready,
)
from ocigitops.puller.cache import ArtifactCache
from ocigitops.puller.kube import DynamicClient, UnknownKindError
from ocigitops.puller.readbatch import BatchReader
from ocigitops.puller.reconcile import (
    CrossNamespaceRefError,
    DependencyNotReadyError,
    Outcome,
    begin,
    check_dependencies,
    check_namespace,
    prepare,
)
from ocigitops.puller.runtime.reconciler import (
    Deps,
    ObjectKey,
    Progress,
    Reconciler,
    no_progress,
)
from ocigitops.puller.runtime.slots import waiting
from ocigitops.puller.sources.contract import (
    ArtifactNotReadyError,
    SourceArtifact,
    SourceError,
    SourceKind,
    get_artifact,
)
from ocigitops.puller.substitute import substitute_objects
from ocigitops.render import build_kustomization

OVERLAY_DIR = "__ocigitops_overlay__"


@dataclass
class KustomizeContext:
    """The I/O a Kustomization reconcile needs."""

    kube: DynamicClient
    cache: ArtifactCache
    #: The source kinds a sourceRef may name, and those this process reconciles.
    sources: Mapping[str, SourceKind] = field(default_factory=dict)
    served: frozenset[str] = frozenset()
    #: Forbid sourceRef/dependsOn in other namespaces (``--no-cross-namespace-refs``).
    no_cross_namespace_refs: bool = False
    build_timeout: float = 120.0
    #: An undefined postBuild variable without a default fails the build (Flux 2.9's
    #: default, StrictPostBuildSubstitutions); ``--no-strict-substitution`` turns it off.
    strict_substitution: bool = True
    #: How soon a Kustomization waiting for a source artifact or a dependency looks
    #: again (Flux's ``--requeue-dependency``).
    requeue_dependency: float = 30.0
    clock: Callable[[], float] = time.time
    #: Writes the status while a revision is being applied (Reconciling=True).
    progress: Progress = no_progress
    #: ``--default-service-account``: impersonated when ``serviceAccountName`` is empty.
    default_service_account: str | None = None
    #: Health-check reads (coalesced across Kustomizations; None: one GET per object).
    reader: BatchReader | None = None

    @classmethod
    def from_deps(cls, deps: Deps) -> KustomizeContext:
        """The context the runtime builds for this kind."""
        o = deps.options
        return cls(kube=deps.kube, cache=deps.cache, sources=deps.sources,
                   served=deps.served, no_cross_namespace_refs=o.no_cross_namespace_refs,
                   strict_substitution=o.strict_substitution,
                   requeue_dependency=o.requeue_dependency, progress=deps.progress,
                   default_service_account=o.default_service_account,
                   reader=BatchReader(deps.kube))


#: A dependency is not ready yet: retry later, not a failure.
NotReadyError = DependencyNotReadyError
#: A reference to another namespace while ``--no-cross-namespace-refs`` is set.
AccessDeniedError = CrossNamespaceRefError


def _overlay(ks: Kustomization, tree: Path) -> Path:
    """Write the wrapping kustomization beside ``tree`` and return its directory.

    Beside, not inside: kustomize refuses a root that contains the kustomization
    referencing it (a cycle).
    """
    spec = ks.spec
    base = (tree / (spec.path or ".")).resolve()
    if not base.is_relative_to(tree.resolve()):
        raise OcigitopsError(f"spec.path {spec.path!r} leaves the artifact")
    if not base.is_dir():
        raise OcigitopsError(f"spec.path {spec.path!r} not found in the artifact")
    if not any((base / n).is_file() for n in
               ("kustomization.yaml", "kustomization.yml", "Kustomization")):
        # Flux generates one listing every manifest (kustomize create --autodetect).
        files = sorted(p.relative_to(base).as_posix() for p in base.rglob("*")
                       if p.suffix in (".yaml", ".yml", ".json") and p.is_file())
        (base / "kustomization.yaml").write_text(yaml.safe_dump(
            {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
             "resources": files}))
    overlay = tree.parent / OVERLAY_DIR
    overlay.mkdir()
    rel = Path("..") / tree.name / base.relative_to(tree.resolve())
    doc: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1",
                           "kind": "Kustomization", "resources": [rel.as_posix()]}
    if spec.target_namespace:
        doc["namespace"] = spec.target_namespace
    if spec.name_prefix:
        doc["namePrefix"] = spec.name_prefix
    if spec.name_suffix:
        doc["nameSuffix"] = spec.name_suffix
    if spec.common_metadata is not None:
        if spec.common_metadata.labels:
            doc["labels"] = [{"pairs": dict(spec.common_metadata.labels),
                              "includeSelectors": False}]
        if spec.common_metadata.annotations:
            doc["commonAnnotations"] = dict(spec.common_metadata.annotations)
    if spec.images:
        doc["images"] = [{k: v for k, v in {"name": i.name, "newName": i.new_name,
                                            "newTag": i.new_tag, "digest": i.digest}.items()
                          if v} for i in spec.images]
    if spec.patches:
        patches = []
        for p in spec.patches:
            item: dict[str, Any] = {"patch": p.patch}
            if p.target is not None:
                item["target"] = {k: v for k, v in {
                    "group": p.target.group, "version": p.target.version,
                    "kind": p.target.kind, "name": p.target.name,
                    "namespace": p.target.namespace, "labelSelector": p.target.label_selector,
                    "annotationSelector": p.target.annotation_selector}.items() if v}
            patches.append(item)
        doc["patches"] = patches
    if spec.components:
        doc["components"] = [(rel / c).as_posix() for c in spec.components]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return overlay


def _apply_ignore(tree: Path, patterns: list[str]) -> None:
    excluded = matcher(patterns)
    if excluded is None:
        return
    for p in sorted(tree.rglob("*"), reverse=True):
        rel = p.relative_to(tree).as_posix()
        if excluded(rel, p.is_dir()):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


async def _variables(ctx: KustomizeContext, ks: Kustomization) -> dict[str, str]:
    pb = ks.spec.post_build
    if pb is None:
        return {}
    out: dict[str, str] = {}
    ns = ks.metadata.namespace
    for ref in pb.substitute_from:
        if ref.kind == "Secret":
            data = await ctx.kube.secret_data(ns, ref.name)
            values = {k: v.decode(errors="replace") for k, v in (data or {}).items()}
            found = data is not None
        else:
            cm = await ctx.kube.get("v1", "ConfigMap", ref.name, ns)
            values = dict((cm or {}).get("data") or {})
            found = cm is not None
        if not found and not ref.optional:
            raise OcigitopsError(f"postBuild substituteFrom {ref.kind} {ns}/{ref.name} not"
                                 " found")
        out.update(values)
    out.update(pb.substitute or {})
    return out


def _checksum(objs: list[dict[str, Any]]) -> str:
    return "sha256:" + hashlib.sha256(
        json.dumps(objs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _build_sync(ctx: KustomizeContext, ks: Kustomization, source: SourceArtifact,
                ) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="ocigitops-build-") as tmp:
        tree = Path(tmp) / "artifact"
        # The same bound as the kustomize build: a thread cannot be cancelled, so the
        # extraction stops itself.
        source.extract(tree, deadline=time.monotonic() + ctx.build_timeout)
        ignore = source.ignore
        patterns = read_sourceignore(tree) + ([ignore] if ignore else [])
        _apply_ignore(tree, patterns)
        overlay = _overlay(ks, tree)
        # tmp is ours alone and extraction refuses links: build in place, not on a copy.
        text = build_kustomization(overlay, root=tree.parent, timeout=ctx.build_timeout,
                                   private=True)
    return [d for d in yaml.safe_load_all(text) if d]


async def build(ctx: KustomizeContext, ks: Kustomization, source: SourceArtifact,
                ) -> list[dict[str, Any]]:
    """Extract the source's artifact, build the overlay, substitute: the objects to
    apply."""
    # Extraction, the kustomize process and YAML parsing run on a thread: on the event
    # loop they would stall every other reconcile for the length of each build.
    objs = await asyncio.to_thread(_build_sync, ctx, ks, source)
    pb = ks.spec.post_build
    if pb is not None:
        # As Flux: no postBuild, no substitution (a literal ${X} a user ships stays); with
        # postBuild, WithVariables substitutes only when some variable is defined.
        variables = await _variables(ctx, ks)
        if variables or pb.substitute_strategy == "Always":
            objs = substitute_objects(objs, variables, strict=ctx.strict_substitution)
    for obj in objs:
        md = obj.setdefault("metadata", {})
        labels = md.setdefault("labels", {})
        labels[OWNER_NAME_LABEL] = ks.metadata.name
        labels[OWNER_NAMESPACE_LABEL] = ks.metadata.namespace
    return objs


def _impersonation(ks: Kustomization, ctx: KustomizeContext) -> str | None:
    """The user applies run as: ``serviceAccountName``, else ``--default-service-account``,
    a service account of the Kustomization's namespace (None: the controller itself)."""
    sa = ks.spec.service_account_name or ctx.default_service_account
    return f"system:serviceaccount:{ks.metadata.namespace}:{sa}" if sa else None


async def finalize(ctx: KustomizeContext, obj: Mapping[str, Any]) -> Outcome:
    """Handle deletion: garbage-collect per ``deletionPolicy`` and release the finalizer."""
    status = begin(obj, KustomizationStatus).status
    try:
        ks = parse_kustomization(obj)
    except (ValidationError, ValueError):
        return Outcome(status, None, remove_finalizer=True)
    policy = ks.spec.deletion_policy or "MirrorPrune"
    # As Flux: MirrorPrune follows spec.prune; Delete and WaitForTermination delete
    # whatever prune says; Orphan never deletes.
    delete = policy in ("Delete", "WaitForTermination") or (
        policy == "MirrorPrune" and ks.spec.prune)
    if delete and not ks.spec.suspend:
        old = [ObjRef.from_inventory(e) for e in
               ((status.get("inventory") or {}).get("entries") or [])]
        generation = int((obj.get("metadata") or {}).get("generation") or 0)
        try:
            await prune(ctx.kube, old, [], owner=(ks.metadata.namespace, ks.metadata.name),
                        impersonate=_impersonation(ks, ctx))
        except PruneError as e:
            # Keep the finalizer and what is left: releasing it would orphan those objects.
            status["inventory"] = {"entries": [r.inventory_entry() for r in e.refs]}
            conditions = [dict(c) for c in status.get("conditions") or []]
            cond.mark_failed(conditions, cond.PRUNE_FAILED, str(e), generation)
            status["conditions"] = conditions
            return Outcome(status, ks.spec.retry_interval_seconds,
                           [("Warning", cond.PRUNE_FAILED, str(e))], failed=True)
        if policy == "WaitForTermination":
            left = [r for r in old if await _still_there(ctx, r, _impersonation(ks, ctx))]
            if left:
                # The finalizer stays until every object is gone (finalizers of their own
                # may hold them); checked again shortly.
                msg = (f"waiting for {len(left)} object(s) to terminate: "
                       + ", ".join(str(r) for r in left[:3]))
                conditions = [dict(c) for c in status.get("conditions") or []]
                cond.mark_reconciling(conditions, cond.WAITING_FOR_TERMINATION, msg, generation)
                status["conditions"] = conditions
                status["inventory"] = {"entries": [r.inventory_entry() for r in left]}
                return Outcome(status, TERMINATION_POLL)
    return Outcome(status, None, remove_finalizer=True)


#: How often a Kustomization deleted with ``WaitForTermination`` checks its objects.
TERMINATION_POLL = 2.0


async def _still_there(ctx: KustomizeContext, ref: ObjRef, impersonate: str | None) -> bool:
    try:
        live = await ctx.kube.get(ref.api_version, ref.kind, ref.name, ref.namespace or None,
                                  impersonate=impersonate)
    except UnknownKindError:
        return False
    return live is not None


async def reconcile(obj: Mapping[str, Any], ctx: KustomizeContext) -> Outcome:
    """Reconcile one Kustomization object (a dict from the API server)."""
    md = obj.get("metadata") or {}
    if md.get("deletionTimestamp"):
        return await finalize(ctx, obj)
    prep = prepare(obj, KustomizationStatus, parse_kustomization)
    if isinstance(prep, Outcome):
        return prep
    ks, start = prep.obj, prep.start
    generation, status, conditions = start.generation, start.status, start.conditions
    add_finalizer = FINALIZER not in (md.get("finalizers") or [])
    interval = ks.spec.interval_seconds
    retry = ks.spec.retry_interval_seconds or interval
    started = ctx.clock()

    # Flux's order: the source first, then dependsOn.
    try:
        source = await _source(ctx, ks)
    except AccessDeniedError as e:
        # Only an edit of the object (or of the controller's flags) can fix this.
        cond.mark_failed(conditions, cond.ACCESS_DENIED, str(e), generation, stalled=True)
        return Outcome(status, None, [("Warning", cond.ACCESS_DENIED, str(e))], failed=True,
                       add_finalizer=add_finalizer)
    except ArtifactNotReadyError as e:
        msg = f"{e}, retrying in {format_duration(ctx.requeue_dependency)}"
        cond.mark_failed(conditions, cond.ARTIFACT_FAILED, msg, generation)
        return Outcome(status, ctx.requeue_dependency, waiting=True,
                       add_finalizer=add_finalizer)
    except SourceError as e:
        cond.mark_failed(conditions, cond.ARTIFACT_FAILED, str(e), generation)
        return Outcome(status, retry, waiting=True, add_finalizer=add_finalizer)
    try:
        await _dependencies(ctx, ks)
    except AccessDeniedError as e:
        cond.mark_failed(conditions, cond.ACCESS_DENIED, str(e), generation, stalled=True)
        return Outcome(status, None, [("Warning", cond.ACCESS_DENIED, str(e))], failed=True,
                       add_finalizer=add_finalizer)
    except NotReadyError as e:
        cond.mark_failed(conditions, cond.DEPENDENCY_NOT_READY, str(e), generation)
        return Outcome(status, ctx.requeue_dependency, waiting=True,
                       add_finalizer=add_finalizer)

    revision = source.revision
    status["lastAttemptedRevision"] = revision
    timeout = ks.spec.timeout_seconds or interval
    # Work in progress is written before the build and apply when there is new work (a
    # new revision, a new generation, or recovering from a failure), as
    # kustomize-controller does; the periodic re-apply of a Ready revision stays quiet.
    report = (status.get("lastAppliedRevision") != revision
              or status.get("observedGeneration") != generation
              or not cond.is_true(conditions, cond.READY))
    if report:
        cond.mark_reconciling(conditions, cond.PROGRESSING,
                              f"Fetching manifests for revision {revision} with a timeout of"
                              f" {format_duration(timeout)}", generation)
        await ctx.progress(obj, status)
    try:
        objs = await build(ctx, ks, source)
    except OcigitopsError as e:
        msg = f"build of revision {revision} failed: {e}"
        cond.mark_failed(conditions, cond.BUILD_FAILED, msg, generation)
        status["observedGeneration"] = generation
        return Outcome(status, retry, [("Warning", cond.BUILD_FAILED, msg)], failed=True,
                       add_finalizer=add_finalizer)
    impersonate = _impersonation(ks, ctx)
    old = [ObjRef.from_inventory(e) for e in
           ((status.get("inventory") or {}).get("entries") or [])]
    # The failure's reason comes from the step that failed, not from words in its message
    # (an object or namespace named "ready-..." or "health..." made an apply refusal look
    # like a failed health check).
    step = "apply"
    try:
        result: ApplyResult = await apply_set(ctx.kube, objs, impersonate=impersonate,
                                              force=ks.spec.force, wait_timeout=timeout)
        # The new inventory is recorded as soon as the apply succeeded, so a failure in
        # prune or health still knows what this revision owns.
        status["inventory"] = {"entries": [r.inventory_entry() for r in result.inventory]}
        if ks.spec.prune:
            step = "prune"
            try:
                await prune(ctx.kube, old, result.inventory,
                            owner=(ks.metadata.namespace, ks.metadata.name),
                            impersonate=impersonate, result=result)
            except PruneError as e:
                # What could not be deleted is still ours: kept in the inventory, it is
                # pruned again next time instead of being orphaned.
                status["inventory"]["entries"] += [r.inventory_entry() for r in e.refs]
                raise
        checks = list(result.inventory) if ks.spec.wait else [
            ObjRef(g, c.kind, c.namespace or ks.metadata.namespace, c.name, v)
            for c in ks.spec.health_checks
            for g, v in [tuple(c.api_version.rpartition("/")[::2]) if c.api_version
                         else ("", "")]]
        if checks:
            step = "health"
            msg = (f"Running health checks for revision {revision} with a timeout of"
                   f" {format_duration(timeout)}")
            healthy = cond.find(conditions, cond.HEALTHY)
            if report or healthy is None or healthy.get("status") != cond.TRUE:
                cond.set_condition(conditions, cond.HEALTHY, cond.UNKNOWN, cond.PROGRESSING,
                                   msg, generation)
                cond.mark_reconciling(conditions, cond.PROGRESSING, msg, generation)
                await ctx.progress(obj, status)
            health_start = ctx.clock()
            # Only waiting from here: the worker slot goes to the next object meanwhile,
            # and the reads of every waiting Kustomization are coalesced.
            async with waiting():
                await wait_ready(ctx.kube, checks, seconds=timeout, impersonate=impersonate,
                                 reader=ctx.reader, known=result.live)
            cond.set_condition(conditions, cond.HEALTHY, cond.TRUE, cond.SUCCEEDED,
                               f"Health check passed in {ctx.clock() - health_start:.3f}s",
                               generation)
        else:
            cond.remove(conditions, cond.HEALTHY)
    except (ApplyError, OcigitopsError) as e:
        reason = {"health": cond.HEALTH_CHECK_FAILED, "prune": cond.PRUNE_FAILED}.get(
            step, cond.RECONCILIATION_FAILED)
        msg = f"{e}"
        if step == "health":
            cond.set_condition(conditions, cond.HEALTHY, cond.FALSE, reason, msg, generation)
        cond.mark_failed(conditions, reason, msg, generation)
        status["observedGeneration"] = generation
        _record_history(status, _checksum(objs), revision, ctx.clock() - started, reason)
        return Outcome(status, retry, [("Warning", reason, f"revision {revision}: {msg}")],
                       failed=True, add_finalizer=add_finalizer)
    first = status.get("lastAppliedRevision") != revision
    status["lastAppliedRevision"] = revision
    status["observedGeneration"] = generation
    _record_history(status, _checksum(objs), revision, ctx.clock() - started)
    cond.mark_ready(conditions, cond.RECONCILIATION_SUCCEEDED,
                    f"Applied revision: {revision}", generation)
    changed = first or any(a in result.changes for a in ("created", "configured", "deleted"))
    events = [("Normal", cond.RECONCILIATION_SUCCEEDED,
               f"applied revision {revision}: {result.summary()}")] if changed else []
    return Outcome(status, interval, events, changed=changed, add_finalizer=add_finalizer)


async def _source(ctx: KustomizeContext, ks: Kustomization) -> SourceArtifact:
    ref = ks.spec.source_ref
    src_ns = ref.namespace or ks.metadata.namespace
    check_namespace(ref.kind, src_ns, ref.name, ks.metadata.namespace,
                    no_cross_namespace_refs=ctx.no_cross_namespace_refs)
    return await get_artifact(ctx.kube, ctx.cache, ctx.sources, ctx.served, ref.kind,
                              src_ns, ref.name)


async def _dependencies(ctx: KustomizeContext, ks: Kustomization) -> None:
    await check_dependencies(ctx.kube, KIND, ks.metadata.namespace, ks.spec.depends_on,
                             no_cross_namespace_refs=ctx.no_cross_namespace_refs)


def references(obj: Mapping[str, Any]) -> list[ObjectKey]:
    """What wakes a Kustomization: its source and its ``dependsOn``."""
    spec = obj.get("spec") or {}
    ns = (obj.get("metadata") or {}).get("namespace") or ""
    out: list[ObjectKey] = []
    ref = spec.get("sourceRef")
    if isinstance(ref, Mapping):
        out.append((str(ref.get("kind")), ref.get("namespace") or ns, str(ref.get("name"))))
    for dep in spec.get("dependsOn") or []:
        if isinstance(dep, Mapping):
            out.append((KIND, dep.get("namespace") or ns, str(dep.get("name"))))
    return out


def _record_history(status: dict[str, Any], digest: str, revision: str,
                    duration: float, reason: str = "ReconciliationSucceeded") -> None:
    """Upsert the entry of this set of objects (by checksum), newest first; failed
    attempts are recorded too, with the reason they failed, as Flux does."""
    now = cond.now_iso()
    history: list[dict[str, Any]] = [dict(h) for h in status.get("history") or []]
    if history and history[0].get("digest") == digest:
        h = history[0]
        h["lastReconciled"] = now
        h["totalReconciliations"] = int(h.get("totalReconciliations", 0)) + 1
        h["lastReconciledStatus"] = reason
        h["lastReconciledDuration"] = f"{duration:.3f}s"
    else:
        history.insert(0, {"digest": digest, "firstReconciled": now, "lastReconciled": now,
                           "totalReconciliations": 1,
                           "lastReconciledStatus": reason,
                           "lastReconciledDuration": f"{duration:.3f}s",
                           "metadata": {"revision": revision}})
    status["history"] = history[:HISTORY_LIMIT]


#: Kustomization's place in the controller runtime.
RECONCILER: Reconciler[KustomizeContext] = Reconciler(
    name="kustomization", kind=KIND, plural="kustomizations",
    status_type=KustomizationStatus, context=KustomizeContext.from_deps,
    reconcile=reconcile, finalizer=FINALIZER, references=references,
    aliases=("kustomizations", "ks"))
