"""HelmRelease (Flux helm-controller v2 API, as ``ocigitops.dev/v1``): spec and status.

Field names and defaults are Flux's. ``values`` and the fields this controller does not
implement yet (``kubeConfig``; ``driftDetection`` is read by the reconciler, its
``ignore`` rules by ``ocigitops.puller.helmrelease_drift``; ``postRenderers`` is read by
the reconciler, see ``ocigitops.puller.helmrelease_post``)
are free-form in the CRD (:data:`FREEFORM_SCHEMAS`) and kept out of the typed spec: the
reconciler reads ``values`` as given and refuses the others with ``Stalled=True``, reason
``UnsupportedField``, before anything is installed.
"""

# prop() is this package's dataclass field specifier (it returns dataclasses.field).
# ruff: noqa: RUF009

from __future__ import annotations

import hashlib
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
    parse_object_meta,
    parse_status,
)
from ocigitops.puller.api.ocirepository import OCIRepositoryVerification
from ocigitops.puller.api.schema import ValidationError, from_dict, prop

KIND = "HelmRelease"
PLURAL = "helmreleases"
SINGULAR = "helmrelease"
SHORT_NAMES = ("hr",)
HISTORY_LIMIT = 5
DEFAULT_MAX_HISTORY = 5
DEFAULT_VALUES_KEY = "values.yaml"

ChartRefKind = Literal["OCIRepository", "HelmChart"]
ChartSourceKind = Literal["HelmRepository", "GitRepository", "OCIRepository"]
ReconcileStrategy = Literal["ChartVersion", "Revision"]
ValuesKind = Literal["ConfigMap", "Secret"]
CRDsPolicy = Literal["Skip", "Create", "CreateReplace"]
RemediationStrategy = Literal["rollback", "uninstall"]
StrategyName = Literal["RemediateOnFailure", "RetryOnFailure"]
Propagation = Literal["background", "foreground", "orphan"]

_PRESERVE: Mapping[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}

#: Spec fields kept out of the typed spec, with their CRD schemas (free-form JSON).
FREEFORM_SCHEMAS: Mapping[str, Mapping[str, Any]] = {
    "values": {**_PRESERVE, "description": "Values merged over the chart's values.yaml, "
               "after valuesFrom."},
    "driftDetection": {**_PRESERVE, "description": "Drift detection: mode disabled "
                       "(default), warn or enabled; ignore: rules of paths (JSON pointers) "
                       "and a target selector, neither reported nor corrected."},
    "postRenderers": {"type": "array", "items": dict(_PRESERVE),
                      "description": "Post-renderers applied in order to what Helm "
                      "rendered: kustomize patches (patch, target) and images (name, "
                      "newName, newTag, digest)."},
    "kubeConfig": {**_PRESERVE, "description": "A remote cluster (not supported yet)."},
}
#: The free-form fields the reconciler refuses, and the value that means "off".
UNSUPPORTED_UNLESS: Mapping[str, Any] = {
    "kubeConfig": None,
}


# -- spec ----------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class CrossNamespaceSourceReference:
    """The chart: an OCIRepository whose artifact is a chart archive, or a HelmChart."""

    api_version: str | None = prop("API version of the referent.", default=None)
    kind: ChartRefKind = prop("Kind of the referent.")
    name: str = prop("Name of the referent.", min_length=1, max_length=NAME_MAX)
    namespace: str | None = prop("Namespace of the referent, defaults to the namespace of "
                                 "the HelmRelease.", default=None, min_length=1,
                                 max_length=NAMESPACE_MAX)


@dataclass(frozen=True, kw_only=True)
class ChartTemplateSourceReference:
    """The source of a templated HelmChart (the HelmChart is created in its namespace)."""

    api_version: str | None = prop("API version of the referent.", default=None)
    kind: ChartSourceKind = prop("HelmRepository, GitRepository or OCIRepository.")
    name: str = prop("Name of the referent.", min_length=1, max_length=NAME_MAX)
    namespace: str | None = prop("Namespace of the referent, defaults to the namespace of "
                                 "the HelmRelease.", default=None, min_length=1,
                                 max_length=NAMESPACE_MAX)


@dataclass(frozen=True, kw_only=True)
class HelmChartTemplateSpec:
    """The spec of the HelmChart the HelmRelease creates."""

    chart: str = prop("The chart's name (HelmRepository) or folder (Git/OCIRepository).",
                      min_length=1, max_length=4096)
    version: str = prop("The chart version semver range; defaults to *.", default="*",
                        max_length=1024)
    source_ref: ChartTemplateSourceReference = prop("The source of the chart.")
    interval: str | None = prop("How often the chart is checked; defaults to the "
                                "HelmRelease's interval.", default=None,
                                pattern=DURATION_PATTERN)
    reconcile_strategy: ReconcileStrategy = prop("ChartVersion (default) or Revision.",
                                                 default="ChartVersion")
    values_files: tuple[str, ...] = prop("Values files merged into the chart's values.",
                                         default=())
    ignore_missing_values_files: bool = prop("Skip values files that do not exist.",
                                             default=False)
    verify: OCIRepositoryVerification | None = prop("Verify the chart's signatures.",
                                                    default=None)


@dataclass(frozen=True, kw_only=True)
class HelmChartTemplateObjectMeta:
    """Labels and annotations of the created HelmChart."""

    labels: Mapping[str, str] = prop("Labels.", default_factory=dict)
    annotations: Mapping[str, str] = prop("Annotations.", default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class HelmChartTemplate:
    """A HelmChart the HelmRelease creates and owns, named <namespace>-<name>."""

    metadata: HelmChartTemplateObjectMeta | None = prop("Metadata of the HelmChart.",
                                                        default=None)
    spec: HelmChartTemplateSpec = prop("Spec of the HelmChart.")


@dataclass(frozen=True, kw_only=True)
class DependencyReference:
    """A HelmRelease that must be Ready first."""

    name: str = prop("Name of the referent.")
    namespace: str | None = prop("Namespace of the referent, defaults to the namespace of "
                                 "the HelmRelease.", default=None)


@dataclass(frozen=True, kw_only=True)
class ValuesReference:
    """Values from a ConfigMap or Secret in the HelmRelease's namespace."""

    kind: ValuesKind = prop("ConfigMap or Secret.")
    name: str = prop("Name of the object.", min_length=1, max_length=NAME_MAX)
    values_key: str | None = prop("The data key holding the values (a YAML document, or "
                                  "the value itself with targetPath); defaults to "
                                  "values.yaml.", default=None, max_length=253)
    target_path: str | None = prop("Where the key's value is put in the values (dotted "
                                   "path); without it the key holds a YAML document.",
                                   default=None, max_length=250)
    optional: bool = prop("Do not fail when the object or key does not exist.",
                          default=False)


@dataclass(frozen=True, kw_only=True)
class InstallRemediation:
    """What to do when an install fails."""

    retries: int = prop("Retries before giving up; -1 retries forever.", default=0)
    ignore_test_failures: bool | None = prop("Do not count test failures.", default=None)
    remediate_last_failure: bool | None = prop(
        "Remediate (uninstall) the last failure too; defaults to true when retries > 0.",
        default=None)


@dataclass(frozen=True, kw_only=True)
class UpgradeRemediation:
    """What to do when an upgrade fails."""

    retries: int = prop("Retries before giving up; -1 retries forever.", default=0)
    ignore_test_failures: bool | None = prop("Do not count test failures.", default=None)
    remediate_last_failure: bool | None = prop(
        "Remediate the last failure too; defaults to true when retries > 0.", default=None)
    strategy: RemediationStrategy | None = prop("rollback (default) or uninstall.",
                                                default=None)


@dataclass(frozen=True, kw_only=True)
class Strategy:
    """How failures are handled: RemediateOnFailure (remediation blocks) or
    RetryOnFailure (no remediation, retried every retryInterval)."""

    name: StrategyName = prop("RemediateOnFailure or RetryOnFailure.")
    retry_interval: str | None = prop("Time between retries with RetryOnFailure; "
                                      "defaults to 5m.", default=None,
                                      pattern=DURATION_PATTERN)


@dataclass(frozen=True, kw_only=True)
class Install:
    """``helm install`` settings."""

    timeout: str | None = prop("Timeout of the install; defaults to spec.timeout.",
                               default=None, pattern=DURATION_PATTERN)
    remediation: InstallRemediation | None = prop("Install failure remediation.",
                                                  default=None)
    strategy: Strategy | None = prop("Failure strategy.", default=None)
    disable_wait: bool = prop("Do not wait for resources to be ready.", default=False)
    disable_wait_for_jobs: bool = prop("Do not wait for Jobs to complete.", default=False)
    disable_hooks: bool = prop("Do not run hooks.", default=False)
    disable_open_api_validation: bool = prop("Do not validate against the OpenAPI schema.",
                                             default=False, json="disableOpenAPIValidation")
    disable_schema_validation: bool = prop("Do not validate values against the chart's "
                                           "JSON schema.", default=False)
    replace: bool = prop("Reuse the name of an uninstalled release.", default=False)
    skip_crds: bool = prop("Deprecated: use crds: Skip.", default=False)
    crds: CRDsPolicy | None = prop("Skip, Create (default: Helm creates the chart's"
                                   " crds/) or CreateReplace (the controller applies them,"
                                   " updating existing ones).", default=None)
    create_namespace: bool = prop("Create the target namespace.", default=False)


@dataclass(frozen=True, kw_only=True)
class Upgrade:
    """``helm upgrade`` settings."""

    timeout: str | None = prop("Timeout of the upgrade; defaults to spec.timeout.",
                               default=None, pattern=DURATION_PATTERN)
    remediation: UpgradeRemediation | None = prop("Upgrade failure remediation.",
                                                  default=None)
    strategy: Strategy | None = prop("Failure strategy.", default=None)
    disable_wait: bool = prop("Do not wait for resources to be ready.", default=False)
    disable_wait_for_jobs: bool = prop("Do not wait for Jobs to complete.", default=False)
    disable_hooks: bool = prop("Do not run hooks.", default=False)
    disable_open_api_validation: bool = prop("Do not validate against the OpenAPI schema.",
                                             default=False, json="disableOpenAPIValidation")
    disable_schema_validation: bool = prop("Do not validate values against the chart's "
                                           "JSON schema.", default=False)
    force: bool = prop("Replace objects that cannot be patched.", default=False)
    preserve_values: bool = prop("Reuse the last release's values (not supported).",
                                 default=False)
    cleanup_on_fail: bool = prop("Delete new objects when the upgrade fails.",
                                 default=False)
    crds: CRDsPolicy | None = prop("Skip (default), Create (new CRDs only) or"
                                   " CreateReplace (create and update): the controller"
                                   " applies the chart's crds/ before upgrading.",
                                   default=None)


@dataclass(frozen=True, kw_only=True)
class Rollback:
    """``helm rollback`` settings (used by upgrade remediation)."""

    timeout: str | None = prop("Timeout of the rollback.", default=None,
                               pattern=DURATION_PATTERN)
    disable_wait: bool = prop("Do not wait for resources to be ready.", default=False)
    disable_wait_for_jobs: bool = prop("Do not wait for Jobs to complete.", default=False)
    disable_hooks: bool = prop("Do not run hooks.", default=False)
    recreate: bool = prop("Recreate pods (removed from Helm 4: refused).", default=False)
    force: bool = prop("Replace objects that cannot be patched.", default=False)
    cleanup_on_fail: bool = prop("Delete new objects when the rollback fails.",
                                 default=False)


@dataclass(frozen=True, kw_only=True)
class Uninstall:
    """``helm uninstall`` settings (deletion and remediation)."""

    timeout: str | None = prop("Timeout of the uninstall.", default=None,
                               pattern=DURATION_PATTERN)
    disable_hooks: bool = prop("Do not run hooks.", default=False)
    keep_history: bool = prop("Keep the release history.", default=False)
    disable_wait: bool = prop("Do not wait for resources to be deleted.", default=False)
    deletion_propagation: Propagation | None = prop("background (default), foreground or "
                                                    "orphan.", default=None)


@dataclass(frozen=True, kw_only=True)
class Filter:
    """A test hook selected (or, with exclude, left out) by name."""

    name: str = prop("Name of the test hook.", min_length=1, max_length=253)
    exclude: bool = prop("Leave this test out instead of selecting it.", default=False)


@dataclass(frozen=True, kw_only=True)
class Test:
    """``helm test`` after every install and upgrade."""

    __test__ = False  # not a pytest class

    enable: bool = prop("Run the chart's test hooks after install and upgrade.",
                        default=False)
    timeout: str | None = prop("Timeout of the tests; defaults to spec.timeout.",
                               default=None, pattern=DURATION_PATTERN)
    ignore_failures: bool = prop("A failed test does not fail the release.", default=False)
    filters: tuple[Filter, ...] = prop("Test hooks to run (or leave out).", default=())


@dataclass(frozen=True, kw_only=True)
class HelmReleaseSpec:
    """HelmReleaseSpec defines the desired state of a Helm release."""

    chart: HelmChartTemplate | None = prop(
        "A HelmChart template: the HelmChart <namespace>-<name> is created and owned.",
        default=None)
    chart_ref: CrossNamespaceSourceReference | None = prop(
        "The chart: an OCIRepository (chart layer, operation copy) or a HelmChart.",
        default=None)
    interval: str = prop("How often the release is reconciled.", pattern=DURATION_PATTERN)
    timeout: str | None = prop("Timeout of each Helm action; defaults to 5m.", default=None,
                               pattern=DURATION_PATTERN)
    release_name: str | None = prop("The release name; defaults to [targetNamespace-]name.",
                                    default=None, min_length=1, max_length=53)
    target_namespace: str | None = prop("Namespace the release is installed in.",
                                        default=None, min_length=1,
                                        max_length=NAMESPACE_MAX)
    storage_namespace: str | None = prop("Namespace of the release's storage Secrets.",
                                         default=None, min_length=1,
                                         max_length=NAMESPACE_MAX)
    depends_on: tuple[DependencyReference, ...] = prop(
        "HelmReleases that must be Ready first.", default=())
    max_history: int | None = prop("Release revisions kept; 0 keeps all, default 5.",
                                   default=None, minimum=0)
    service_account_name: str | None = prop("The ServiceAccount impersonated by Helm.",
                                            default=None, min_length=1, max_length=253)
    persistent_client: bool | None = prop("Accepted for compatibility: every action runs a "
                                          "fresh Helm client.", default=None)
    suspend: bool = prop("Suspend reconciliation.", default=False)
    values_from: tuple[ValuesReference, ...] = prop(
        "ConfigMaps and Secrets whose values are merged in order, before values.",
        default=())
    install: Install | None = prop("Install settings.", default=None)
    upgrade: Upgrade | None = prop("Upgrade settings.", default=None)
    rollback: Rollback | None = prop("Rollback settings.", default=None)
    uninstall: Uninstall | None = prop("Uninstall settings.", default=None)
    test: Test | None = prop("helm test settings.", default=None)

    @property
    def interval_seconds(self) -> float:
        """``interval`` in seconds."""
        return parse_duration(self.interval)

    @property
    def timeout_seconds(self) -> float:
        """``timeout`` in seconds (5m when unset, as Flux)."""
        return parse_duration(self.timeout or "5m")


# -- status --------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class TestHookStatus:
    """The last run of a test hook."""

    __test__ = False  # not a pytest class

    last_started: str | None = prop("When it started.", default=None, fmt="date-time")
    last_completed: str | None = prop("When it completed.", default=None, fmt="date-time")
    phase: str | None = prop("Succeeded or Failed.", default=None)


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """One release revision, as Flux records it."""

    api_version: str | None = prop("Version of this snapshot format.", default=None)
    digest: str = prop("Digest of the release (its manifest).")
    name: str = prop("Release name.")
    namespace: str = prop("Release namespace.")
    version: int = prop("Release revision.")
    status: str = prop("Helm's status of the revision.")
    chart_name: str = prop("Chart name.")
    chart_version: str = prop("Chart version.")
    app_version: str | None = prop("Chart appVersion.", default=None)
    config_digest: str = prop("Digest of the values.")
    first_deployed: str | None = prop("When the release was first deployed.", default=None,
                                      fmt="date-time")
    last_deployed: str | None = prop("When this revision was deployed.", default=None,
                                     fmt="date-time")
    deleted: str | None = prop("When the release was uninstalled.", default=None,
                               fmt="date-time")
    test_hooks: Mapping[str, TestHookStatus] | None = prop(
        "The test hooks of the revision and their last run.", default=None)


@dataclass(frozen=True, kw_only=True)
class HelmReleaseStatus:
    """HelmReleaseStatus defines the observed state of a HelmRelease."""

    observed_generation: int | None = prop("The last observed generation.", default=None)
    last_handled_reconcile_at: str | None = prop(
        "The value of the requestedAt annotation last handled.", default=None)
    conditions: tuple[Condition, ...] = prop("Conditions of the HelmRelease.", default=())
    helm_chart: str | None = prop("namespace/name of the HelmChart used.", default=None)
    storage_namespace: str | None = prop("Where the release is stored.", default=None)
    history: tuple[Snapshot, ...] = prop("Release revisions, newest first.", default=(),
                                         max_items=HISTORY_LIMIT)
    last_attempted_release_action: str | None = prop("install or upgrade.", default=None)
    failures: int | None = prop("Failures of the current configuration.", default=None)
    install_failures: int | None = prop("Install failures of the current configuration.",
                                        default=None)
    upgrade_failures: int | None = prop("Upgrade failures of the current configuration.",
                                        default=None)
    last_attempted_revision: str | None = prop("The chart revision last attempted.",
                                               default=None)
    last_attempted_revision_digest: str | None = prop(
        "The digest of the chart artifact last attempted.", default=None)
    last_attempted_values_checksum: str | None = prop("Deprecated (Flux).", default=None)
    last_attempted_config_digest: str | None = prop("The values digest last attempted.",
                                                    default=None)
    last_attempted_generation: int | None = prop("The generation last attempted.",
                                                 default=None)
    observed_post_renderers_digest: str | None = prop(
        "The digest of the post-renderers last attempted.", default=None)


# -- object --------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class HelmRelease:
    """A HelmRelease object: metadata, spec, values, and the free-form fields given."""

    metadata: ObjectMeta
    spec: HelmReleaseSpec
    values: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: Free-form spec fields present (``chart``, ``test``...), as given.
    freeform: Mapping[str, Any] = field(default_factory=dict, repr=False)
    status: HelmReleaseStatus = field(default_factory=HelmReleaseStatus)

    @property
    def ready(self) -> Condition | None:
        """The Ready condition, if any."""
        return find_condition(self.status.conditions, READY)

    @property
    def release_namespace(self) -> str:
        """Where the release's objects go."""
        return self.spec.target_namespace or self.metadata.namespace

    @property
    def release_name(self) -> str:
        """Flux's default: ``[<targetNamespace>-]<name>``, shortened past 53 characters."""
        if self.spec.release_name:
            return self.spec.release_name
        name = self.metadata.name
        if self.spec.target_namespace:
            name = f"{self.spec.target_namespace}-{name}"
        if len(name) > 53:
            digest = hashlib.sha256(name.encode()).hexdigest()[:12]
            name = f"{name[:40]}-{digest}"
        return name

    @property
    def chart_namespace(self) -> str:
        """Where the chart source is: the templated HelmChart's namespace, or chartRef's."""
        if self.spec.chart is not None:
            return self.spec.chart.spec.source_ref.namespace or self.metadata.namespace
        assert self.spec.chart_ref is not None
        return self.spec.chart_ref.namespace or self.metadata.namespace

    @property
    def chart_name(self) -> str:
        """The HelmChart Flux names after the release: ``<namespace>-<name>``."""
        return f"{self.metadata.namespace}-{self.metadata.name}"

    @property
    def storage_namespace(self) -> str:
        """Where Helm stores the release (the release namespace by default)."""
        return self.spec.storage_namespace or self.release_namespace


def parse_helmrelease(obj: Mapping[str, Any]) -> HelmRelease:
    """Parse a HelmRelease custom object dict (``ValidationError`` on a bad spec); a
    status that does not parse is replaced by an empty one."""
    meta, what = parse_object_meta(obj, KIND)
    raw = obj.get("spec")
    spec_in = dict(raw) if isinstance(raw, Mapping) else raw
    freeform: dict[str, Any] = {}
    values: Mapping[str, Any] = {}
    if isinstance(spec_in, dict):
        for key in FREEFORM_SCHEMAS:
            if key in spec_in:
                freeform[key] = spec_in.pop(key)
        v = freeform.pop("values", None)
        if v is not None and not isinstance(v, Mapping):
            raise ValidationError(["spec.values: must be an object"], what)
        values = dict(v or {})
    spec = from_dict(HelmReleaseSpec, spec_in, path="spec", what=what)
    if (spec.chart_ref is None) == (spec.chart is None):
        raise ValidationError(["spec: exactly one of chartRef or chart is required"], what)
    status = parse_status(HelmReleaseStatus, obj)
    return HelmRelease(metadata=meta, spec=spec, values=values, freeform=freeform,
                       status=status)
