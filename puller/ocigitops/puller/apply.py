"""Apply a set of manifests like Flux's kustomize-controller, then prune and check health.

Order of work (docs/architecture.md decision 7):
1. Validate every object (apiVersion, kind, metadata.name) and resolve its kind. A kind that
   is neither served nor defined by a CRD in the same set fails the whole set.
2. Server-side dry-run of every object whose kind is served now. Any rejection fails the
   set before the first write: one bad object means nothing of that revision is applied.
3. Stage 1 (CRDs, Namespaces) is applied and waited for (Established, Active); objects of
   kinds those CRDs define, and objects in Namespaces the set creates, are dry-run then
   (they cannot be earlier), and everything else is applied.
4. Only objects whose dry-run result differs from the live object are written.
5. Pruning (by the caller, after a fully successful apply) deletes what left the
   inventory, never objects annotated ``kustomize.ocigitops.dev/prune: disabled``.

Per-object annotations (Flux's, with our prefix): ``kustomize.ocigitops.dev/ssa``
(``Ignore``: never touched; ``IfNotPresent``: created only; ``Merge``: applied without
force) and ``kustomize.ocigitops.dev/force: enabled`` (recreate when an immutable field
changes).
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ocigitops.errors import OcigitopsError
from ocigitops.puller.kube import DynamicClient, KubeError, UnknownKindError, split_api_version

PREFIX = "kustomize.ocigitops.dev"
PRUNE_ANNOTATION = f"{PREFIX}/prune"
SSA_ANNOTATION = f"{PREFIX}/ssa"
FORCE_ANNOTATION = f"{PREFIX}/force"
OWNER_NAME_LABEL = f"{PREFIX}/name"
OWNER_NAMESPACE_LABEL = f"{PREFIX}/namespace"

_STAGE1 = {("apiextensions.k8s.io", "CustomResourceDefinition"), ("", "Namespace")}
_VOLATILE_METADATA = ("resourceVersion", "generation", "managedFields", "creationTimestamp",
                      "uid", "selfLink")


class PruneError(OcigitopsError):
    """Some objects that left the inventory could not be deleted; ``refs`` are those
    objects, which stay in the inventory so a later prune tries them again."""

    def __init__(self, message: str, refs: list[ObjRef]) -> None:
        super().__init__(message)
        self.refs = refs


class ApplyError(OcigitopsError):
    """The set could not be applied; ``failures`` lists one message per object."""

    def __init__(self, message: str, failures: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)


@dataclass(frozen=True, order=True)
class ObjRef:
    """An object's identity; ``id`` is Flux's inventory key ``ns_name_group_kind``."""

    group: str
    kind: str
    namespace: str
    name: str
    version: str = ""

    @property
    def id(self) -> str:
        """Inventory entry id."""
        return f"{self.namespace}_{self.name}_{self.group}_{self.kind}"

    @property
    def api_version(self) -> str:
        """``group/version`` (``version`` for the core group)."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def __str__(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{ns}{self.name}"

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjRef:
        """The reference of a manifest."""
        group, version = split_api_version(str(obj.get("apiVersion", "")))
        md = obj.get("metadata") or {}
        return cls(group, str(obj.get("kind", "")), str(md.get("namespace") or ""),
                   str(md.get("name", "")), version)

    @classmethod
    def from_inventory(cls, entry: Mapping[str, str]) -> ObjRef:
        """Parse ``{"id": "ns_name_group_kind", "v": "v1"}``."""
        ns, name, group, kind = entry["id"].split("_", 3) if entry["id"].count("_") >= 3 \
            else ("", "", "", "")
        return cls(group, kind, ns, name, entry.get("v", ""))

    def inventory_entry(self) -> dict[str, str]:
        """``{"id", "v"}`` for status.inventory.entries."""
        return {"id": self.id, "v": self.version}


@dataclass
class ApplyResult:
    """What happened to each object, and the new inventory."""

    changes: dict[str, list[str]] = field(default_factory=dict)
    inventory: list[ObjRef] = field(default_factory=list)
    #: The server's copy of each object as the apply left it (the apply's answer, or the
    #: live object when unchanged): a health wait starts from it instead of reading the
    #: object again (a ConfigMap or a Service is Current as applied).
    live: dict[ObjRef, Mapping[str, Any]] = field(default_factory=dict)

    def record(self, action: str, ref: ObjRef) -> None:
        """Note one action (created, configured, unchanged, skipped, deleted)."""
        self.changes.setdefault(action, []).append(str(ref))

    def summary(self) -> str:
        """``created 2, configured 1, unchanged 5``."""
        order = ("created", "configured", "deleted", "unchanged", "skipped")
        return ", ".join(f"{a} {len(self.changes[a])}" for a in order if a in self.changes) \
            or "no objects"


def _annotation(obj: Mapping[str, Any], key: str) -> str:
    return str(((obj.get("metadata") or {}).get("annotations") or {}).get(key, ""))


def _normalized(obj: Mapping[str, Any] | None) -> Any:
    if obj is None:
        return None
    o = copy.deepcopy(dict(obj))
    o.pop("status", None)
    md = o.get("metadata") or {}
    for k in _VOLATILE_METADATA:
        md.pop(k, None)
    return o


def validate_objects(objs: Iterable[Mapping[str, Any]]) -> list[ObjRef]:
    """Refs of ``objs``; ApplyError naming every malformed or duplicated object."""
    problems: list[str] = []
    refs: list[ObjRef] = []
    seen: set[str] = set()
    for i, obj in enumerate(objs):
        md = obj.get("metadata") if isinstance(obj, Mapping) else None
        if not isinstance(obj, Mapping) or not obj.get("apiVersion") or not obj.get("kind") \
                or not isinstance(md, Mapping) or not md.get("name"):
            problems.append(f"object {i}: apiVersion, kind and metadata.name are required")
            continue
        ref = ObjRef.of(obj)
        if ref.id in seen:
            problems.append(f"{ref}: defined twice")
        seen.add(ref.id)
        refs.append(ref)
    if problems:
        raise ApplyError(f"invalid manifests: {'; '.join(problems[:5])}", problems)
    return refs


def _crd_kinds(objs: Iterable[Mapping[str, Any]]) -> set[tuple[str, str]]:
    out = set()
    for o in objs:
        if o.get("kind") == "CustomResourceDefinition":
            spec = o.get("spec") or {}
            out.add((str(spec.get("group", "")), str((spec.get("names") or {}).get("kind", ""))))
    return out


async def _dry_run_all(dyn: DynamicClient, objs: Sequence[Mapping[str, Any]], *,
                       impersonate: str | None) -> tuple[list[dict[str, Any]], list[str]]:
    sem = asyncio.Semaphore(8)

    async def one(o: Mapping[str, Any]) -> dict[str, Any] | str:
        async with sem:
            try:
                # Forced: a field conflict with another manager is decided at write time
                # by the object's SSA policy, not by the dry-run.
                return await dyn.apply(o, dry_run=True, force=True, impersonate=impersonate)
            except KubeError as e:
                return f"{ObjRef.of(o)}: {e}"

    results = await asyncio.gather(*(one(o) for o in objs))
    return ([r for r in results if isinstance(r, dict)],
            [r for r in results if isinstance(r, str)])


async def _apply_one(dyn: DynamicClient, obj: Mapping[str, Any], dry: Mapping[str, Any],
                     result: ApplyResult, *, impersonate: str | None, force: bool) -> None:
    ref = ObjRef.of(obj)
    policy = _annotation(obj, SSA_ANNOTATION)
    if policy == "Ignore":
        result.record("skipped", ref)
        return
    # The dry-run of an object that does not exist yet comes back without a
    # resourceVersion (nothing was stored); of one that exists, with the live one. A new
    # object needs no read of the live one: on a first apply that is a GET per object.
    exists = bool((dry.get("metadata") or {}).get("resourceVersion"))
    live = await dyn.get(ref.api_version, ref.kind, ref.name, ref.namespace or None,
                         impersonate=impersonate) if exists else None
    if live is not None and policy == "IfNotPresent":
        result.record("skipped", ref)
        return
    if live is not None and _normalized(live) == _normalized(dry):
        result.record("unchanged", ref)
        result.live[ref] = live
        return
    try:
        result.live[ref] = await dyn.apply(obj, force=policy != "Merge",
                                           impersonate=impersonate)
    except KubeError as e:
        recreate = force or _annotation(obj, FORCE_ANNOTATION) == "enabled"
        if not (recreate and e.status == 422 and live is not None):
            raise
        # An immutable field changed (a Job's template, a Service's clusterIP...).
        await dyn.delete(ref.api_version, ref.kind, ref.name, ref.namespace or None,
                         impersonate=impersonate, propagation="Foreground")
        await _wait_gone(dyn, ref, impersonate, seconds=60)
        result.live[ref] = await dyn.apply(obj, force=True, impersonate=impersonate)
    result.record("created" if live is None else "configured", ref)


async def _wait_gone(dyn: DynamicClient, ref: ObjRef, impersonate: str | None,
                     seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await dyn.get(ref.api_version, ref.kind, ref.name, ref.namespace or None,
                         impersonate=impersonate) is None:
            return
        await asyncio.sleep(0.5)
    raise ApplyError(f"{ref} was not deleted within {seconds:.0f}s")


async def apply_set(dyn: DynamicClient, objs: Sequence[Mapping[str, Any]], *,
                    impersonate: str | None = None, force: bool = False,
                    wait_timeout: float = 60.0) -> ApplyResult:
    """Dry-run, then apply ``objs`` (CRDs and Namespaces first); see the module doc."""
    refs = validate_objects(objs)
    defined = _crd_kinds(objs)
    now: list[Mapping[str, Any]] = []
    later: list[Mapping[str, Any]] = []
    unknown: list[str] = []
    for obj, ref in zip(objs, refs, strict=True):
        try:
            await dyn.resource(ref.api_version, ref.kind)
            now.append(obj)
        except UnknownKindError as e:
            if (ref.group, ref.kind) in defined:
                later.append(obj)  # its CRD is in this set: dry-run once it is established
            else:
                unknown.append(f"{ref}: {e}")
    if unknown:
        raise ApplyError(f"{len(unknown)} object(s) of unknown kinds: {unknown[0]}", unknown)
    stage1 = [o for o in now if (ObjRef.of(o).group, ObjRef.of(o).kind) in _STAGE1]
    # Objects in a Namespace this set creates cannot be dry-run before it exists: they
    # are checked right after stage 1, like objects of the set's own CRDs.
    new_namespaces = set()
    for o in stage1:
        ref = ObjRef.of(o)
        if ref.kind == "Namespace" and await dyn.get("v1", "Namespace", ref.name,
                                                     impersonate=impersonate) is None:
            new_namespaces.add(ref.name)
    later += [o for o in now if o not in stage1
              and (o.get("metadata") or {}).get("namespace") in new_namespaces]
    stage2 = [o for o in now if o not in stage1 and o not in later]
    dry1, failed = await _dry_run_all(dyn, stage1, impersonate=impersonate)
    dry2, failed2 = await _dry_run_all(dyn, stage2, impersonate=impersonate) \
        if not failed else ([], [])
    failed += failed2
    if failed:
        raise ApplyError(f"dry-run failed, nothing applied: {failed[0]}"
                         + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""),
                         failed)
    result = ApplyResult(inventory=sorted(refs))
    for obj, dry in zip(stage1, dry1, strict=True):
        await _apply_one(dyn, obj, dry, result, impersonate=impersonate, force=force)
    if stage1:
        await wait_ready(dyn, [ObjRef.of(o) for o in stage1], seconds=wait_timeout,
                         impersonate=impersonate, known=result.live)
    if later:
        for obj in later:
            ref = ObjRef.of(obj)
            await dyn.resource(ref.api_version, ref.kind, refresh=True)
        dry3, failed3 = await _dry_run_all(dyn, later, impersonate=impersonate)
        if failed3:
            raise ApplyError(f"dry-run failed after the CRDs and Namespaces were applied:"
                             f" {failed3[0]}", failed3)
        stage2 += later
        dry2 += dry3
    sem = asyncio.Semaphore(8)

    async def bounded(obj: Mapping[str, Any], dry: Mapping[str, Any]) -> None:
        async with sem:
            await _apply_one(dyn, obj, dry, result, impersonate=impersonate, force=force)

    await asyncio.gather(*(bounded(o, d) for o, d in zip(stage2, dry2, strict=True)))
    return result


async def prune(dyn: DynamicClient, old: Iterable[ObjRef], new: Iterable[ObjRef], *,
                owner: tuple[str, str] | None = None, impersonate: str | None = None,
                result: ApplyResult | None = None) -> ApplyResult:
    """Delete objects that left the inventory (namespaced first, Namespaces and CRDs last).

    Objects annotated ``prune: disabled`` stay. With ``owner`` (namespace, name), objects
    whose owner labels name another Kustomization (adopted elsewhere) stay too. Every
    deletion is tried; when some fail, PruneError names them (and carries them, so the
    caller keeps them in the inventory rather than orphaning them).
    """
    result = result or ApplyResult()
    keep = {r.id for r in new}
    gone = [r for r in old if r.id not in keep]
    gone.sort(key=lambda r: ((r.group, r.kind) in _STAGE1, r.id))
    failed: list[tuple[ObjRef, str]] = []
    for ref in gone:
        try:
            await _prune_one(dyn, ref, owner, impersonate, result)
        except UnknownKindError:
            continue  # its CRD is gone, so is it
        except OcigitopsError as e:
            failed.append((ref, str(e)))
    if failed:
        shown = "; ".join(f"{ref}: {why}" for ref, why in failed[:3])
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        raise PruneError(f"prune failed for {len(failed)} object(s): {shown}{more}",
                         [ref for ref, _ in failed])
    return result


async def _prune_one(dyn: DynamicClient, ref: ObjRef, owner: tuple[str, str] | None,
                     impersonate: str | None, result: ApplyResult) -> None:
    live = await dyn.get(ref.api_version, ref.kind, ref.name, ref.namespace or None,
                         impersonate=impersonate)
    if live is None:
        return
    if _annotation(live, PRUNE_ANNOTATION) == "disabled":
        result.record("skipped", ref)
        return
    labels = (live.get("metadata") or {}).get("labels") or {}
    if owner and labels.get(OWNER_NAME_LABEL) and (
            labels.get(OWNER_NAMESPACE_LABEL), labels.get(OWNER_NAME_LABEL)) != owner:
        result.record("skipped", ref)
        return
    await dyn.delete(ref.api_version, ref.kind, ref.name, ref.namespace or None,
                     impersonate=impersonate)
    result.record("deleted", ref)


def health(obj: Mapping[str, Any] | None) -> tuple[str, str]:
    """kstatus-style status of a live object: (``Current``|``InProgress``|``Failed``, why)."""
    if obj is None:
        return "InProgress", "not found"
    kind = obj.get("kind")
    md = obj.get("metadata") or {}
    st = obj.get("status") or {}
    gen, observed = md.get("generation"), st.get("observedGeneration")
    if gen is not None and observed is not None and observed < gen:
        return "InProgress", f"generation {gen} not observed yet"
    conds = {c.get("type"): c for c in st.get("conditions") or []}
    if kind == "CustomResourceDefinition":
        ok = conds.get("Established", {}).get("status") == "True"
        return ("Current", "established") if ok else ("InProgress", "not established")
    if kind == "Namespace":
        return ("Current", "active") if st.get("phase") == "Active" \
            else ("InProgress", "not active")
    if kind == "Deployment":
        want = (obj.get("spec") or {}).get("replicas", 1)
        if conds.get("Progressing", {}).get("reason") == "ProgressDeadlineExceeded":
            return "Failed", "progress deadline exceeded"
        if st.get("updatedReplicas", 0) < want:
            return "InProgress", f"{st.get('updatedReplicas', 0)}/{want} updated"
        if st.get("availableReplicas", 0) < want or st.get("replicas", 0) > want:
            return "InProgress", f"{st.get('availableReplicas', 0)}/{want} available"
        return "Current", "available"
    if kind == "StatefulSet":
        want = (obj.get("spec") or {}).get("replicas", 1)
        if st.get("readyReplicas", 0) < want:
            return "InProgress", f"{st.get('readyReplicas', 0)}/{want} ready"
        if st.get("updateRevision") and st.get("currentRevision") != st.get("updateRevision"):
            return "InProgress", "rolling update in progress"
        return "Current", "ready"
    if kind == "DaemonSet":
        desired = st.get("desiredNumberScheduled", 0)
        if st.get("updatedNumberScheduled", 0) < desired or st.get("numberAvailable", 0) < desired:
            return "InProgress", f"{st.get('numberAvailable', 0)}/{desired} available"
        return "Current", "available"
    if kind == "Job":
        if conds.get("Failed", {}).get("status") == "True":
            return "Failed", conds["Failed"].get("message") or "job failed"
        return ("Current", "complete") if conds.get("Complete", {}).get("status") == "True" \
            else ("InProgress", "running")
    if kind == "PersistentVolumeClaim":
        return ("Current", "bound") if st.get("phase") == "Bound" else ("InProgress", "pending")
    if "Stalled" in conds and conds["Stalled"].get("status") == "True":
        return "Failed", conds["Stalled"].get("message") or "stalled"
    if "Ready" in conds:
        ready = conds["Ready"]
        if ready.get("status") == "True":
            return "Current", "ready"
        return "InProgress", ready.get("message") or "not ready"
    return "Current", "exists"


class ObjectReader(Protocol):
    """What :func:`wait_ready` reads through: :meth:`DynamicClient.get`'s signature
    (a :class:`~ocigitops.puller.readbatch.BatchReader` coalesces concurrent reads)."""

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None, *, impersonate: str | None = None,
                  ) -> dict[str, Any] | None: ...


async def wait_ready(dyn: DynamicClient, refs: Sequence[ObjRef], *, seconds: float,
                     impersonate: str | None = None, interval: float = 1.0,
                     reader: ObjectReader | None = None,
                     known: Mapping[ObjRef, Mapping[str, Any]] | None = None) -> None:
    """Wait up to ``seconds`` until every object is Current; ApplyError naming the laggards
    otherwise. Polls after 0.2 s, then backs off to ``interval``: most objects become
    Current within a second or two of being applied, and a worker waits meanwhile. The
    objects of one round are read at once, through ``reader`` when given. ``known``: the
    server's copies the caller already has (:attr:`ApplyResult.live`); those already
    Current are not read at all, the others are read from the first round on."""
    src: ObjectReader = reader or dyn
    deadline = time.monotonic() + seconds
    known = known or {}
    pending = [r for r in refs if r not in known or health(known[r])[0] != "Current"]
    if not pending:
        return
    pause = min(0.2, interval)
    last: dict[str, str] = {}
    while True:
        lives = await asyncio.gather(*(
            src.get(ref.api_version, ref.kind, ref.name, ref.namespace or None,
                    impersonate=impersonate) for ref in pending))
        still: list[ObjRef] = []
        for ref, live in zip(pending, lives, strict=True):
            state, why = health(live)
            if state == "Failed":
                raise ApplyError(f"health check failed for {ref}: {why}", [f"{ref}: {why}"])
            if state != "Current":
                still.append(ref)
                last[str(ref)] = why
        pending = still
        if not pending:
            return
        if time.monotonic() >= deadline:
            details = [f"{r}: {last.get(str(r), '')}" for r in pending]
            raise ApplyError(f"timeout waiting for {len(pending)} object(s) to become ready:"
                             f" {details[0]}", details)
        await asyncio.sleep(pause)
        pause = min(interval, pause * 1.5)
