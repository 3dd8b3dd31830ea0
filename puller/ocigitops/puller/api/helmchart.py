"""HelmChart (``ocigitops.dev/v1``): Flux's source.toolkit.fluxcd.io/v1 HelmChart.

A HelmChart produces a chart archive (``.tgz``) as its artifact, from:

- a **HelmRepository** (``chart`` is the chart's name, ``version`` a semver range): the
  chart is downloaded from the index (HTTP/S) or pulled from the registry (type oci);
- a **GitRepository** or an **OCIRepository** (``chart`` is the path of the chart folder in
  the source's artifact): the folder is packaged.

``valuesFiles`` are merged (the last wins) into the packaged chart's ``values.yaml``.
``verify`` takes OCIRepository's verification, field for field (Flux's form and the policy
form): for charts pulled from an OCI HelmRepository the chart's manifest digest is
verified; for an OCIRepository source the source must have verified its artifact
(``spec.verify`` on the OCIRepository), since that is where the signature is checked.
"""

# prop() is this package's dataclass field specifier (it returns dataclasses.field).
# ruff: noqa: RUF009

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ocigitops.duration import DURATION_PATTERN
from ocigitops.puller.api.meta import (
    NAME_MAX,
    Condition,
    IntervalMixin,
    ObjectMeta,
    ReadyMixin,
    parse_object,
)
from ocigitops.puller.api.ocirepository import (
    Artifact,
    OCIRepositoryVerification,
    VerificationStatus,
)
from ocigitops.puller.api.schema import FieldError, prop

KIND = "HelmChart"
PLURAL = "helmcharts"
SINGULAR = "helmchart"
SHORT_NAMES = ("hc",)

ChartSourceKind = Literal["HelmRepository", "GitRepository", "OCIRepository"]
ReconcileStrategy = Literal["ChartVersion", "Revision"]

#: Bounds on hostile specs: a real chart has a handful of values files.
MAX_VALUES_FILES = 64
PATH_MAX = 4096


@dataclass(frozen=True, kw_only=True)
class LocalHelmChartSourceReference:
    """The source the chart is available at, in the HelmChart's namespace."""

    api_version: str | None = prop("API version of the referent.", default=None)
    kind: ChartSourceKind = prop("Kind of the referent: HelmRepository, GitRepository or "
                                 "OCIRepository.")
    name: str = prop("Name of the referent.", min_length=1, max_length=NAME_MAX)


@dataclass(frozen=True, kw_only=True)
class HelmChartSpec(IntervalMixin):
    """HelmChartSpec specifies the desired state of a Helm chart."""

    chart: str = prop("The chart's name (HelmRepository) or the path of its folder in the "
                      "source (GitRepository, OCIRepository).", min_length=1,
                      max_length=PATH_MAX)
    version: str = prop("The chart version semver range (HelmRepository only); defaults to "
                        "the latest, *.", default="*", schema_default="*", max_length=1024)
    source_ref: LocalHelmChartSourceReference = prop("The source the chart is available at.")
    interval: str = prop("How often the source is checked for a new chart.",
                         pattern=DURATION_PATTERN)
    reconcile_strategy: ReconcileStrategy = prop(
        "What makes a new artifact: ChartVersion (a new chart version) or Revision (a new "
        "source revision too).", default="ChartVersion", schema_default="ChartVersion")
    values_files: tuple[str, ...] = prop(
        "Values files merged in order (the last wins) into the packaged chart's values.yaml;"
        " paths relative to the chart (HelmRepository) or to the source root.", default=(),
        max_items=MAX_VALUES_FILES,
        extra={"items": {"type": "string", "minLength": 1, "maxLength": PATH_MAX}})
    ignore_missing_values_files: bool = prop(
        "Skip values files that do not exist instead of failing.", default=False)
    suspend: bool = prop("Suspend reconciliation of this source.", default=False)
    verify: OCIRepositoryVerification | None = prop(
        "Verify the chart's signatures (charts from an OCI HelmRepository), or require the "
        "OCIRepository source to have verified its artifact.", default=None)

    def __post_init__(self) -> None:
        for i, v in enumerate(self.values_files):
            if not v or len(v) > PATH_MAX:
                raise FieldError(f"valuesFiles[{i}]", "must be a path of 1 to "
                                 f"{PATH_MAX} characters")


@dataclass(frozen=True, kw_only=True)
class HelmChartStatus:
    """HelmChartStatus records the observed state of the HelmChart."""

    observed_generation: int | None = prop("The last observed generation.", default=None)
    observed_source_artifact_revision: str | None = prop(
        "The revision of the source artifact the chart was last built from.", default=None)
    observed_chart_name: str | None = prop("The last resolved chart name.", default=None)
    observed_values_files: tuple[str, ...] | None = prop(
        "The values files that were found and merged into the last artifact.", default=None)
    conditions: tuple[Condition, ...] = prop("Conditions holds the conditions for the "
                                             "HelmChart.", default=())
    url: str | None = prop("Where the last chart can be read (the controller's content "
                           "cache).", default=None)
    artifact: Artifact | None = prop("The last chart built.", default=None)
    last_handled_reconcile_at: str | None = prop(
        "The value of the requestedAt annotation last handled.", default=None)
    verification: VerificationStatus | None = prop(
        "Which authorities verified the chart.", default=None)


@dataclass(frozen=True, kw_only=True)
class HelmChart(ReadyMixin):
    """A HelmChart object: metadata, spec and status."""

    metadata: ObjectMeta
    spec: HelmChartSpec
    status: HelmChartStatus = field(default_factory=HelmChartStatus)


def parse_helm_chart(obj: Mapping[str, Any]) -> HelmChart:
    """Parse a HelmChart custom object dict (``ValidationError`` on a bad spec); a status
    that does not parse is replaced by an empty one."""
    meta, spec, status = parse_object(obj, KIND, HelmChartSpec, HelmChartStatus)
    return HelmChart(metadata=meta, spec=spec, status=status)
