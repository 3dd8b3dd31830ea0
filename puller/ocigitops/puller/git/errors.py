"""Typed errors of the Git client: one line each, naming what failed and never a secret.

Every class derives from a shared error of :mod:`ocigitops.errors`, so the CLI's exit codes
and the reconciler's reasons come from the type, never from words in a message.
"""

from __future__ import annotations

from ocigitops.errors import (
    DeadlineExceededError,
    NotFoundError,
    OcigitopsError,
    SizeLimitError,
    UnsafeArchiveError,
    UsageError,
)
from ocigitops.exitcodes import DENIED, NO, UNREACHABLE


class GitError(OcigitopsError):
    """A Git operation failed (the server answered with an error, a bad pack...)."""


class GitURLError(UsageError):
    """The repository URL is not one we accept (scheme, embedded credentials, form)."""


class GitAuthError(GitError):
    """The server refused the credentials, or the Secret does not hold usable ones."""

    exit_code = DENIED


class HostKeyError(GitAuthError):
    """The SSH server's host key is not the one pinned in ``known_hosts``."""


class GitUnreachableError(GitError):
    """The server could not be reached (refused, DNS, TLS handshake, proxy)."""

    exit_code = UNREACHABLE


class GitTimeoutError(DeadlineExceededError):
    """A Git operation did not finish within ``spec.timeout``."""


class RefNotFoundError(NotFoundError):
    """The branch, tag, semver range, ref name or commit is not in the repository."""


class GitLimitError(SizeLimitError):
    """A pack or tree is over a bound (objects, bytes, files, one file's size)."""


class UnsafePathError(UnsafeArchiveError):
    """A tree entry's name would escape the artifact (``..``, absolute, a ``.git``)."""


class UnsupportedGitFeatureError(GitError):
    """A spec field or provider this controller does not implement yet."""


class SignatureError(GitError):
    """A commit or tag signature did not verify against the trusted keys."""

    exit_code = NO


class UnsignedObjectError(SignatureError):
    """The commit or tag carries no signature."""


class UnknownKeyError(SignatureError):
    """The object is signed, but by a key that is not among the trusted ones."""


class BadSignatureError(SignatureError):
    """The signature does not match the object (tampered, or a wrong key id claimed)."""


class TrustedKeysError(SignatureError):
    """The verification Secret holds no usable key, or a key does not parse."""


__all__ = [
    "BadSignatureError", "GitAuthError", "GitError", "GitLimitError", "GitTimeoutError",
    "GitURLError", "GitUnreachableError", "HostKeyError", "RefNotFoundError",
    "SignatureError", "TrustedKeysError", "UnknownKeyError", "UnsafePathError",
    "UnsignedObjectError", "UnsupportedGitFeatureError",
]
