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
import errno
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Protocol

from ocigitops.errors import DeadlineExceededError, SizeLimitError, UnsafeArchiveError

#: Defaults no normal manifest tree reaches and every zip bomb does.
DEFAULT_MAX_TOTAL = 1024 * 1024 * 1024  # 1 GiB uncompressed
DEFAULT_MAX_FILE = 256 * 1024 * 1024    # 256 MiB per file
DEFAULT_MAX_ENTRIES = 200_000
#: Tar headers, padding and gzip framing on top of the file contents: a layer (compressed)
#: or its tar stream (uncompressed) may be this much larger than ``max_total``.
ARCHIVE_OVERHEAD = 64 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Bounds on what an archive may expand to."""

    max_total: int = DEFAULT_MAX_TOTAL
    max_file: int = DEFAULT_MAX_FILE
    max_entries: int = DEFAULT_MAX_ENTRIES

    @property
    def max_stream(self) -> int:
        """The most bytes a layer may have, compressed or as a tar stream: the contents
        plus :data:`ARCHIVE_OVERHEAD`. gzip never grows data by more than a few bytes per
        block, so a layer over this can only be padding or a bomb, and is refused before
        a byte of it is downloaded. The allowance is at most the contents' own size, so a
        small limit stays small (``--max-size 1000000`` admits a 2 MB layer, not 65 MB)."""
        return self.max_total + min(ARCHIVE_OVERHEAD, max(self.max_total, 1024 * 1024))

    def check_layer_size(self, size: int, what: str) -> None:
        """Raise SizeLimitError when a layer of ``size`` bytes is over :attr:`max_stream`."""
        if size > self.max_stream:
            raise SizeLimitError(f"{what} is {size} bytes compressed, over the"
                                 f" {self.max_stream}-byte limit for content of at most"
                                 f" {self.max_total} bytes")


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
        self._buf = bytearray()
        self._pos = 0
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
        if self._pos:
            # Drop what was consumed before appending, so the buffer stays small.
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data

    def read(self, n: int = -1) -> bytes:
        want = n if n >= 0 else 1 << 62
        while len(self._buf) - self._pos < want and not self._eof:
            self._step()
        end = min(len(self._buf), self._pos + want)
        out = bytes(self._buf[self._pos:end])
        self._pos = end
        return out


class _Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class _Member:
    name: str
    typeflag: bytes
    size: int
    mode: int
    linkname: str


_REGULAR = (b"0", b"\0", b"7")


def _read_exact(stream: _Reader, n: int, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise UnsafeArchiveError(f"archive is truncated: {what} ends after {len(data)} of"
                                 f" {n} bytes")
    return data


def _cstr(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", errors="surrogateescape")


def _number(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256
        value = int.from_bytes(field[1:], "big")
        return -value if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip(b" \0")
    # Octal digits only, as Go's reader: Python's int() would also take a sign or "_".
    if text.strip(b"01234567"):
        raise UnsafeArchiveError(f"archive header has an invalid {what} field {text!r}")
    return int(text or b"0", 8)


def _pax_records(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        sp = data.find(b" ", pos)
        if sp < 0:
            raise UnsafeArchiveError("archive has a malformed PAX header")
        length = _decimal(data[pos:sp].decode("latin-1"), "PAX record length")
        record = data[sp + 1:pos + length - 1]
        if length <= 0 or pos + length > len(data) or b"=" not in record:
            raise UnsafeArchiveError("archive has a malformed PAX header")
        key, _, value = record.partition(b"=")
        try:
            name = key.decode()
        except UnicodeDecodeError as e:
            raise UnsafeArchiveError("archive has a PAX header key that is not UTF-8") from e
        out[name] = value.decode("utf-8", errors="surrogateescape")
        pos += length
    return out


def _decimal(text: str, what: str) -> int:
    """A non-negative decimal as Go's tar reader takes it (no sign, spaces or ``_``)."""
    if not text or len(text) > 20 or not (text.isascii() and text.isdigit()):
        raise UnsafeArchiveError(f"archive has a malformed {what} {text[:30]!r}")
    return int(text)


def _members(stream: _Reader) -> Iterator[tuple[_Member, _Body]]:
    """Strict tar reader: every header checksummed, any short read is an error.

    Written here because :mod:`tarfile` treats a truncated or corrupt header after the
    first member as the end of the archive, so a damaged artifact would extract partly
    "successfully"; Go's reader (Flux's) reports it. USTAR, PAX and GNU long names.
    """
    pax: dict[str, str] = {}
    long_name: str | None = None
    offset = 0
    while True:
        block = stream.read(512)
        if not block:
            raise UnsafeArchiveError("archive is truncated: no end-of-archive marker")
        if len(block) < 512:
            raise UnsafeArchiveError(f"archive is truncated inside the header at offset"
                                     f" {offset}")
        if block == b"\0" * 512:
            return  # end of archive (a second zero block, or trailing data, is not read)
        stored = _number(block[148:156], "checksum")
        # The checksum field counts as eight spaces (256). Some old writers summed signed
        # bytes: that slower variant is only computed when the usual one does not match.
        if stored != sum(block) - sum(block[148:156]) + 256 and stored != (
                sum(b - 256 if b > 127 else b for b in block[:148]) + 256
                + sum(b - 256 if b > 127 else b for b in block[156:])):
            raise UnsafeArchiveError(f"archive is corrupt: header at offset {offset} fails its"
                                     " checksum")
        typeflag = block[156:157]
        size = _number(block[124:136], "size")
        if size < 0:
            raise UnsafeArchiveError(f"archive header at offset {offset} has a negative size")
        offset += 512
        if typeflag in (b"x", b"g", b"L", b"K"):
            if size > 1024 * 1024:
                raise SizeLimitError(f"archive has a {size}-byte extended header (limit 1 MiB)")
            data = _read_exact(stream, size + (-size % 512), "an extended header")[:size]
            offset += size + (-size % 512)
            if typeflag == b"x":
                pax = _pax_records(data)
            elif typeflag == b"L":
                long_name = _cstr(data)
            continue
        name = _cstr(block[0:100])
        if block[257:263] == b"ustar\0" and block[345:346] != b"\0":
            name = _cstr(block[345:500]) + "/" + name
        name = pax.get("path", long_name or name)
        if "size" in pax:
            # Unsigned by construction: a negative size made the reader loop for ever.
            size = _decimal(pax["size"], "PAX size")
        linkname = pax.get("linkpath", _cstr(block[157:257]))
        member = _Member(name, typeflag, size, _number(block[100:108], "mode"), linkname)
        pax, long_name = {}, None
        body = _Body(stream, size if typeflag in _REGULAR else 0, name)
        yield member, body
        body.skip_rest()
        padding = -member.size % 512 if typeflag in _REGULAR else 0
        if padding:
            _read_exact(stream, padding, f"the padding of {name!r}")
        offset += member.size + padding if typeflag in _REGULAR else 0


class _Body:
    """The data of one member: at most ``size`` bytes, short reads are errors."""

    def __init__(self, stream: _Reader, size: int, name: str) -> None:
        self._stream = stream
        self._size = size
        self._left = size
        self._name = name

    def read(self, n: int = -1) -> bytes:
        want = self._left if n < 0 else min(n, self._left)
        if want <= 0:
            return b""
        data = self._stream.read(want)
        if len(data) != want:
            got = self._size - self._left + len(data)
            raise UnsafeArchiveError(f"archive entry {self._name!r} is truncated ({got} of"
                                     f" {self._size} bytes)")
        self._left -= len(data)
        return data

    def skip_rest(self) -> None:
        while self._left > 0:
            self.read(1024 * 1024)


def _check_name(name: str) -> PurePosixPath:
    if not name or "\\" in name or "\0" in name:
        raise UnsafeArchiveError(f"archive entry has an invalid name {name!r}")
    p = PurePosixPath(name)
    if p.is_absolute():
        raise UnsafeArchiveError(f"archive entry {name!r} has an absolute path")
    if any(part == ".." for part in p.parts):
        raise UnsafeArchiveError(f"archive entry {name!r} contains '..' (path traversal)")
    return p


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineExceededError("extraction did not finish in time: stopped")


def extract_stream(stream: IO[bytes], dest: Path, limits: Limits = DEFAULT_LIMITS, *,
                   deadline: float | None = None) -> int:
    """Extract a tar+gzip stream into the existing empty directory ``dest``.

    Returns the number of files written. Raises UnsafeArchiveError/SizeLimitError, and
    DeadlineExceededError once ``time.monotonic()`` passes ``deadline`` (checked for every
    entry and every MiB, so a thread running this can always be stopped).
    The caller owns ``dest`` and deletes it on failure (see :func:`extract_to`).
    """
    gunzip = BoundedGunzip(stream, limits.max_stream)
    total = files = entries = 0
    root = dest.resolve()
    made: set[Path] = {root}
    for member, body in _members(gunzip):
        _check_deadline(deadline)
        entries += 1
        if entries > limits.max_entries:
            raise SizeLimitError(f"archive has more than {limits.max_entries} entries")
        rel = _check_name(member.name)
        kind = member.typeflag
        if kind in (b"1", b"2"):
            raise UnsafeArchiveError(
                f"archive entry {member.name!r} is a link to {member.linkname!r}:"
                " links are not allowed in artifacts")
        if kind in (b"3", b"4", b"6"):
            raise UnsafeArchiveError(f"archive entry {member.name!r} is a device or FIFO")
        parts = [x for x in rel.parts if x != "."]
        target = root.joinpath(*parts)
        try:
            if kind == b"5":
                target.mkdir(parents=True, exist_ok=True)
                made.add(target)
                continue
            if kind not in _REGULAR:
                raise UnsafeArchiveError(f"archive entry {member.name!r} has unsupported"
                                         f" type {kind!r}")
            if member.size > limits.max_file:
                raise SizeLimitError(f"archive entry {member.name!r} is {member.size} bytes,"
                                     f" over the {limits.max_file}-byte per-file limit")
            total += member.size
            if total > limits.max_total:
                raise SizeLimitError(f"archive expands to more than {limits.max_total} bytes"
                                     " (limit)")
            parent = target.parent
            if parent not in made:
                # Links are refused, so a directory we created cannot point elsewhere;
                # checking each new directory once is enough.
                parent.mkdir(parents=True, exist_ok=True)
                if not parent.resolve().is_relative_to(root):
                    raise UnsafeArchiveError(f"archive entry {member.name!r} escapes the"
                                             " target")
                made.add(parent)
            # Plain int arithmetic: a base-256 mode can be wider than a C long.
            mode = member.mode & 0o777 | 0o600
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as e:
            raise UnsafeArchiveError(f"archive entry {member.name!r} conflicts with an earlier"
                                     " entry") from e
        except OSError as e:  # ENAMETOOLONG: a name part over 255 bytes, a path over 4 KiB
            if e.errno != errno.ENAMETOOLONG:
                raise
            raise UnsafeArchiveError(f"archive entry {member.name[:100]!r}... has a name too"
                                     " long for the file system") from e
        with os.fdopen(fd, "wb") as out:
            while chunk := body.read(1024 * 1024):
                out.write(chunk)
                _check_deadline(deadline)
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
                     *, deadline: float | None = None) -> int:
    """Stream verified layer bytes to a spool file, extract, then move into ``output``.

    The spool is needed because the digest is only known to be right once the last
    chunk arrived: nothing is extracted from unverified bytes. The spool never holds
    more than ``limits.max_stream`` bytes (callers also refuse a layer whose descriptor
    says more, before downloading: :meth:`Limits.check_layer_size`).
    """
    staged = staging_dir(output)
    try:
        with tempfile.TemporaryFile(dir=staged.parent) as spool:
            spooled = 0
            async for chunk in chunks:
                spooled += len(chunk)
                if spooled > limits.max_stream:
                    raise SizeLimitError(f"layer is over the {limits.max_stream}-byte limit"
                                         " for compressed content")
                spool.write(chunk)
            spool.seek(0)
            tree = staged / "tree"
            tree.mkdir()
            count = extract_stream(spool, tree, limits, deadline=deadline)
        commit_dir(tree, output)
        return count
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staged)
