"""Shared API pieces: the group, object metadata, references and kstatus conditions."""

# prop() is this package's dataclass field specifier (it returns dataclasses.field).
# ruff: noqa: RUF009

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from ocigitops.duration import parse_duration
from ocigitops.puller.api.schema import ValidationError, from_dict, prop

S = TypeVar("S")
T = TypeVar("T")

GROUP = "ocigitops.dev"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "ocigitops"

#: The finalizer on objects whose deletion needs work first (a Kustomization's prune).
FINALIZER = f"finalizers.{GROUP}"

#: Annotation that asks for a reconcile now (Flux's ``reconcile.fluxcd.io/requestedAt``).
RECONCILE_REQUESTED_AT = f"reconcile.{GROUP}/requestedAt"

# Condition types (kstatus: Ready, Reconciling, Stalled) and Flux's source conditions.
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
ARTIFACT_IN_STORAGE = "ArtifactInStorage"
ARTIFACT_OUTDATED = "ArtifactOutdated"
FETCH_FAILED = "FetchFailed"
SOURCE_VERIFIED = "SourceVerified"
HEALTHY = "Healthy"

NAME_MAX = 253
NAMESPACE_MAX = 63

ConditionStatus = Literal["True", "False", "Unknown"]

_CONDITION_TYPE = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                   r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$")
_CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


@dataclass(frozen=True, kw_only=True)
class Condition:
    """Condition contains details for one aspect of the current state of this API Resource
    (metav1.Condition)."""

    type: str = prop("Type of condition in CamelCase or in foo.example.com/CamelCase.",
                     pattern=_CONDITION_TYPE, max_length=316)
    status: ConditionStatus = prop("Status of the condition, one of True, False, Unknown.")
    observed_generation: int | None = prop(
        "The .metadata.generation that the condition was set based upon.", default=None,
        minimum=0)
    last_transition_time: str = prop(
        "The last time the condition transitioned from one status to another.",
        fmt="date-time")
    reason: str = prop("A programmatic identifier for the reason of the last transition, "
                       "in CamelCase.", pattern=_CONDITION_REASON, min_length=1,
                       max_length=1024)
    message: str = prop("A human readable message about the transition; may be empty.",
                        max_length=32768)


@dataclass(frozen=True, kw_only=True)
class LocalObjectReference:
    """A reference to an object in the same namespace."""

    name: str = prop("Name of the referent.")


@dataclass(frozen=True, kw_only=True)
class ObjectMeta:
    """The parts of ``metadata`` the controller uses (not part of the CRD schema)."""

    name: str
    namespace: str = "default"
    generation: int = 0
    uid: str = ""
    resource_version: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    finalizers: tuple[str, ...] = ()
    deletion_timestamp: str | None = None

    @classmethod
    def parse(cls, raw: Any) -> ObjectMeta:
        """Read ``metadata`` of a custom object dict (name required)."""
        from ocigitops.puller.api.schema import ValidationError

        if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str) \
                or not raw["name"]:
            raise ValidationError(["metadata.name: is required"], "object")
        return cls(name=raw["name"], namespace=str(raw.get("namespace") or "default"),
                   generation=int(raw.get("generation") or 0), uid=str(raw.get("uid") or ""),
                   resource_version=str(raw.get("resourceVersion") or ""),
                   labels=dict(raw.get("labels") or {}),
                   annotations=dict(raw.get("annotations") or {}),
                   finalizers=tuple(raw.get("finalizers") or ()),
                   deletion_timestamp=raw.get("deletionTimestamp"))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (only the fields that are set)."""
        out: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


def find_condition(conditions: tuple[Condition, ...], ctype: str) -> Condition | None:
    """The condition of type ``ctype``, if present."""
    return next((c for c in conditions if c.type == ctype), None)


class ReadyMixin:
    """The ``ready`` property every kind's object has (its status carries conditions)."""

    status: Any

    @property
    def ready(self) -> Condition | None:
        """The Ready condition, if any."""
        return find_condition(self.status.conditions, READY)


class IntervalMixin:
    """``interval_seconds`` for a spec whose ``interval`` is a required duration."""

    interval: str

    @property
    def interval_seconds(self) -> float:
        """``interval`` in seconds."""
        return parse_duration(self.interval)


class IntervalTimeoutMixin(IntervalMixin):
    """``interval_seconds`` and ``timeout_seconds``, both durations the spec requires (or
    defaults)."""

    timeout: str

    @property
    def timeout_seconds(self) -> float:
        """``timeout`` in seconds."""
        return parse_duration(self.timeout)


def object_ident(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` of a custom object dict, for messages."""
    md = obj.get("metadata") if isinstance(obj, Mapping) else None
    if isinstance(md, Mapping):
        return f"{md.get('namespace') or 'default'}/{md.get('name') or '?'}"
    return "?"


def parse_object_meta(obj: Mapping[str, Any], kind: str) -> tuple[ObjectMeta, str]:
    """A custom object's metadata, and ``"Kind namespace/name"`` to name it in errors
    (``ValidationError`` naming the object on bad metadata)."""
    what = f"{kind} {object_ident(obj)}"
    try:
        return ObjectMeta.parse(obj.get("metadata")), what
    except ValidationError as exc:
        raise ValidationError(exc.errors, what) from None


def parse_status(status_type: type[T], obj: Mapping[str, Any]) -> T:
    """A custom object's status. One that does not parse (written by another version) is
    replaced by an empty one, so it never blocks a reconcile."""
    try:
        return from_dict(status_type, obj.get("status") or {}, path="status")
    except ValidationError:
        return status_type()


def parse_object(obj: Mapping[str, Any], kind: str, spec_type: type[S],
                 status_type: type[T]) -> tuple[ObjectMeta, S, T]:
    """Metadata, spec (``ValidationError`` naming the object on a bad one) and status
    (:func:`parse_status`) of a custom object dict."""
    meta, what = parse_object_meta(obj, kind)
    spec = from_dict(spec_type, obj.get("spec"), path="spec", what=what)
    return meta, spec, parse_status(status_type, obj)
