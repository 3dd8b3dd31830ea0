"""Typed errors shared by every part of ocigitops.

Every error's ``str()`` is one line a user can act on: what failed, and where it
could be fixed. The CLI prints it as ``error: <message>`` and exits with the error's
``exit_code`` (the scheme is :mod:`ocigitops.exitcodes`).
"""

from __future__ import annotations

from ocigitops import exitcodes


class OcigitopsError(Exception):
    """Base class of all errors ocigitops raises on purpose."""

    exit_code = exitcodes.FAILURE


class UsageError(OcigitopsError):
    """The command line or an input file is wrong in a way the user must fix."""

    exit_code = exitcodes.USAGE


class InvalidReferenceError(UsageError):
    """An OCI reference such as ``oci://host/repo:tag`` could not be parsed."""


class CredentialsError(OcigitopsError):
    """Credentials could not be read (docker config, credential helper, secret)."""

    exit_code = exitcodes.DENIED


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

    exit_code = exitcodes.UNREACHABLE


class AuthenticationError(RegistryError):
    """The registry refused the credentials (401) or the token exchange failed."""

    exit_code = exitcodes.DENIED


class PermissionDeniedError(RegistryError):
    """The registry accepted who we are but refused the operation (403)."""

    exit_code = exitcodes.DENIED


class NotFoundError(RegistryError):
    """A repository, manifest, tag or blob does not exist."""

    exit_code = exitcodes.NOT_FOUND


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

    exit_code = exitcodes.UNREACHABLE


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


class OutputConflictError(UsageError):
    """What is already in a pull's ``--output`` is in the way of the artifact (a file where
    the artifact has a folder, a symbolic link it would write through), or ``--clean``
    would delete a directory that is not the pull's to delete."""


class NotImplementedYetError(OcigitopsError):
    """A flag value Flux accepts that ocigitops does not implement yet (``--provider aws``)."""


class ConfigurationError(OcigitopsError):
    """Local configuration is missing or unreadable (a kubeconfig, a context)."""


class ClusterUnreachableError(OcigitopsError):
    """The Kubernetes API server could not be reached (refused, DNS, TLS, timeout)."""

    exit_code = exitcodes.UNREACHABLE


class AddressInUseError(OcigitopsError):
    """A server could not listen: its address is taken by another process."""


class InvalidAddressError(UsageError, ValueError):
    """A ``HOST:PORT`` listen address is malformed (a ValueError too, for older callers)."""
