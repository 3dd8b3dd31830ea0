"""Kustomization (``ocigitops.dev/v1``): Flux's kustomize.toolkit.fluxcd.io/v1 Kustomization,
for the fields this controller implements."""

# prop() is this package's dataclass field specifier (it returns dataclasses.field).
# ruff: noqa: RUF009

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ocigitops.duration import DURATION_PATTERN, parse_duration
from ocigitops.puller.api.meta import (
    NAME_MAX,
    NAMESPACE_MAX,
    READY,
    Condition,
    ObjectMeta,
    find_condition,
    parse_object,
)
from ocigitops.puller.api.schema import prop

KIND = "Kustomization"
PLURAL = "kustomizations"
SINGULAR = "kustomization"
SHORT_NAMES = ("ks",)
HISTORY_LIMIT = 5

SourceKind = Literal["OCIRepository", "GitRepository"]
SubstituteKind = Literal["ConfigMap", "Secret"]
SubstituteStrategy = Literal["WithVariables", "Always"]
DeletionPolicy = Literal["MirrorPrune", "Delete", "WaitForTermination", "Orphan"]


# -- spec ----------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class CrossNamespaceSourceReference:
    """The source of the manifests (an OCIRepository; GitRepository later)."""

    api_version: str | None = prop("API version of the referent.", default=None)
    kind: SourceKind = prop("Kind of the referent.")
    name: str = prop("Name of the referent.", min_length=1, max_length=NAME_MAX)
    namespace: str | None = prop("Namespace of the referent, defaults to the namespace of "
                                 "the Kustomization.", default=None, min_length=1,
                                 max_length=NAMESPACE_MAX)


@dataclass(frozen=True, kw_only=True)
class DependencyReference:
    """A Kustomization that must be Ready first."""

    name: str = prop("Name of the referent.")
    namespace: str | None = prop("Namespace of the referent, defaults to the namespace of "
                                 "the Kustomization.", default=None)


@dataclass(frozen=True, kw_only=True)
class HealthCheckReference:
    """An object whose health is checked after apply."""

    api_version: str | None = prop("API version of the referent.", default=None)
    kind: str = prop("Kind of the referent.")
    name: str = prop("Name of the referent.")
    namespace: str | None = prop("Namespace of the referent.", default=None)


@dataclass(frozen=True, kw_only=True)
class CommonMetadata:
    """Labels and annotations added to every applied object."""

    labels: Mapping[str, str] = prop("Labels added to every object.", default_factory=dict)
    annotations: Mapping[str, str] = prop("Annotations added to every object.",
                                          default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Image:
    """An image override (kustomize images)."""

    name: str = prop("The image name as it appears in the manifests.")
    new_name: str | None = prop("The replacement image name.", default=None)
    new_tag: str | None = prop("The replacement tag.", default=None)
    digest: str | None = prop("The replacement digest; takes precedence over newTag.",
                              default=None)


@dataclass(frozen=True, kw_only=True)
class Selector:
    """The objects a patch applies to (kustomize target)."""

    group: str | None = prop("API group of the targets.", default=None)
    version: str | None = prop("API version of the targets.", default=None)
    kind: str | None = prop("Kind of the targets.", default=None)
    name: str | None = prop("Name of the targets (a regular expression).", default=None)
    namespace: str | None = prop("Namespace of the targets (a regular expression).",
                                 default=None)
    label_selector: str | None = prop("A label selector for the targets.", default=None)
    annotation_selector: str | None = prop("An annotation selector for the targets.",
                                           default=None)


@dataclass(frozen=True, kw_only=True)
class Patch:
    """A strategic merge or JSON 6902 patch, inline, with optional targets."""

    patch: str = prop("The patch (strategic merge or JSON 6902), inline YAML or JSON.")
    target: Selector | None = prop("The objects the patch applies to.", default=None)


@dataclass(frozen=True, kw_only=True)
class SubstituteReference:
    """A ConfigMap or Secret whose data are substitution variables."""

    kind: SubstituteKind = prop("ConfigMap or Secret.")
    name: str = prop("Name of the ConfigMap or Secret, in the Kustomization's namespace.",
                     min_length=1, max_length=NAME_MAX)
    optional: bool = prop("Do not fail when the object does not exist.", default=False,
                          schema_default=False)


@dataclass(frozen=True, kw_only=True)
class PostBuild:
    """Variable substitution after the build (``${var}``, ``${var:=default}``)."""

    substitute: Mapping[str, str] = prop("Variables and their values.", default_factory=dict)
    substitute_from: tuple[SubstituteReference, ...] = prop(
        "ConfigMaps and Secrets holding variables; substitute wins over them.", default=())
    substitute_strategy: SubstituteStrategy = prop(
        "WithVariables (the default, as Flux): substitute only when at least one variable"
        " is defined; Always: substitute even with none (undefined variables then fail in"
        " strict mode).", default="WithVariables", schema_default="WithVariables")


@dataclass(frozen=True, kw_only=True)
class KustomizationSpec:
    """KustomizationSpec defines the configuration to calculate the desired state from a
    Source using Kustomize."""

    source_ref: CrossNamespaceSourceReference = prop("The source of the manifests.")
    path: str | None = prop("Path to the directory with the kustomization.yaml, relative to "
                            "the artifact root; defaults to the root.", default=None)
    interval: str = prop("How often the source is reconciled against the cluster.",
                         pattern=DURATION_PATTERN)
    retry_interval: str | None = prop("How soon a failed reconcile is retried; defaults to "
                                      "interval.", default=None, pattern=DURATION_PATTERN)
    timeout: str | None = prop("Timeout of the build, apply and health checks; defaults to "
                               "interval.", default=None, pattern=DURATION_PATTERN)
    prune: bool = prop("Delete the objects that the source no longer contains.")
    wait: bool = prop("Wait for every applied object to become Ready (overrides "
                      "healthChecks).", default=False)
    health_checks: tuple[HealthCheckReference, ...] = prop(
        "Objects whose health gates Ready.", default=())
    depends_on: tuple[DependencyReference, ...] = prop(
        "Kustomizations that must be Ready before this one is applied.", default=())
    target_namespace: str | None = prop("Namespace set on every namespaced object.",
                                        default=None, min_length=1, max_length=NAMESPACE_MAX)
    name_prefix: str | None = prop("Prefix added to every object's name.", default=None,
                                   min_length=1, max_length=200)
    name_suffix: str | None = prop("Suffix added to every object's name.", default=None,
                                   min_length=1, max_length=200)
    common_metadata: CommonMetadata | None = prop(
        "Labels and annotations added to every object.", default=None)
    images: tuple[Image, ...] = prop("Image overrides.", default=())
    patches: tuple[Patch, ...] = prop("Patches applied after the build.", default=())
    components: tuple[str, ...] = prop("Kustomize components, relative to path.", default=())
    post_build: PostBuild | None = prop("Variable substitution after the build.",
                                        default=None)
    service_account_name: str | None = prop(
        "The ServiceAccount impersonated for apply and prune.", default=None)
    suspend: bool = prop("Suspend reconciliation.", default=False)
    force: bool = prop("Recreate objects whose immutable fields changed.", default=False,
                       schema_default=False)
    deletion_policy: DeletionPolicy | None = prop(
        "What happens to applied objects when the Kustomization is deleted; MirrorPrune "
        "(the default) follows prune.", default=None)

    @property
    def interval_seconds(self) -> float:
        """``interval`` in seconds."""
        return parse_duration(self.interval)

    @property
    def retry_interval_seconds(self) -> float:
        """``retryInterval`` in seconds (``interval`` when unset)."""
        return parse_duration(self.retry_interval or self.interval)

    @property
    def timeout_seconds(self) -> float:
        """``timeout`` in seconds (``interval`` when unset, as Flux)."""
        return parse_duration(self.timeout or self.interval)


# -- status --------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ResourceRef:
    """One applied object: id ``<namespace>_<name>_<group>_<kind>``, v its version."""

    id: str = prop("The object's ID, <namespace>_<name>_<group>_<kind>.")
    v: str = prop("The object's API version.")


@dataclass(frozen=True, kw_only=True)
class ResourceInventory:
    """The objects applied by the last successful reconcile."""

    entries: tuple[ResourceRef, ...] = prop("The applied objects.")


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """One applied revision in the history."""

    digest: str = prop("The digest of the applied set (its revision and objects).")
    first_reconciled: str = prop("When this revision was first reconciled.",
                                 fmt="date-time")
    last_reconciled: str = prop("When this revision was last reconciled.", fmt="date-time")
    last_reconciled_duration: str = prop("How long the last reconcile took (a duration).")
    last_reconciled_status: str = prop("The reason of the last reconcile's outcome.")
    total_reconciliations: int = prop("How many times this revision was reconciled.")
    metadata: Mapping[str, str] = prop("Revision and other metadata of the snapshot.",
                                       default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class KustomizationStatus:
    """KustomizationStatus defines the observed state of a Kustomization."""

    observed_generation: int | None = prop("The last observed generation.", default=None)
    conditions: tuple[Condition, ...] = prop("Conditions of the Kustomization.", default=())
    last_applied_revision: str | None = prop("The revision last applied successfully.",
                                             default=None)
    last_attempted_revision: str | None = prop("The revision last attempted.", default=None)
    last_handled_reconcile_at: str | None = prop(
        "The value of the requestedAt annotation last handled.", default=None)
    inventory: ResourceInventory | None = prop("The objects applied.", default=None)
    history: tuple[Snapshot, ...] = prop("The last applied revisions, newest first.",
                                         default=(), max_items=HISTORY_LIMIT)


# -- object --------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Kustomization:
    """A Kustomization object: metadata, spec and status."""

    metadata: ObjectMeta
    spec: KustomizationSpec
    status: KustomizationStatus = field(default_factory=KustomizationStatus)

    @property
    def ready(self) -> Condition | None:
        """The Ready condition, if any."""
        return find_condition(self.status.conditions, READY)

    @property
    def source_namespace(self) -> str:
        """The namespace of the source (the Kustomization's own by default)."""
        return self.spec.source_ref.namespace or self.metadata.namespace


def inventory_id(namespace: str, name: str, group: str, kind: str) -> str:
    """Flux's inventory ID ``<namespace>_<name>_<group>_<kind>`` (empty namespace/group for
    cluster-scoped and core objects)."""
    return f"{namespace}_{name}_{group}_{kind}"


def parse_inventory_id(ident: str) -> tuple[str, str, str, str]:
    """``(namespace, name, group, kind)`` of an inventory ID."""
    parts = ident.split("_")
    if len(parts) < 4:
        raise ValueError(f"inventory id {ident!r} is not <namespace>_<name>_<group>_<kind>")
    # Names cannot contain '_', but be lenient: namespace first, group and kind last.
    return parts[0], "_".join(parts[1:-2]), parts[-2], parts[-1]


def parse_kustomization(obj: Mapping[str, Any]) -> Kustomization:
    """Parse a Kustomization custom object dict (``ValidationError`` on a bad spec); a
    status that does not parse is replaced by an empty one."""
    meta, spec, status = parse_object(obj, KIND, KustomizationSpec, KustomizationStatus)
    return Kustomization(metadata=meta, spec=spec, status=status)
