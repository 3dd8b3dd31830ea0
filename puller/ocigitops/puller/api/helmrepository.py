"""HelmRepository (``ocigitops.dev/v1``): Flux's source.toolkit.fluxcd.io/v1 HelmRepository.

``type: default`` (or unset) is a Helm HTTP(S) repository: its ``index.yaml`` is fetched
each interval (a conditional request: nothing is downloaded when it did not change) and
stored as the artifact, revision ``sha256:<digest of the index>``. ``type: oci`` is
accepted as Flux accepts it: it has no index and no artifact; HelmCharts referring to it
pull ``<url>/<chart>:<version>`` from the registry (OCIRepository is the recommended way to
consume OCI charts, as Flux recommends it).
"""

# prop() is this package's dataclass field specifier (it returns dataclasses.field).
# ruff: noqa: RUF009

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ocigitops.duration import DURATION_PATTERN, TIMEOUT_PATTERN, parse_duration
from ocigitops.puller.api.meta import (
    Condition,
    LocalObjectReference,
    ObjectMeta,
    ReadyMixin,
    parse_object,
)
from ocigitops.puller.api.ocirepository import Artifact
from ocigitops.puller.api.schema import FieldError, prop

KIND = "HelmRepository"
PLURAL = "helmrepositories"
SINGULAR = "helmrepository"
SHORT_NAMES = ("helmrepo",)

Provider = Literal["generic", "aws", "azure", "gcp"]
RepositoryType = Literal["default", "oci"]

#: Flux's default interval when ``spec.interval`` is not set.
DEFAULT_INTERVAL = "1m"


@dataclass(frozen=True, kw_only=True)
class HelmRepositorySpec:
    """HelmRepositorySpec specifies the required configuration to produce an Artifact for
    a Helm repository index YAML."""

    url: str = prop("The Helm repository URL: http(s):// for an index, oci:// for an OCI "
                    "repository (type oci).", pattern=r"^(http|https|oci)://.*$")
    secret_ref: LocalObjectReference | None = prop(
        "A Secret with username and password for HTTP basic authentication (for type oci: "
        "a dockerconfigjson Secret, or username and password).", default=None)
    cert_secret_ref: LocalObjectReference | None = prop(
        "A Secret with tls.crt and tls.key for mutual TLS and ca.crt for a private CA.",
        default=None)
    pass_credentials: bool = prop(
        "Send the credentials to chart URLs on another host than the index's (off: they "
        "could be stolen by whoever controls that host).", default=False)
    insecure: bool = prop("Allow plain HTTP to an OCI registry (type oci only).",
                          default=False)
    interval: str | None = prop("How often the index is checked; defaults to 1m.",
                                default=None, pattern=DURATION_PATTERN)
    timeout: str | None = prop("The timeout of the index fetch, defaults to 60s.",
                               default=None, pattern=TIMEOUT_PATTERN)
    suspend: bool = prop("Suspend reconciliation of this source.", default=False)
    provider: Provider = prop(
        "The provider of credentials for type oci: generic (the default), aws, azure, gcp.",
        default="generic", schema_default="generic")
    type: RepositoryType | None = prop("The repository type: default (HTTP/S) or oci.",
                                       default=None)

    def __post_init__(self) -> None:
        scheme = self.url.partition("://")[0]
        if self.is_oci != (scheme == "oci"):
            raise FieldError("url", f"{self.url!r}: type {self.type or 'default'} needs an "
                             + ("oci:// URL" if self.is_oci else "http:// or https:// URL"))
        host = self.url.partition("://")[2].partition("/")[0]
        if not host:
            raise FieldError("url", f"{self.url!r} has no host")

    @property
    def is_oci(self) -> bool:
        """True for ``type: oci``."""
        return self.type == "oci"

    @property
    def interval_seconds(self) -> float:
        """``interval`` in seconds (default 1m)."""
        return parse_duration(self.interval or DEFAULT_INTERVAL)

    @property
    def timeout_seconds(self) -> float:
        """``timeout`` in seconds (default 60s)."""
        return parse_duration(self.timeout or "60s")


@dataclass(frozen=True, kw_only=True)
class HelmRepositoryStatus:
    """HelmRepositoryStatus records the observed state of the HelmRepository."""

    observed_generation: int | None = prop("The last observed generation.", default=None)
    conditions: tuple[Condition, ...] = prop("Conditions holds the conditions for the "
                                             "HelmRepository.", default=())
    url: str | None = prop("Where the last index can be read (the controller's content "
                           "cache).", default=None)
    artifact: Artifact | None = prop("The last index fetched.", default=None)
    last_handled_reconcile_at: str | None = prop(
        "The value of the requestedAt annotation last handled.", default=None)


@dataclass(frozen=True, kw_only=True)
class HelmRepository(ReadyMixin):
    """A HelmRepository object: metadata, spec and status."""

    metadata: ObjectMeta
    spec: HelmRepositorySpec
    status: HelmRepositoryStatus = field(default_factory=HelmRepositoryStatus)


def parse_helm_repository(obj: Mapping[str, Any]) -> HelmRepository:
    """Parse a HelmRepository custom object dict (``ValidationError`` on a bad spec); a
    status that does not parse is replaced by an empty one."""
    meta, spec, status = parse_object(obj, KIND, HelmRepositorySpec, HelmRepositoryStatus)
    return HelmRepository(metadata=meta, spec=spec, status=status)
