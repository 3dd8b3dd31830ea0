"""GitRepository (``ocigitops.dev/v1``): Flux's source.toolkit.fluxcd.io/v1 GitRepository,
same fields, same status. A Flux manifest migrates by changing its ``apiVersion``.

One addition: ``insecure`` (as OCIRepository's) is the explicit opt-in for a plain
``http://`` URL; without it such a URL is refused, because credentials and content would
travel in the clear.
"""

# prop() is this package's dataclass field specifier (it returns dataclasses.field).
# ruff: noqa: RUF009

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ocigitops.duration import DURATION_PATTERN, TIMEOUT_PATTERN
from ocigitops.puller.api.meta import (
    Condition,
    IntervalTimeoutMixin,
    LocalObjectReference,
    ObjectMeta,
    ReadyMixin,
    parse_object,
)
from ocigitops.puller.api.ocirepository import Artifact
from ocigitops.puller.api.schema import FieldError, prop

KIND = "GitRepository"
PLURAL = "gitrepositories"
SINGULAR = "gitrepository"
SHORT_NAMES = ("gitrepo",)

#: The abnormal-true condition of an include that is missing or has no artifact.
INCLUDE_UNAVAILABLE = "IncludeUnavailable"

GitProvider = Literal["generic", "aws", "azure", "github"]
GitVerificationMode = Literal["head", "HEAD", "Tag", "TagAndHEAD"]


@dataclass(frozen=True, kw_only=True)
class GitRepositoryRef:
    """GitRepositoryRef specifies the Git reference to resolve and checkout."""

    branch: str | None = prop("Branch to check out, defaults to 'master' if no other field "
                              "is defined.", default=None)
    tag: str | None = prop("Tag to check out, takes precedence over Branch.", default=None)
    semver: str | None = prop("SemVer tag expression to check out, takes precedence over "
                              "Tag.", default=None)
    name: str | None = prop("Name of the reference to check out; takes precedence over "
                            "Branch, Tag and SemVer (refs/heads/main, refs/pull/420/head).",
                            default=None)
    commit: str | None = prop("Commit SHA to check out, takes precedence over all reference "
                              "fields; with Branch, the commit must be in that branch.",
                              default=None)


@dataclass(frozen=True, kw_only=True)
class GitRepositoryVerification:
    """GitRepositoryVerification specifies the Git commit signature verification strategy."""

    mode: GitVerificationMode = prop(
        "Which Git object(s) to verify: HEAD (or head), Tag, TagAndHEAD.", default="HEAD",
        schema_default="HEAD")
    secret_ref: LocalObjectReference = prop(
        "A Secret with the trusted public keys: OpenPGP keys (*.asc, or any other name) and "
        "SSH keys in authorized_keys format (*.sshpub).")


@dataclass(frozen=True, kw_only=True)
class GitRepositoryInclude:
    """GitRepositoryInclude specifies a GitRepository whose artifact (sub-)contents are
    included, and where."""

    repository: LocalObjectReference = prop("The GitRepository whose artifact is included.")
    from_path: str | None = prop("The path to copy contents from, defaults to the root of "
                                 "the artifact.", default=None)
    to_path: str | None = prop("The path to copy contents to, defaults to the name of the "
                               "GitRepositoryRef.", default=None)

    @property
    def target(self) -> str:
        """Where the contents go: ``toPath``, else the included repository's name."""
        return self.to_path or self.repository.name


@dataclass(frozen=True, kw_only=True)
class GitRepositorySpec(IntervalTimeoutMixin):
    """GitRepositorySpec specifies the required configuration to produce an Artifact for a
    Git repository."""

    url: str = prop("The Git repository URL, an HTTP/S or SSH address.",
                    pattern=r"^(http|https|ssh)://.*$")
    secret_ref: LocalObjectReference | None = prop(
        "A Secret with credentials: username and password, or bearerToken (HTTPS); identity "
        "and known_hosts (SSH); ca.crt, tls.crt and tls.key (TLS).", default=None)
    provider: GitProvider = prop("The authentication provider: generic (the default), aws, "
                                 "azure, github.", default="generic")
    service_account_name: str | None = prop(
        "A ServiceAccount for the azure and aws providers.", default=None)
    interval: str = prop("How often the repository is checked for a new commit.",
                         pattern=DURATION_PATTERN)
    timeout: str = prop("The timeout of Git operations like cloning, defaults to 60s.",
                        default="60s", schema_default="60s", pattern=TIMEOUT_PATTERN)
    ref: GitRepositoryRef | None = prop(
        "The Git reference to resolve and monitor, defaults to the 'master' branch.",
        default=None)
    verify: GitRepositoryVerification | None = prop(
        "Verify the commit and/or tag signatures.", default=None)
    proxy_secret_ref: LocalObjectReference | None = prop(
        "A Secret with the proxy address, username and password.", default=None)
    ignore: str | None = prop("Exclusion rules in .sourceignore (.gitignore) format; "
                              "replaces the default exclusions.", default=None)
    suspend: bool = prop("Suspend reconciliation of this source.", default=False)
    recurse_submodules: bool = prop("Initialize all submodules (not supported yet: refused).",
                                    default=False)
    include: tuple[GitRepositoryInclude, ...] = prop(
        "GitRepositories whose artifacts are included in this one.", default=())
    sparse_checkout: tuple[str, ...] = prop(
        "Directories to check out; only these are in the artifact.", default=())
    insecure: bool = prop("Allow a plain http:// URL (credentials and content travel in "
                          "the clear).", default=False)

    def __post_init__(self) -> None:
        if self.service_account_name and self.provider not in ("azure", "aws"):
            raise FieldError("serviceAccountName", "serviceAccountName can only be set when "
                             "provider is 'azure' or 'aws'")
        for path in self.sparse_checkout:
            if path.startswith("/") or ".." in path.split("/"):
                raise FieldError("sparseCheckout", f"{path!r} must be a relative path "
                                 "without '..'")
        for i, inc in enumerate(self.include):
            for name, path in (("fromPath", inc.from_path or ""),
                               ("toPath", inc.to_path or "")):
                if path and ".." in path.replace("\\", "/").split("/"):
                    raise FieldError(f"include[{i}].{name}", f"{path!r} must stay inside"
                                     " the artifact (no '..')")


@dataclass(frozen=True, kw_only=True)
class GitRepositoryStatus:
    """GitRepositoryStatus records the observed state of a Git repository."""

    observed_generation: int | None = prop("The last observed generation.", default=None)
    conditions: tuple[Condition, ...] = prop("Conditions holds the conditions for the "
                                             "GitRepository.", default=())
    artifact: Artifact | None = prop("The last successful reconciliation's artifact.",
                                     default=None)
    included_artifacts: tuple[Artifact, ...] = prop(
        "The artifacts last included (spec.include).", default=())
    observed_ignore: str | None = prop("The spec.ignore of the current artifact.",
                                       default=None)
    observed_recurse_submodules: bool | None = prop(
        "The spec.recurseSubmodules of the current artifact.", default=None)
    observed_include: tuple[GitRepositoryInclude, ...] = prop(
        "The spec.include of the current artifact.", default=())
    observed_sparse_checkout: tuple[str, ...] = prop(
        "The spec.sparseCheckout of the current artifact.", default=())
    source_verification_mode: GitVerificationMode | None = prop(
        "The verification mode of the current artifact's revision.", default=None)
    last_handled_reconcile_at: str | None = prop(
        "The value of the requestedAt annotation last handled.", default=None)


@dataclass(frozen=True, kw_only=True)
class GitRepository(ReadyMixin):
    """A GitRepository object: metadata, spec and status."""

    metadata: ObjectMeta
    spec: GitRepositorySpec
    status: GitRepositoryStatus = field(default_factory=GitRepositoryStatus)


def parse_git_repository(obj: Mapping[str, Any]) -> GitRepository:
    """Parse a GitRepository custom object dict (``ValidationError`` on a bad spec); a
    status that does not parse is replaced by an empty one."""
    meta, spec, status = parse_object(obj, KIND, GitRepositorySpec, GitRepositoryStatus)
    return GitRepository(metadata=meta, spec=spec, status=status)


__all__ = ["INCLUDE_UNAVAILABLE", "KIND", "PLURAL", "GitRepository", "GitRepositoryInclude",
           "GitRepositoryRef", "GitRepositorySpec", "GitRepositoryStatus",
           "GitRepositoryVerification", "parse_git_repository"]
