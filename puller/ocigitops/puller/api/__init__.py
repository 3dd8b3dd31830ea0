"""API types of group ``ocigitops.dev/v1``: OCIRepository and Kustomization.

The dataclasses here are the single definition: :mod:`ocigitops.puller.crdgen` generates the CRDs
from them and :func:`parse_oci_repository` / :func:`parse_kustomization` parse custom
objects with the same rules and defaults.
"""

from ocigitops.duration import format_duration, parse_duration
from ocigitops.puller.api.kustomization import (
    Kustomization,
    KustomizationSpec,
    KustomizationStatus,
    inventory_id,
    parse_inventory_id,
    parse_kustomization,
)
from ocigitops.puller.api.meta import (
    API_VERSION,
    GROUP,
    RECONCILE_REQUESTED_AT,
    VERSION,
    Condition,
    LocalObjectReference,
    ObjectMeta,
)
from ocigitops.puller.api.ocirepository import (
    OCIRepository,
    OCIRepositorySpec,
    OCIRepositoryStatus,
    OCIRepositoryVerification,
    parse_oci_repository,
)
from ocigitops.puller.api.schema import ValidationError, from_dict, schema_for, to_dict

__all__ = [
    "API_VERSION",
    "GROUP",
    "RECONCILE_REQUESTED_AT",
    "VERSION",
    "Condition",
    "Kustomization",
    "KustomizationSpec",
    "KustomizationStatus",
    "LocalObjectReference",
    "OCIRepository",
    "OCIRepositorySpec",
    "OCIRepositoryStatus",
    "OCIRepositoryVerification",
    "ObjectMeta",
    "ValidationError",
    "format_duration",
    "from_dict",
    "inventory_id",
    "parse_duration",
    "parse_inventory_id",
    "parse_kustomization",
    "parse_oci_repository",
    "schema_for",
    "to_dict",
]
