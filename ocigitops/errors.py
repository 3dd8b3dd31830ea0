"""Typed errors shared by every part of ocigitops.

Every error's ``str()`` is one line a user can act on: what failed, and where it
could be fixed. The CLI prints it as ``error: <message>`` and exits non-zero.
"""

from __future__ import annotations


class OcigitopsError(Exception):
    """Base class of all errors ocigitops raises on purpose."""

    exit_code = 1


class UsageError(OcigitopsError):
    """The command line or an input file is wrong in a way the user must fix."""

    exit_code = 2


class InvalidReferenceError(UsageError):
    """An OCI reference such as ``oci://host/repo:tag`` could not be parsed."""


class CredentialsError(OcigitopsError):
    """Credentials could not be read (docker config, credential helper, secret)."""


class RegistryError(OcigitopsError):
    """A registry answered with an error.

    ``status`` is the HTTP status, ``code`` the distribution-spec error code when the
    registry sent one (``MANIFEST_UNKNOWN``, ``DENIED``...).
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 url: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.url = url


class RegistryUnreachableError(RegistryError):
    """The registry could not be reached (DNS, refused connection, TLS, timeout)."""


class AuthenticationError(RegistryError):
    """The registry refused the credentials (401) or the token exchange failed."""


class PermissionDeniedError(RegistryError):
    """The registry accepted who we are but refused the operation (403)."""


class NotFoundError(RegistryError):
    """A repository, manifest, tag or blob does not exist."""


class UnsupportedError(RegistryError):
    """The registry does not implement an optional API (for example referrers)."""


class DigestMismatchError(OcigitopsError):
    """Content did not hash to the digest it was requested by or declared with."""


class InvalidDigestError(DigestMismatchError):
    """A digest is not canonical sha256/sha512 (another algorithm, upper case, bad length)."""


class MalformedDocumentError(OcigitopsError):
    """A JSON document from the network is invalid, ambiguous (duplicate keys) or too deep."""


class DeadlineExceededError(OcigitopsError):
    """An operation did not finish within its overall time limit."""


class SizeMismatchError(OcigitopsError):
    """Content was shorter or longer than its descriptor said (truncated download)."""


class NotAnArtifactError(OcigitopsError):
    """A manifest is not an ocigitops/Flux artifact (wrong media type or layers)."""


class UnsafeArchiveError(OcigitopsError):
    """An archive holds an entry that could escape or damage the extraction target."""


class SizeLimitError(UnsafeArchiveError):
    """An archive or one of its files is larger than the configured limit."""


class RenderError(OcigitopsError):
    """Rendering manifests (kustomize, helm) failed or produced invalid objects."""


class ToolNotFoundError(OcigitopsError):
    """A required external program (kustomize, helm, git) is not installed."""
