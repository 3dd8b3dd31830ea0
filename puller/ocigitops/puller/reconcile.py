"""What every reconcile starts and ends with: a working copy of the status (only the
fields the kind's typed status declares), the handling of a spec that does not parse
(Stalled, no retry: only an edit can fix it), and the :class:`Outcome` handed back to the
runtime."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ocigitops.errors import OcigitopsError
from ocigitops.puller import conditions as cond
from ocigitops.puller.api.meta import API_VERSION, RECONCILE_REQUESTED_AT
from ocigitops.puller.api.schema import ValidationError, from_dict, json_name, to_dict

if TYPE_CHECKING:
    from ocigitops.puller.kube import DynamicClient


@dataclass
class Outcome:
    """What a reconcile decided: the new status, when to come back, events to record, and
    what the runtime should also do (finalizers, waking the objects that reference this
    one)."""

    status: dict[str, Any]
    requeue_after: float | None
    events: list[tuple[str, str, str]] = field(default_factory=list)
    failed: bool = False
    #: Something consumers read changed (a source stored a new revision, a Kustomization
    #: applied a change): every object referencing this one is woken now.
    changed: bool = False
    #: The object waits on something it references (a source without an artifact, a
    #: dependency not Ready): it is woken when that becomes Ready, and polled at
    #: ``--requeue-dependency`` meanwhile.
    waiting: bool = False
    add_finalizer: bool = False
    remove_finalizer: bool = False


@dataclass
class Start:
    """The object's generation and a mutable copy of its status and conditions."""

    generation: int
    status: dict[str, Any]
    conditions: list[dict[str, Any]]

    def invalid(self, error: Exception) -> tuple[str, str, str]:
        """Mark an unparseable spec: Ready=False, Stalled=True; returns the event."""
        cond.mark_failed(self.conditions, cond.INVALID_SPEC, str(error), self.generation,
                         stalled=True)
        self.status["observedGeneration"] = self.generation
        return ("Warning", cond.INVALID_SPEC, str(error))


def begin(obj: Mapping[str, Any], status_type: type | None = None) -> Start:
    """Copy the status (without fields ``status_type`` does not declare: an older
    version's leftovers must not make every later status write invalid), and record a
    handled ``requestedAt`` annotation."""
    md = obj.get("metadata") or {}
    status: dict[str, Any] = dict(obj.get("status") or {})
    if status_type is not None:
        known = {json_name(f) for f in dataclasses.fields(status_type)}
        status = {k: v for k, v in status.items() if k in known}
    conditions: list[dict[str, Any]] = [dict(c) for c in status.get("conditions") or []
                                        if isinstance(c, Mapping)]
    status["conditions"] = conditions
    requested = (md.get("annotations") or {}).get(RECONCILE_REQUESTED_AT)
    if requested:
        status["lastHandledReconcileAt"] = requested
    return Start(int(md.get("generation") or 0), status, conditions)


T = TypeVar("T")


@dataclass
class Prepared(Generic[T]):
    """A parsed object, not suspended, ready to reconcile, with its working status."""

    start: Start
    obj: T


def prepare(obj: Mapping[str, Any], status_type: type, parse: Callable[[Mapping[str, Any]], T],
            ) -> Prepared[T] | Outcome:
    """Every reconcile's prelude: :func:`begin`, then parse. An object whose spec does not
    parse ends here Stalled, and a suspended one ends here untouched; the returned
    :class:`Outcome` is then the reconcile's result."""
    start = begin(obj, status_type)
    try:
        parsed = parse(obj)
    except (ValidationError, ValueError) as e:
        return Outcome(start.status, None, [start.invalid(e)], failed=True)
    spec = getattr(parsed, "spec", None)
    if getattr(spec, "suspend", False):
        return Outcome(start.status, None)
    return Prepared(start, parsed)


def typed_status(status_type: type, status: Mapping[str, Any]) -> dict[str, Any]:
    """``status`` as the kind's typed status writes it; ``ValidationError`` when it does
    not fit the API (a bug in the reconciler: the CRD would refuse or prune it)."""
    out: dict[str, Any] = to_dict(from_dict(status_type, dict(status), path="status"))
    return out


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) turning ``old`` into ``new``: a field the new
    status dropped is sent as null, or the API server would keep it."""
    out: dict[str, Any] = {}
    for k, v in new.items():
        was = old.get(k)
        if isinstance(v, Mapping) and isinstance(was, Mapping):
            sub = merge_patch(was, v)
            if sub:
                out[k] = sub
        elif v != was or k not in old:
            out[k] = v
    for k in old:
        if k not in new:
            out[k] = None
    return out


# -- references: what a Kustomization and a HelmRelease both check before their work -----------


class CrossNamespaceRefError(OcigitopsError):
    """A reference to another namespace while ``--no-cross-namespace-refs`` is set
    (reason ``AccessDenied``)."""


class DependencyNotReadyError(OcigitopsError):
    """A ``dependsOn`` object is not Ready yet: retry later, not a failure."""


class DependencyRef(Protocol):
    """A ``dependsOn`` entry: a name, and a namespace (None: the object's own)."""

    @property
    def name(self) -> str: ...

    @property
    def namespace(self) -> str | None: ...


def is_ready(obj: Mapping[str, Any] | None) -> bool:
    """Ready=True for the object's current generation."""
    if obj is None:
        return False
    md, st = obj.get("metadata") or {}, obj.get("status") or {}
    ready = cond.find(list(st.get("conditions") or []), cond.READY)
    return bool(ready and ready.get("status") == cond.TRUE
                and st.get("observedGeneration") == md.get("generation"))


def check_namespace(kind: str, namespace: str, name: str, own_namespace: str, *,
                    no_cross_namespace_refs: bool) -> None:
    """``CrossNamespaceRefError`` for a reference to ``kind/namespace/name`` from
    ``own_namespace`` when ``--no-cross-namespace-refs`` is set (Flux's message)."""
    if no_cross_namespace_refs and namespace != own_namespace:
        raise CrossNamespaceRefError(f"can't access '{kind}/{namespace}/{name}',"
                                     " cross-namespace references have been blocked")


async def check_dependencies(kube: DynamicClient, kind: str, namespace: str,
                             depends_on: Iterable[DependencyRef], *,
                             no_cross_namespace_refs: bool) -> None:
    """Every ``dependsOn`` object of ``kind`` must be Ready (observed generation):
    ``DependencyNotReadyError`` names the first one that is not."""
    for dep in depends_on:
        dep_ns = dep.namespace or namespace
        check_namespace(kind, dep_ns, dep.name, namespace,
                        no_cross_namespace_refs=no_cross_namespace_refs)
        if not is_ready(await kube.get(API_VERSION, kind, dep.name, dep_ns)):
            raise DependencyNotReadyError(f"dependency '{dep_ns}/{dep.name}' is not ready")


__all__ = ["CrossNamespaceRefError", "DependencyNotReadyError", "Outcome", "Prepared", "Start",
           "ValidationError", "begin", "check_dependencies", "check_namespace", "is_ready",
           "merge_patch", "prepare", "typed_status"]
