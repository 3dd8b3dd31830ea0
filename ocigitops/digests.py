"""Content digests: the one place that parses them and hashes content by them.

Only the two algorithms the OCI image spec registers are accepted, in their canonical
encoding: ``sha256:`` + 64 and ``sha512:`` + 128 lower-case hex digits. Anything else
(``SHA256:``, upper-case hex, ``sha384:``, ``md5:``) is refused wherever a digest is read,
because a digest we cannot check is a digest an attacker chooses the bytes behind.
"""

from __future__ import annotations

import hashlib
import re
from typing import Protocol

from ocigitops.errors import InvalidDigestError

_DIGEST_RE = re.compile(r"^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})\Z")


class Hasher(Protocol):
    """What :func:`hasher` returns (a hashlib object)."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


def is_digest(value: object) -> bool:
    """True when ``value`` is a canonical sha256 or sha512 digest string."""
    return isinstance(value, str) and _DIGEST_RE.match(value) is not None


def check_digest(value: object, what: str = "digest") -> str:
    """Return ``value`` when it is a canonical digest, else raise InvalidDigestError."""
    if not is_digest(value):
        shown = repr(value)[:100]
        raise InvalidDigestError(
            f"{what} {shown} is not a canonical digest: expected sha256: and 64, or sha512:"
            " and 128, lower-case hex digits")
    return str(value)


def hasher(digest: str) -> Hasher:
    """A fresh hash object for the algorithm of ``digest`` (which must be canonical)."""
    alg = check_digest(digest).partition(":")[0]
    return hashlib.sha256() if alg == "sha256" else hashlib.sha512()


def hashed(h: Hasher, like: str) -> str:
    """The digest ``h`` (from :func:`hasher`) has computed so far, as ``alg:hex`` with the
    algorithm of ``like`` (the digest it was made for)."""
    return f"{like.partition(':')[0]}:{h.hexdigest()}"


def digest_of(data: bytes, like: str = "sha256:") -> str:
    """The digest of ``data`` with the algorithm of ``like`` (sha256 by default)."""
    alg = "sha512" if like.startswith("sha512:") else "sha256"
    return f"{alg}:{hashlib.new(alg, data).hexdigest()}"


def matches(digest: str, data: bytes) -> bool:
    """True when ``data`` hashes to the canonical ``digest``."""
    return is_digest(digest) and digest_of(data, digest) == digest
