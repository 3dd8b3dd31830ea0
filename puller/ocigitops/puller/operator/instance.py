"""Instance reconciliation: install, upgrade and remove ocigitops from a distribution.

1. Refuse what is not implemented (``UnsupportedField``, Stalled) and a second Instance
   in the cluster (``DuplicateInstance``: the oldest one wins).
2. List the artifact's tags and choose the version (:func:`manifests.choose_version`: the
   highest in range, never lower than the installed one while that is in range).
3. With ``distribution.verify``, verify the chosen digest BEFORE anything is fetched; a
   refused digest applies nothing and the status names the failed authorities.
4. Fetch the manifest and layer by that digest (hashed as they arrive), extract with the
   default bounds, build with the sandboxed kustomize, apply the Instance's changes
   (:func:`manifests.customize`), then ``kustomize.patches``.
5. Server-side apply (dry-run of the whole set first), prune what the previous revision
   had and this one has not (never CRDs: only ``uninstall.removeCRDs`` on deletion
   removes those), wait for health when ``wait``; inventory, revisions, components and
   verification in the status.
6. On deletion: the sync objects are released (finalizers dropped, so the cluster's
   configuration stays), the controller's objects are deleted, CRDs and Namespaces are
   kept unless ``uninstall.removeCRDs``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ocigitops.artifact import parse_manifest
from ocigitops.auth import CredentialResolver, DockerConfig
from ocigitops.errors import OcigitopsError
from ocigitops.extract import DEFAULT_LIMITS, extract_to
from ocigitops.puller import conditions as cond
from ocigitops.puller import reconcilers
from ocigitops.puller.api.instance import (
    KIND,
    PLURAL,
    Instance,
    InstanceStatus,
    parse_instance,
    unsupported_fields,
)
from ocigitops.puller.api.meta import API_VERSION, FINALIZER, GROUP
from ocigitops.puller.api.verification import build_signature_policy, referenced_secrets
from ocigitops.puller.apply import ApplyError, ObjRef, apply_set, prune, wait_ready
from ocigitops.puller.kube import DynamicClient, UnknownKindError
from ocigitops.puller.operator import manifests
from ocigitops.puller.reconcile import Outcome, begin, prepare
from ocigitops.puller.runtime.reconciler import Deps, Progress, Reconciler, no_progress
from ocigitops.puller.sources.oci import _failures, _verification_status, revision_of
from ocigitops.reference import parse_reference
from ocigitops.registry import RegistryClient
from ocigitops.render import build_kustomization
from ocigitops.verifier.errors import PolicyError
from ocigitops.verifier.verify import verify_artifact

UNSUPPORTED_FIELD = "UnsupportedField"
DUPLICATE_INSTANCE = "DuplicateInstance"
NO_VERSION = "NoMatchingVersion"
#: How often a refused duplicate looks again (the other one may be deleted).
DUPLICATE_RETRY = 30.0
_SYNC_KINDS = {"OCIRepository", "GitRepository", "Kustomization"}
_KEEP_ON_DELETE = {("apiextensions.k8s.io", "CustomResourceDefinition"), ("", "Namespace")}


@dataclass
class InstanceContext:
    """The I/O an Instance reconcile needs."""

    kube: DynamicClient
    registry: Callable[..., RegistryClient] = RegistryClient
    build_timeout: float = 120.0
    progress: Progress = no_progress

    @classmethod
    def from_deps(cls, deps: Deps) -> InstanceContext:
        """The context the runtime builds for this kind."""
        return cls(kube=deps.kube, progress=deps.progress)


class RefusedError(OcigitopsError):
    """Only an edit can fix this (Stalled)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def _credentials(ctx: InstanceContext, inst: Instance) -> CredentialResolver:
    configs: list[DockerConfig] = []
    name = inst.spec.distribution.pull_secret
    if name:
        ns = inst.metadata.namespace
        data = await ctx.kube.secret_data(ns, name)
        if data is None:
            raise OcigitopsError(f"Secret {ns}/{name} not found")
        configs.append(DockerConfig.from_secret_data(data, source=f"Secret {ns}/{name}"))
    return CredentialResolver(configs=configs, use_docker_config=False)


async def _winner(ctx: InstanceContext, inst: Instance, obj: Mapping[str, Any]) -> str | None:
    """The other Instance that owns the cluster (the oldest; ties by namespace/name), or
    None when this one does."""
    def key(o: Mapping[str, Any]) -> tuple[str, str, str]:
        md = o.get("metadata") or {}
        return (str(md.get("creationTimestamp") or ""), str(md.get("namespace") or ""),
                str(md.get("name") or ""))

    alive = [o for o in await ctx.kube.list(API_VERSION, KIND, None)
             if not (o.get("metadata") or {}).get("deletionTimestamp")]
    mine = (inst.metadata.namespace, inst.metadata.name)
    if not alive:
        return None
    first = min(alive, key=key)
    fmd = first.get("metadata") or {}
    if (fmd.get("namespace"), fmd.get("name")) == mine:
        return None
    return f"{fmd.get('namespace')}/{fmd.get('name')}"


def _build_sync(tree: Path, inst: Instance, timeout: float) -> list[dict[str, Any]]:
    text = build_kustomization(tree, root=tree, timeout=timeout)
    objs = manifests.customize([d for d in yaml.safe_load_all(text) if d], inst)
    patches = inst.spec.kustomize.patches if inst.spec.kustomize else ()
    if patches:
        over = tree.parent / "instance-patches"
        over.mkdir()
        (over / "resources.yaml").write_text(yaml.safe_dump_all(objs, sort_keys=False))
        items = []
        for p in patches:
            item: dict[str, Any] = {"patch": p.patch}
            if p.target is not None:
                item["target"] = {k: v for k, v in {
                    "group": p.target.group, "version": p.target.version,
                    "kind": p.target.kind, "name": p.target.name,
                    "namespace": p.target.namespace, "labelSelector": p.target.label_selector,
                    "annotationSelector": p.target.annotation_selector}.items() if v}
            items.append(item)
        (over / "kustomization.yaml").write_text(yaml.safe_dump(
            {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
             "resources": ["resources.yaml"], "patches": items}, sort_keys=False))
        text = build_kustomization(over, root=over, timeout=timeout)
        objs = [d for d in yaml.safe_load_all(text) if d]
    return objs


async def finalize(ctx: InstanceContext, obj: Mapping[str, Any]) -> Outcome:
    """Deletion: release the sync objects, delete the controller's objects (CRDs and
    Namespaces kept unless ``uninstall.removeCRDs``), then drop the finalizer."""
    status = begin(obj, InstanceStatus).status
    md = obj.get("metadata") or {}
    if FINALIZER not in (md.get("finalizers") or []):
        return Outcome(status, None)
    spec = obj.get("spec") or {}
    remove_crds = bool((spec.get("uninstall") or {}).get("removeCRDs"))
    refs = [ObjRef.from_inventory(e) for e in
            ((status.get("inventory") or {}).get("entries") or [])]
    for ref in refs:
        if ref.group == GROUP and ref.kind in _SYNC_KINDS:
            # Released, not pruned: the cluster's configuration the Kustomization applied
            # stays, and no finalizer waits for a controller that is going away.
            try:
                await ctx.kube.merge_patch(ref.api_version, ref.kind, ref.name, ref.namespace,
                                           {"metadata": {"finalizers": None},
                                            "spec": {"suspend": True}})
            except (UnknownKindError, OcigitopsError):
                continue
    gone = [r for r in refs if remove_crds or (r.group, r.kind) not in _KEEP_ON_DELETE]
    gone = [r for r in gone if (r.group, r.kind) != ("", "Namespace")]
    try:
        await prune(ctx.kube, gone, [])
    except OcigitopsError as e:
        conditions = [dict(c) for c in status.get("conditions") or []]
        generation = int(md.get("generation") or 0)
        cond.mark_failed(conditions, cond.PRUNE_FAILED, str(e), generation)
        status["conditions"] = conditions
        return Outcome(status, 10.0, [("Warning", cond.PRUNE_FAILED, str(e))], failed=True)
    return Outcome(status, None, remove_finalizer=True)


async def reconcile(obj: Mapping[str, Any], ctx: InstanceContext) -> Outcome:
    """Reconcile one Instance object (a dict from the API server)."""
    md = obj.get("metadata") or {}
    if md.get("deletionTimestamp"):
        return await finalize(ctx, obj)
    prep = prepare(obj, InstanceStatus, parse_instance)
    if isinstance(prep, Outcome):
        return prep
    inst, start = prep.obj, prep.start
    generation, status, conditions = start.generation, start.status, start.conditions
    interval = inst.spec.interval_seconds
    try:
        bad = unsupported_fields(inst.spec)
        if bad:
            raise RefusedError(UNSUPPORTED_FIELD, f"not supported: {', '.join(bad)}; nothing"
                                                  " was installed or changed")
        try:
            reconcilers.select(inst.spec.components)
        except OcigitopsError as e:
            raise RefusedError(cond.INVALID_SPEC, f"spec.components: {e}") from None
        other = await _winner(ctx, inst, obj)
        if other is not None:
            msg = (f"Instance {other} already manages this cluster: only one Instance per"
                   " cluster; delete one of them")
            cond.mark_failed(conditions, DUPLICATE_INSTANCE, msg, generation, stalled=True)
            status["observedGeneration"] = generation
            return Outcome(status, DUPLICATE_RETRY, [("Warning", DUPLICATE_INSTANCE, msg)],
                           failed=True)
    except RefusedError as e:
        cond.mark_failed(conditions, e.reason, str(e), generation, stalled=True)
        status["observedGeneration"] = generation
        return Outcome(status, None, [("Warning", e.reason, str(e))], failed=True)
    add = FINALIZER not in (md.get("finalizers") or [])
    try:
        out = await _reconcile(obj, inst, ctx, status, conditions, generation)
    except PolicyError as e:
        msg = f"distribution.verify: {e}"
        cond.mark_failed(conditions, cond.VERIFICATION_ERROR, msg, generation)
        out = Outcome(status, interval, [("Warning", cond.VERIFICATION_ERROR, msg)],
                      failed=True)
    except manifests.NoVersionError as e:
        cond.mark_failed(conditions, NO_VERSION, str(e), generation)
        out = Outcome(status, interval, [("Warning", NO_VERSION, str(e))], failed=True)
    except OcigitopsError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        reason = cond.RECONCILIATION_FAILED
        cond.mark_failed(conditions, reason, msg, generation)
        out = Outcome(status, min(interval, 60.0), [("Warning", reason, msg)], failed=True)
    status["observedGeneration"] = generation
    out.add_finalizer = add
    return out


async def _reconcile(obj: Mapping[str, Any], inst: Instance, ctx: InstanceContext,
                     status: dict[str, Any], conditions: list[dict[str, Any]],
                     generation: int) -> Outcome:
    dist = inst.spec.distribution
    interval = inst.spec.interval_seconds
    base = parse_reference(dist.artifact, require_scheme=True)
    creds = await _credentials(ctx, inst)
    async with ctx.registry(creds, insecure=dist.insecure, timeout=60.0,
                            deadline=300.0) as client:
        tags = await client.list_tags(base)
        choice = manifests.choose_version(
            tags, dist.version, manifests.tag_of(status.get("lastAppliedRevision")))
        desc = await client.head_manifest(base.with_tag(choice.tag))
        digest = desc.digest
        revision = revision_of(choice.tag, digest)
        status["lastAttemptedRevision"] = revision
        verified = dist.verify is None or (
            (status.get("verification") or {}).get("digest") == digest)
        if (status.get("lastAppliedRevision") == revision
                and status.get("observedGeneration") == generation and verified
                and cond.is_true(conditions, cond.READY)):
            msg = f"Applied revision: {revision}" + (f" ({choice.note})" if choice.note else "")
            cond.mark_ready(conditions, cond.RECONCILIATION_SUCCEEDED, msg, generation)
            return Outcome(status, interval)
        cond.mark_reconciling(conditions, cond.PROGRESSING,
                              f"installing revision {revision}", generation)
        await ctx.progress(obj, status)
        pinned = base.with_tag(choice.tag).with_digest(digest)
        m = None
        if dist.verify is not None:
            secrets: dict[str, dict[str, bytes]] = {}
            for name in referenced_secrets(dist.verify):
                data = await ctx.kube.secret_data(inst.metadata.namespace, name)
                if data is None:
                    raise PolicyError(f"verification Secret {inst.metadata.namespace}/{name}"
                                      " not found")
                secrets[name] = data
            policy = build_signature_policy(dist.verify, secrets)
            outcome = await verify_artifact(client, pinned, policy)
            status["verification"] = _verification_status(outcome.digest, outcome.result)
            if not outcome.passed or outcome.digest != digest:
                why = (_failures(policy, outcome.result) if not outcome.passed else
                       f"verified digest {outcome.digest} is not the resolved {digest}")
                msg = f"verification of revision {revision} failed, nothing applied: {why}"
                cond.mark_failed(conditions, cond.VERIFICATION_ERROR, msg, generation)
                return Outcome(status, interval, [("Warning", cond.VERIFICATION_ERROR, msg)],
                               failed=True)
            m = outcome.manifest
        else:
            status.pop("verification", None)
        if m is None:
            m = await client.get_manifest(pinned)
        if m.digest != digest:
            raise OcigitopsError(f"manifest {m.digest} is not the resolved {digest}")
        manifest = parse_manifest(m.data, m.media_type)
        layer = manifest.layers[0] if manifest.layers else manifest.select_layer()
        DEFAULT_LIMITS.check_layer_size(layer.size, f"layer {layer.digest} of {revision}")
        with tempfile.TemporaryDirectory(prefix="ocigitops-instance-") as tmp:
            tree = Path(tmp) / "dist"
            await extract_to(client.stream_blob(pinned, layer), tree,
                             deadline=time.monotonic() + ctx.build_timeout)
            objs = await asyncio.to_thread(_build_sync, tree, inst, ctx.build_timeout)
    return await _apply(obj, inst, ctx, status, conditions, generation, revision, objs,
                        choice.note)


async def _apply(obj: Mapping[str, Any], inst: Instance, ctx: InstanceContext,
                 status: dict[str, Any], conditions: list[dict[str, Any]], generation: int,
                 revision: str, objs: list[dict[str, Any]], note: str) -> Outcome:
    sync = manifests.sync_objects(inst)
    everything = objs + sync
    manifests.label_owned(everything, inst)
    timeout = inst.spec.timeout_seconds
    old = [ObjRef.from_inventory(e) for e in
           ((status.get("inventory") or {}).get("entries") or [])]
    result = await apply_set(ctx.kube, everything, force=True, wait_timeout=timeout)
    status["inventory"] = {"entries": [r.inventory_entry() for r in result.inventory]}
    # CRDs never leave with an upgrade: deleting one deletes every object of its kind.
    kept = [r for r in old if r.kind == "CustomResourceDefinition"
            and r.id not in {n.id for n in result.inventory}]
    await prune(ctx.kube, [r for r in old if r not in kept], result.inventory, result=result)
    status["inventory"]["entries"] += [r.inventory_entry() for r in kept]
    sync_refs = {ObjRef.of(o).id for o in sync}
    if inst.spec.wait:
        msg = f"waiting for the objects of revision {revision} to become ready"
        cond.mark_reconciling(conditions, cond.PROGRESSING, msg, generation)
        await ctx.progress(obj, status)
        try:
            await wait_ready(ctx.kube, [r for r in result.inventory if r.id not in sync_refs],
                             seconds=timeout)
        except ApplyError as e:
            cond.mark_failed(conditions, cond.HEALTH_CHECK_FAILED, str(e), generation)
            return Outcome(status, 30.0, [("Warning", cond.HEALTH_CHECK_FAILED, str(e))],
                           failed=True)
    first = status.get("lastAppliedRevision") != revision
    status["lastAppliedRevision"] = revision
    status["components"] = manifests.components_status(objs, inst.spec.components,
                                                       reconcilers.names())
    msg = f"Applied revision: {revision}" + (f" ({note})" if note else "")
    cond.mark_ready(conditions, cond.RECONCILIATION_SUCCEEDED, msg, generation)
    events = [("Normal", cond.RECONCILIATION_SUCCEEDED,
               f"applied revision {revision}: {result.summary()}")] if first else []
    return Outcome(status, inst.spec.interval_seconds, events, changed=first)


#: Instance's place in the (operator's) runtime.
RECONCILER: Reconciler[InstanceContext] = Reconciler(
    name="instance", kind=KIND, plural=PLURAL, status_type=InstanceStatus,
    context=InstanceContext.from_deps, reconcile=reconcile, finalizer=FINALIZER)

#: The kinds ``ocigitops operator run`` reconciles.
OPERATOR_KINDS: tuple[Reconciler[Any], ...] = (RECONCILER,)

__all__ = ["OPERATOR_KINDS", "RECONCILER", "InstanceContext", "finalize", "reconcile"]
