"""Safe extraction of artifact layers (tar+gzip) into a directory.

Refuses absolute paths, ``..`` components, links of any kind that could escape the
tree (hard links and symlinks are refused outright, as Flux does), device files,
FIFOs, and archives whose uncompressed size, per-file size or entry count exceeds the
limits. A gzip bomb is caught while decompressing, before its size is written anywhere.

Extraction goes to a private staging directory inside the target, and the files are
moved into place only when the whole archive was read and verified: a broken archive
never leaves partial files in the output directory. Moving in overwrites the files the
artifact holds and keeps every other file (as ``flux pull artifact`` does), unless the
caller asks for the whole directory to be replaced (``clean``).

:class:`Limits` is the one definition of what an artifact may hold: ``push artifact``
checks a tree against the same limits before uploading it (:mod:`ocigitops.artifact`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Protocol

from ocigitops.errors import (
    DeadlineExceededError,
    OutputConflictError,
    SizeLimitError,
    UnsafeArchiveError,
    UsageError,
)

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
                                 f" {self.max_total} bytes{_RAISE_HINT}")

    # The checks below are shared by extraction and by packaging (push), so an artifact
    # that push accepts is one that pull accepts, with the same words when it is not.

    def check_entries(self, count: int, what: str = "archive") -> None:
        """Raise SizeLimitError when ``count`` entries (files and folders) is too many."""
        if count > self.max_entries:
            raise SizeLimitError(f"{what} has more than {self.max_entries} entries")

    def check_file(self, name: str, size: int, what: str = "archive entry") -> None:
        """Raise SizeLimitError when one file of ``size`` bytes is over :attr:`max_file`."""
        if size > self.max_file:
            raise SizeLimitError(f"{what} {name!r} is {size} bytes, over the"
                                 f" {self.max_file}-byte per-file limit (--max-file-size)")

    def check_total(self, total: int, what: str = "archive") -> None:
        """Raise SizeLimitError when file contents of ``total`` bytes are over :attr:`max_total`."""
        if total > self.max_total:
            raise SizeLimitError(f"{what} expands to more than {self.max_total} bytes (limit,"
                                 " --max-size)")

    def check_stream(self, size: int, what: str) -> None:
        """Raise SizeLimitError when a tar stream of ``size`` bytes is over
        :attr:`max_stream` (the bound :class:`BoundedGunzip` puts on a pull)."""
        if size > self.max_stream:
            raise SizeLimitError(f"{what} is {size} bytes as a tar stream, over the"
                                 f" {self.max_stream}-byte limit for content of at most"
                                 f" {self.max_total} bytes{_RAISE_HINT}")


_RAISE_HINT = " (raise it with --max-size)"

DEFAULT_LIMITS = Limits()

_SIZE = re.compile(r"(\d{1,20})(|k|K|M|G|T|Ki|Mi|Gi|Ti)B?")
_SIZE_UNITS = {"": 1, "k": 1000, "K": 1000, "M": 1000 ** 2, "G": 1000 ** 3, "T": 1000 ** 4,
               "Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3, "Ti": 1024 ** 4}


def parse_size(text: str | int, flag: str = "size") -> int:
    """A byte count as Kubernetes quantities write it: ``1048576``, ``512Mi``, ``1G``
    (``k M G T`` are powers of 1000, ``Ki Mi Gi Ti`` of 1024; a trailing ``B`` is allowed).

    Raises UsageError naming ``flag`` for anything else, and for zero.
    """
    if isinstance(text, int):
        value = text
    else:
        m = _SIZE.fullmatch(text.strip())
        if m is None:
            raise UsageError(f"{flag} {text!r}: use a number of bytes or a size such as 512Mi"
                             " or 1G")
        value = int(m[1]) * _SIZE_UNITS[m[2]]
    if value <= 0:
        raise UsageError(f"{flag} {text!r}: must be more than 0 bytes")
    return value


def limits_from(max_size: str | int | None = None,
                max_file_size: str | int | None = None) -> Limits:
    """The limits ``--max-size`` (all file contents) and ``--max-file-size`` (one file)
    ask for; each one not given keeps its default. Raises UsageError for a bad size."""
    return Limits(
        max_total=(parse_size(max_size, "--max-size") if max_size is not None
                   else DEFAULT_MAX_TOTAL),
        max_file=(parse_size(max_file_size, "--max-file-size") if max_file_size is not None
                  else DEFAULT_MAX_FILE))


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
        limits.check_entries(entries)
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
            limits.check_file(member.name, member.size)
            total += member.size
            limits.check_total(total)
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
    """Move the extracted tree in ``staged`` to ``output``, replacing it whole.

    For directories that belong to the caller (the controller's working copies); a
    user's ``pull --output`` is merged into instead (:func:`extract_to`).

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


def _make_output(output: Path) -> tuple[Path, list[Path]]:
    """Make ``output`` an existing directory; returns its resolved path and the
    directories created for it, outermost first, so a failed pull removes exactly those."""
    if output.exists() and not output.is_dir():  # a link to a directory is the user's choice
        raise UnsafeArchiveError(f"output {output} exists and is not a directory")
    missing: list[Path] = []
    p = output.absolute()
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    created: list[Path] = []
    for d in reversed(missing):
        d.mkdir()
        created.append(d)
    return output.resolve(), created


def _check_merge(tree: Path, output: Path) -> None:
    """Refuse, before anything is written, when what ``output`` holds is in the way of
    the extracted ``tree``: a file or a symbolic link where the artifact has a folder (the
    pull never writes through a link: it could point anywhere), a folder where it has a
    file, or a folder it would write into that is not writable."""
    hint = "move it away, or pull with --clean to replace the whole directory"
    for dirpath, dirnames, filenames in os.walk(tree):
        # Only folders ``output`` already has are walked (the others are pruned below):
        # nothing of the user's is under a folder the pull creates, and a pull into an
        # empty directory checks the top level alone.
        here = output / Path(dirpath).relative_to(tree)
        if not os.access(here, os.W_OK | os.X_OK):
            raise OutputConflictError(f"{here} is not writable: the artifact has files"
                                      " there")
        existing: list[str] = []
        for name in dirnames:
            try:
                st = os.lstat(here / name)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                raise OutputConflictError(f"{here / name} is a symbolic link where the"
                                          f" artifact has a folder: {hint}")
            if not stat.S_ISDIR(st.st_mode):
                raise OutputConflictError(f"{here / name} is a file where the artifact"
                                          f" has a folder: {hint}")
            existing.append(name)
        dirnames[:] = existing
        for name in filenames:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISDIR(os.lstat(here / name).st_mode):
                    raise OutputConflictError(f"{here / name} is a folder where the artifact"
                                              f" has a file: {hint}")


def _empty_dir(output: Path, keep: Path) -> None:
    """Delete everything in ``output`` but ``keep`` (links are removed, never followed).
    ``output`` itself stays: a shell whose current directory it is keeps working."""
    for entry in os.scandir(output):
        path = Path(entry.path)
        if path == keep:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path)
        else:
            path.unlink()


def _merge(tree: Path, output: Path) -> None:
    """Move the extracted ``tree`` into ``output``: a folder ``output`` lacks moves in
    whole (one rename), a file replaces the file of the same name (each replace is
    atomic), and everything else in ``output`` stays."""
    for dirpath, dirnames, filenames in os.walk(tree):
        rel = Path(dirpath).relative_to(tree)
        here = output / rel
        for name in list(dirnames):
            if not os.path.lexists(here / name):
                os.rename(Path(dirpath) / name, here / name)
                dirnames.remove(name)  # moved with everything in it
        for name in filenames:
            os.replace(Path(dirpath) / name, here / name)


async def extract_to(chunks: AsyncIterator[bytes], output: Path, limits: Limits = DEFAULT_LIMITS,
                     *, deadline: float | None = None, clean: bool = False) -> int:
    """Stream verified layer bytes to a spool file, extract and check everything, then
    move the files into ``output``, keeping the files the artifact does not hold (or,
    with ``clean``, deleting them: see :func:`check_clean_target` for the caller's
    guard). Returns the number of files written.

    The spool is needed because the digest is only known to be right once the last
    chunk arrived: nothing is extracted from unverified bytes. The spool never holds
    more than ``limits.max_stream`` bytes (callers also refuse a layer whose descriptor
    says more, before downloading: :meth:`Limits.check_layer_size`). Both live in a
    private folder inside ``output`` (same file system, so every move is a rename), which
    is removed whatever happens; on failure ``output`` is as it was (and removed again if
    the pull created it).
    """
    root, created = _make_output(output)
    staged: Path | None = None
    try:
        staged = Path(tempfile.mkdtemp(prefix=".ocigitops-pull-", dir=root))
        with tempfile.TemporaryFile(dir=staged) as spool:
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
        if clean:
            _empty_dir(root, keep=staged)
        else:
            _check_merge(tree, root)
        created = []  # from here on the output is the pull's result, kept
        _merge(tree, root)
        return count
    finally:
        if staged is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(staged)
        for d in reversed(created):
            with contextlib.suppress(OSError):
                d.rmdir()


def check_clean_target(output: Path, *, force: bool = False) -> None:
    """Refuse ``--clean`` (delete everything in ``output`` first) when ``output`` is a
    directory a mistyped flag should not wipe: ``/``, the home directory, the current
    directory or one that holds it, or a Git work tree's root. ``force`` allows it."""
    if force:
        return
    out = output.resolve()
    cwd = Path.cwd().resolve()
    home = Path.home().resolve()
    why = ("the root directory" if out == out.parent
           else "your home directory" if out == home
           else "a directory that holds your home directory" if out in home.parents
           else "the current directory" if out == cwd
           else "a directory that holds the current directory" if out in cwd.parents
           else "the root of a Git work tree, its .git included"
           if os.path.lexists(out / ".git") else "")
    if why:
        raise OutputConflictError(f"--clean would delete everything in {out} ({why}): pull"
                                  " into a directory of its own, or add --force")
