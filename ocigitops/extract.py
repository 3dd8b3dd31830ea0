"""Safe extraction of artifact layers (tar+gzip) into a directory.

Refuses absolute paths, ``..`` components, links of any kind that could escape the
tree (hard links and symlinks are refused outright, as Flux does), device files,
FIFOs, and archives whose uncompressed size, per-file size or entry count exceeds the
limits. A gzip bomb is caught while decompressing, before its size is written anywhere.

Extraction goes to a private temporary directory next to the target and is renamed
into place only when the whole archive was read and verified: a broken archive never
leaves partial files in the output directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from ocigitops.errors import SizeLimitError, UnsafeArchiveError

#: Defaults no normal manifest tree reaches and every zip bomb does.
DEFAULT_MAX_TOTAL = 1024 * 1024 * 1024  # 1 GiB uncompressed
DEFAULT_MAX_FILE = 256 * 1024 * 1024    # 256 MiB per file
DEFAULT_MAX_ENTRIES = 200_000


@dataclass(frozen=True)
class Limits:
    """Bounds on what an archive may expand to."""

    max_total: int = DEFAULT_MAX_TOTAL
    max_file: int = DEFAULT_MAX_FILE
    max_entries: int = DEFAULT_MAX_ENTRIES


DEFAULT_LIMITS = Limits()


class BoundedGunzip:
    """A readable stream that gunzips ``src`` and fails past ``limit`` output bytes.

    zlib's ``max_length`` caps each step, so a bomb is stopped after at most ``limit``
    bytes were produced, never after expanding in memory.
    """

    def __init__(self, src: IO[bytes], limit: int) -> None:
        self._src = src
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""
        self._buf = b""
        self._out = 0
        self._limit = limit
        self._eof = False

    def _step(self) -> None:
        if not self._pending:
            self._pending = self._src.read(256 * 1024)
            if not self._pending:
                if not self._z.eof:
                    raise UnsafeArchiveError("archive is truncated: gzip stream ended early")
                self._eof = True
                return
        if self._z.eof:
            # Concatenated gzip members are legal (Go's reader accepts them too).
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = self._z.decompress(self._pending, 1024 * 1024)
        except zlib.error as e:
            raise UnsafeArchiveError(f"archive is not valid gzip: {e}") from e
        self._pending = self._z.unconsumed_tail or self._z.unused_data
        self._out += len(data)
        if self._out > self._limit:
            raise SizeLimitError(f"archive expands to more than {self._limit} bytes (limit):"
                                 " refusing a possible decompression bomb")
        self._buf += data

    def read(self, n: int = -1) -> bytes:
        want = n if n >= 0 else 1 << 62
        while len(self._buf) < want and not self._eof:
            self._step()
        out, self._buf = self._buf[:want], self._buf[want:]
        return out


def _check_name(name: str) -> PurePosixPath:
    if not name or "\\" in name or "\0" in name:
        raise UnsafeArchiveError(f"archive entry has an invalid name {name!r}")
    p = PurePosixPath(name)
    if p.is_absolute():
        raise UnsafeArchiveError(f"archive entry {name!r} has an absolute path")
    if any(part == ".." for part in p.parts):
        raise UnsafeArchiveError(f"archive entry {name!r} contains '..' (path traversal)")
    return p


def extract_stream(stream: IO[bytes], dest: Path, limits: Limits = DEFAULT_LIMITS) -> int:
    """Extract a tar+gzip stream into the existing empty directory ``dest``.

    Returns the number of files written. Raises UnsafeArchiveError/SizeLimitError.
    The caller owns ``dest`` and deletes it on failure (see :func:`extract_to`).
    """
    gunzip = BoundedGunzip(stream, limits.max_total + 64 * 1024 * 1024)
    total = files = entries = 0
    try:
        tf = tarfile.open(fileobj=gunzip, mode="r|")  # type: ignore[call-overload]  # noqa: SIM115
    except tarfile.TarError as e:
        raise UnsafeArchiveError(f"archive is not a valid tar: {e}") from e
    with tf:
        while True:
            try:
                member = tf.next()
            except tarfile.TarError as e:
                raise UnsafeArchiveError(f"archive is corrupt or truncated: {e}") from e
            if member is None:
                break
            entries += 1
            if entries > limits.max_entries:
                raise SizeLimitError(f"archive has more than {limits.max_entries} entries")
            rel = _check_name(member.name)
            if member.issym() or member.islnk():
                raise UnsafeArchiveError(
                    f"archive entry {member.name!r} is a link to {member.linkname!r}:"
                    " links are not allowed in artifacts")
            if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
                raise UnsafeArchiveError(f"archive entry {member.name!r} is a device or FIFO")
            target = dest.joinpath(*rel.parts) if rel.parts and rel.parts != (".",) else dest
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if not member.isreg():
                raise UnsafeArchiveError(f"archive entry {member.name!r} has unsupported"
                                         f" type {member.type!r}")
            if member.size > limits.max_file:
                raise SizeLimitError(f"archive entry {member.name!r} is {member.size} bytes,"
                                     f" over the {limits.max_file}-byte per-file limit")
            total += member.size
            if total > limits.max_total:
                raise SizeLimitError(f"archive expands to more than {limits.max_total} bytes"
                                     " (limit)")
            target.parent.mkdir(parents=True, exist_ok=True)
            # A directory entry named like a later file, or vice versa, must not let a
            # write land outside dest: resolve and check the parent.
            if not str(target.parent.resolve()).startswith(str(dest.resolve())):
                raise UnsafeArchiveError(f"archive entry {member.name!r} escapes the target")
            src = tf.extractfile(member)
            if src is None:
                raise UnsafeArchiveError(f"archive entry {member.name!r} has no data")
            mode = stat.S_IMODE(member.mode) & 0o777 | 0o600
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
            written = 0
            with os.fdopen(fd, "wb") as out:
                while True:
                    try:
                        chunk = src.read(1024 * 1024)
                    except tarfile.TarError as e:
                        raise UnsafeArchiveError(f"archive entry {member.name!r} is"
                                                 f" truncated: {e}") from e
                    if not chunk:
                        break
                    written += len(chunk)
                    out.write(chunk)
            if written != member.size:
                raise UnsafeArchiveError(f"archive entry {member.name!r} is truncated"
                                         f" ({written} of {member.size} bytes)")
            files += 1
    return files


def staging_dir(output: Path) -> Path:
    """A fresh private directory beside ``output`` (same filesystem, so rename is atomic)."""
    parent = output.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=parent))


def commit_dir(staged: Path, output: Path) -> None:
    """Move the extracted tree in ``staged`` to ``output``.

    An existing ``output`` is replaced only after the new tree is complete; its
    previous content moves aside first and is deleted afterwards.
    """
    output = output.resolve()
    if output.exists() and not output.is_dir():
        raise UnsafeArchiveError(f"output {output} exists and is not a directory")
    old: Path | None = None
    if output.exists():
        if any(output.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
            os.rename(output, old / "tree")
        else:
            output.rmdir()
    os.rename(staged, output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


async def extract_to(chunks: AsyncIterator[bytes], output: Path, limits: Limits = DEFAULT_LIMITS,
                     ) -> int:
    """Stream verified layer bytes to a spool file, extract, then move into ``output``.

    The spool is needed because the digest is only known to be right once the last
    chunk arrived: nothing is extracted from unverified bytes.
    """
    staged = staging_dir(output)
    try:
        with tempfile.TemporaryFile(dir=staged.parent) as spool:
            async for chunk in chunks:
                spool.write(chunk)
            spool.seek(0)
            tree = staged / "tree"
            tree.mkdir()
            count = extract_stream(spool, tree, limits)
        commit_dir(tree, output)
        return count
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staged)
