"""The ``Instance`` kind: one ocigitops installation, reconciled by the operator.

Shaped as flux-operator's FluxInstance (read for behaviour, nothing copied): where the
controller comes from (``distribution``: a signed distribution artifact pushed by
``ocigitops dist push``, chosen by a semver range and verified with the same policy as an
OCIRepository's ``spec.verify``), which reconcilers run (``components``), the cluster's
profile (``cluster``), the source and Kustomization that sync the cluster's own
configuration (``sync``), and changes to the rendered manifests (``kustomize.patches``,
``commonMetadata``, ``storage``). Fields the operator does not implement are refused by it
with ``UnsupportedField`` (:func:`unsupported_fields`), never ignored.
"""

# prop() is this package's dataclass field specifier (it returns dataclasses.field).
# ruff: noqa: RUF009

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ocigitops.puller.api.kustomization import CommonMetadata, Patch, ResourceInventory
from ocigitops.puller.api.meta import (
    NAME_MAX,
    Condition,
    IntervalTimeoutMixin,
    ObjectMeta,
    parse_object,
)
from ocigitops.puller.api.ocirepository import OCIRepositoryVerification, VerificationStatus
from ocigitops.puller.api.schema import prop

KIND = "Instance"
PLURAL = "instances"
SINGULAR = "instance"
SHORT_NAMES = ("oginst",)

SyncKind = Literal["OCIRepository", "GitRepository"]
SizeProfile = Literal["small", "medium", "large"]
DEFAULT_DOMAIN = "cluster.local"
_DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"


@dataclass(frozen=True, kw_only=True)
class Distribution:
    """Where the controller's manifests come from: a distribution artifact
    (``ocigitops dist push``) in an OCI repository, one tag chosen by a semver range."""

    version: str = prop("A semver range over the artifact's tags (1.x, >=0.2.0 <0.3.0, "
                        "*); the highest matching tag is installed.", min_length=1)
    artifact: str = prop("The OCI repository of the distribution artifact, "
                         "oci://host/repository (no tag).", pattern=r"^oci://.+$")
    insecure: bool = prop("Plain HTTP to the registry (as OCIRepository's insecure).",
                          default=False)
    verify: OCIRepositoryVerification | None = prop(
        "Verify the chosen digest's signatures before anything is fetched (the same "
        "policy as OCIRepository's spec.verify; Secrets in the Instance's namespace).",
        default=None)
    pull_secret: str | None = prop(
        "A kubernetes.io/dockerconfigjson Secret in the Instance's namespace with the "
        "registry's credentials.", default=None, max_length=NAME_MAX)


@dataclass(frozen=True, kw_only=True)
class ClusterProfile:
    """The cluster's profile."""

    multitenant: bool = prop(
        "Lockdown: the controller refuses cross-namespace references "
        "(--no-cross-namespace-refs) and runs Kustomizations and HelmReleases without a "
        "serviceAccountName as the namespace's default ServiceAccount.", default=False)
    network_policy: bool = prop("NetworkPolicies for the controller (not implemented: "
                                "true is refused).", default=False)
    domain: str = prop("The cluster's DNS domain (only cluster.local is supported).",
                       default=DEFAULT_DOMAIN)
    size: SizeProfile | None = prop(
        "A size profile: the controller's concurrency, requests and limits.", default=None)


@dataclass(frozen=True, kw_only=True)
class Sync:
    """A source and a Kustomization, created and owned by the Instance, that sync the
    cluster's own configuration."""

    kind: SyncKind = prop("The source kind.", default="OCIRepository")
    url: str = prop("The source URL (oci://... or a Git URL).", min_length=1)
    ref: str = prop("OCIRepository: a tag or sha256 digest (default latest); "
                    "GitRepository: a branch (default main).", default="")
    path: str = prop("The path in the source to build.", default="./")
    interval: str = prop("How often the source and the Kustomization reconcile.",
                         default="1m", pattern=_DURATION)
    pull_secret: str | None = prop(
        "A Secret in the Instance's namespace with the source's credentials.",
        default=None, max_length=NAME_MAX)
    verify: OCIRepositoryVerification | None = prop(
        "OCIRepository only: the source's spec.verify.", default=None)


@dataclass(frozen=True, kw_only=True)
class KustomizeChanges:
    """Changes to the rendered manifests."""

    patches: tuple[Patch, ...] = prop("Strategic merge or JSON 6902 patches applied to "
                                      "the distribution's manifests, after the operator's "
                                      "own changes.", default=())


@dataclass(frozen=True, kw_only=True)
class Storage:
    """The controller's artifact cache volume."""

    size: str | None = prop("The cache's size limit (an emptyDir sizeLimit, 10Gi).",
                            default=None)
    storage_class: str | None = prop("A StorageClass for a PersistentVolumeClaim (not "
                                     "implemented: refused).", json="class", default=None)


@dataclass(frozen=True, kw_only=True)
class Uninstall:
    """What deleting the Instance removes besides the controller."""

    remove_crds: bool = prop("Also delete the CustomResourceDefinitions (and with them "
                             "every object of those kinds).", json="removeCRDs",
                             default=False)


@dataclass(frozen=True, kw_only=True)
class InstanceSpec(IntervalTimeoutMixin):
    """InstanceSpec defines the desired ocigitops installation."""

    distribution: Distribution = prop("Where the controller's manifests come from.")
    components: tuple[str, ...] = prop(
        "The reconcilers the controller runs (controller run --controllers names); empty: "
        "all.", default=())
    cluster: ClusterProfile | None = prop("The cluster's profile.", default=None)
    sync: Sync | None = prop("Sync the cluster's own configuration.", default=None)
    kustomize: KustomizeChanges | None = prop("Changes to the manifests.", default=None)
    common_metadata: CommonMetadata | None = prop(
        "Labels and annotations added to every object installed.", default=None)
    wait: bool = prop("Wait for every installed object to be ready (kstatus) before "
                      "Ready=True.", default=True)
    timeout: str = prop("How long an install or upgrade (apply and wait) may take.",
                        default="5m", pattern=_DURATION)
    interval: str = prop("How often the artifact's tags are polled for a new version.",
                         default="10m", pattern=_DURATION)
    storage: Storage | None = prop("The artifact cache volume.", default=None)
    uninstall: Uninstall | None = prop("What deletion removes.", default=None)
    suspend: bool = prop("Stop reconciling.", default=False)


@dataclass(frozen=True, kw_only=True)
class ComponentStatus:
    """One reconciler the controller runs, and its image."""

    name: str = prop("The --controllers name.")
    image: str = prop("The image repository.")
    digest: str = prop("The image digest (empty when the image is not pinned).",
                       default="")


@dataclass(frozen=True, kw_only=True)
class InstanceStatus:
    """InstanceStatus defines the observed state of an Instance."""

    observed_generation: int | None = prop("The last observed generation.", default=None)
    conditions: tuple[Condition, ...] = prop("Conditions of the Instance.", default=())
    last_applied_revision: str | None = prop(
        "The distribution revision last applied (<tag>@sha256:<digest>).", default=None)
    last_attempted_revision: str | None = prop(
        "The distribution revision last attempted.", default=None)
    last_handled_reconcile_at: str | None = prop(
        "The value of the requestedAt annotation last handled.", default=None)
    inventory: ResourceInventory | None = prop("The objects applied.", default=None)
    components: tuple[ComponentStatus, ...] = prop("The reconcilers installed.",
                                                   default=())
    verification: VerificationStatus | None = prop(
        "Which authorities verified the distribution, for which digest.", default=None)


@dataclass(frozen=True, kw_only=True)
class Instance:
    """An Instance object: metadata, spec and status."""

    metadata: ObjectMeta
    spec: InstanceSpec
    status: InstanceStatus = field(default_factory=InstanceStatus)


def parse_instance(obj: Mapping[str, Any]) -> Instance:
    """Parse an Instance dict (``ValidationError`` naming every problem)."""
    meta, spec, status = parse_object(obj, KIND, InstanceSpec, InstanceStatus)
    return Instance(metadata=meta, spec=spec, status=status)


def unsupported_fields(spec: InstanceSpec) -> list[str]:
    """The fields set to something the operator does not implement (refused with
    ``UnsupportedField``, Stalled: nothing is installed)."""
    out: list[str] = []
    if spec.cluster is not None:
        if spec.cluster.network_policy:
            out.append("spec.cluster.networkPolicy")
        if spec.cluster.domain != DEFAULT_DOMAIN:
            out.append("spec.cluster.domain")
    if spec.storage is not None and spec.storage.storage_class:
        out.append("spec.storage.class")
    if spec.sync is not None and spec.sync.kind == "GitRepository" and spec.sync.verify:
        out.append("spec.sync.verify (GitRepository)")
    return out
