"""Content-addressed artifact cache: the hand-off between sources and their consumers.

Sources store the verified layer (tar+gzip) under its digest; consumers extract it into a
private directory for each build. Every read re-hashes the file, so a corrupted or
tampered cache entry is detected, deleted and refetched rather than applied
(docs/architecture.md decision 1: no artifact HTTP server inside one process).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import IO

from ocigitops.digests import Hasher, check_digest, hashed, hasher, is_digest
from ocigitops.errors import DigestMismatchError, OcigitopsError
from ocigitops.extract import DEFAULT_LIMITS, Limits, commit_dir, extract_stream, staging_dir


class CorruptCacheError(DigestMismatchError):
    """A cached artifact no longer hashes to its digest (it was deleted)."""


class _HashingReader:
    def __init__(self, f: IO[bytes], digest: str) -> None:
        self._f = f
        self.sha: Hasher = hasher(digest)

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.sha.update(data)
        return data


class ArtifactCache:
    """Layer blobs under ``root/sha256/<hex>`` (and ``root/sha512/<hex>``)."""

    ALGORITHMS = ("sha256", "sha512")

    def __init__(self, root: Path) -> None:
        self.root = root
        for alg in self.ALGORITHMS:
            (root / alg).mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        """Where the blob of ``digest`` lives (whether or not it is there).

        Raises InvalidDigestError for anything but a canonical sha256/sha512 digest.
        """
        alg, _, hexpart = check_digest(digest, "artifact digest").partition(":")
        return self.root / alg / hexpart

    def has(self, digest: str) -> bool:
        """True when the blob is cached (its content is checked on read)."""
        return self.path(digest).is_file()

    async def store(self, digest: str, chunks: AsyncIterator[bytes]) -> Path:
        """Write a verified blob stream into the cache atomically."""
        target = self.path(digest)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        sha = hasher(digest)
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    sha.update(chunk)
                    out.write(chunk)
            actual = hashed(sha, digest)
            if actual != digest:
                raise DigestMismatchError(f"artifact stream hashed to {actual}, expected"
                                          f" {digest}")
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return target

    def extract(self, digest: str, output: Path, limits: Limits = DEFAULT_LIMITS, *,
                deadline: float | None = None) -> int:
        """Extract the cached blob into ``output`` (replaced atomically), verifying it.

        Raises CorruptCacheError (and deletes the entry) when the file does not hash to
        ``digest``; the extracted tree is then discarded. ``deadline`` (a
        ``time.monotonic()`` value) stops a thread running this at that moment.
        """
        src = self.path(digest)
        staged = staging_dir(output)
        try:
            with open(src, "rb") as f:
                reader = _HashingReader(f, digest)
                tree = staged / "tree"
                tree.mkdir()
                failure: OcigitopsError | None = None
                count = 0
                try:
                    count = extract_stream(reader, tree, limits,  # type: ignore[arg-type]
                                           deadline=deadline)
                except OcigitopsError as e:
                    failure = e  # decide below: a corrupt cache entry or a bad artifact
                while reader.read(1024 * 1024):
                    pass  # hash the gzip trailer and anything after the tar end
            if hashed(reader.sha, digest) != digest:
                src.unlink(missing_ok=True)
                raise CorruptCacheError(f"cached artifact {digest} is corrupt: removed, it"
                                        " will be fetched again")
            if failure is not None:
                raise failure
            commit_dir(tree, output)
            return count
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def gc(self, keep: Iterable[str]) -> int:
        """Delete every cached blob not in ``keep``; returns how many were removed."""
        wanted = {self.path(d) for d in keep if is_digest(d)}
        removed = 0
        for alg in self.ALGORITHMS:
            for f in (self.root / alg).iterdir():
                if f not in wanted and not f.name.startswith("."):  # skip in-flight writes
                    f.unlink(missing_ok=True)
                    removed += 1
        return removed
