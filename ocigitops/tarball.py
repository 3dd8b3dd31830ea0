"""Deterministic tarballs, byte-identical to Go's ``archive/tar`` as Flux uses it.

Written here instead of using :mod:`tarfile` because the artifact's uncompressed bytes
(and so the config's ``diff_ids``) must match ``flux push artifact`` exactly: Python's
tarfile pads the archive to a 10 KiB record and chooses PAX/GNU headers differently;
Go writes USTAR headers (splitting long names into prefix/suffix), PAX only when a name
cannot be represented, and ends with exactly two zero blocks.

Entries are what Flux writes: for a directory, a ``.`` root entry, then every directory and regular
file in lexical (byte) order, depth first; names relative and slash-separated with no
trailing slash on directories; mode = permission bits (+ setuid/setgid/sticky); uid,
gid 0; empty user and group names; mtime 0. Symlinks and special files are skipped
(and reported to the caller, who warns); with ``resolve_symlinks`` a link is archived as
what it points to, as ``flux push artifact --resolve-symlinks`` (flux 2.9) does. A single
file is archived alone under its base name.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ocigitops.errors import UsageError

BLOCK = 512
_NAME_SIZE = 100
_PREFIX_SIZE = 155
_TYPE_REG = b"0"
_TYPE_DIR = b"5"
_TYPE_PAX = b"x"
_COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Entry:
    """One archive member: ``path`` on disk, ``name`` in the archive."""

    path: Path
    name: str
    is_dir: bool
    mode: int
    size: int


def _octal(value: int, width: int) -> bytes:
    # Go's formatOctal: zero-padded octal leaving room for a NUL terminator.
    digits = format(value, "o")
    if len(digits) > width - 1:
        raise ValueError(f"value {value} does not fit a {width}-byte tar field")
    return digits.rjust(width - 1, "0").encode() + b"\0"


def _field(value: bytes, width: int) -> bytes:
    return value[:width].ljust(width, b"\0")


def _split_ustar(name: str) -> tuple[str, str] | None:
    """Go's splitUSTARPath: (prefix, suffix) when a long ASCII name can use the prefix."""
    if len(name) <= _NAME_SIZE or not name.isascii():
        return None
    length = len(name)
    if length > _PREFIX_SIZE + 1:
        length = _PREFIX_SIZE + 1
    elif name[length - 1] == "/":
        length -= 1
    i = name.rfind("/", 0, length)
    nlen = len(name) - i - 1
    if i <= 0 or nlen > _NAME_SIZE or nlen == 0 or i > _PREFIX_SIZE:
        return None
    return name[:i], name[i + 1:]


def _header(name: bytes, mode: int, size: int, typeflag: bytes, prefix: bytes = b"",
            raw: bool = False) -> bytes:
    # ``raw``: Go's writeRawFile (PAX extended headers) leaves the device fields NUL.
    dev = _field(b"", 16) if raw else _octal(0, 8) + _octal(0, 8)
    block = bytearray(
        _field(name, 100) + _octal(mode, 8) + _octal(0, 8) + _octal(0, 8) + _octal(size, 12)
        + _octal(0, 12) + b" " * 8 + typeflag + _field(b"", 100) + b"ustar\x0000"
        + _field(b"", 32) + _field(b"", 32) + dev + _field(prefix, 155)
    )
    block += b"\0" * (BLOCK - len(block))
    checksum = sum(block)
    # Go writes six octal digits, a NUL, then leaves the space.
    block[148:155] = format(checksum, "06o").encode() + b"\0"
    return bytes(block)


def _pax_record(key: str, value: str) -> bytes:
    # "%d %s=%s\n" where the length counts itself.
    body = f" {key}={value}\n".encode()
    size = len(body) + 1
    while len(str(size).encode()) + len(body) != size:
        size = len(str(size).encode()) + len(body)
    return str(size).encode() + body


def _ascii_only(s: str) -> bytes:
    return "".join(c for c in s if c.isascii()).encode()


def header_blocks(name: str, mode: int, size: int, is_dir: bool) -> bytes:
    """The header block(s) Go's ``tar.Writer.WriteHeader`` writes for this member."""
    typeflag = _TYPE_DIR if is_dir else _TYPE_REG
    if len(name) <= _NAME_SIZE and name.isascii():
        return _header(name.encode(), mode, size, typeflag)
    split = _split_ustar(name)
    if split is not None:
        return _header(split[1].encode(), mode, size, typeflag, prefix=split[0].encode())
    # PAX: an extended header member "dir/PaxHeaders.0/file" carrying the real path,
    # then a USTAR header with the name squeezed to ASCII and 100 bytes.
    data = _pax_record("path", name)
    directory, _, base = name.rpartition("/")
    pax_name = "/".join(p for p in (directory, "PaxHeaders.0", base) if p)
    pax_bytes = _ascii_only(pax_name)[:_NAME_SIZE].rstrip(b"/")
    out = (_header(pax_bytes, 0, len(data), _TYPE_PAX, raw=True) + data
           + b"\0" * (-len(data) % BLOCK))
    main_name = _ascii_only(name)
    if len(main_name) > _NAME_SIZE and main_name[_NAME_SIZE - 1:_NAME_SIZE] == b"/":
        trimmed = main_name[:_NAME_SIZE - 1].rstrip(b"/")
        main_name = trimmed + b"\0"
    return out + _header(main_name, mode, size, typeflag)


def _perm_bits(st_mode: int) -> int:
    return stat.S_IMODE(st_mode) & 0o7777


#: Called with an archive name and why it was left out (a link, a socket...).
OnSkip = Callable[[str, str], None]


def walk(root: Path, exclude: Callable[[str, bool], bool] | None = None, *,
         resolve_symlinks: bool = False, on_skip: OnSkip | None = None) -> Iterator[Entry]:
    """Yield the members Flux would archive for ``root``, in Go's filepath.Walk order.

    ``exclude(relative_name, is_dir)`` drops a member; as in Flux, excluding a directory
    drops only its own entry, its children are still offered one by one.

    A symbolic link is left out, and ``on_skip`` told, unless ``resolve_symlinks``: then
    it is archived as its target (a file's content and mode, a folder's tree) under the
    link's name, wherever the target is, as Flux's ``--resolve-symlinks``. A link that
    leads back into a folder it is inside would repeat for ever: it is left out and
    reported. A link whose target is missing is an error (UsageError naming it), as in Flux.
    Sockets, devices and FIFOs are always left out and reported.
    """
    root_st = root.stat()
    if stat.S_ISREG(root_st.st_mode):
        # A single file is archived under its base name, with no "." entry (flux 2.7).
        if not (exclude and exclude(root.name, False)):
            yield Entry(root, root.name, False, _perm_bits(root_st.st_mode), root_st.st_size)
        return
    yield Entry(root, ".", True, _perm_bits(root_st.st_mode), 0)

    def skip(name: str, why: str) -> None:
        if on_skip:
            on_skip(name, why)

    def visit(directory: Path, rel: str, ancestors: frozenset[tuple[int, int]],
              ) -> Iterator[Entry]:
        names = sorted(os.listdir(directory), key=os.fsencode)
        for n in names:
            p = directory / n
            st = p.lstat()
            name = f"{rel}/{n}" if rel else n
            if stat.S_ISLNK(st.st_mode):
                if not resolve_symlinks:
                    if not (exclude and exclude(name, False)):
                        skip(name, f"a symbolic link to {os.readlink(p)} (not archived;"
                                   " --resolve-symlinks archives its target)")
                    continue
                try:
                    st = p.stat()
                except FileNotFoundError:
                    raise UsageError(f"--resolve-symlinks: {p} is a symbolic link to"
                                     f" {os.readlink(p)}, which does not exist") from None
                if stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) in ancestors:
                    skip(name, f"a symbolic link to {os.readlink(p)}, a folder it is inside"
                               " (a loop: not followed)")
                    continue
            if stat.S_ISDIR(st.st_mode):
                if not (exclude and exclude(name, True)):
                    yield Entry(p, name, True, _perm_bits(st.st_mode), 0)
                yield from visit(p, name, ancestors | {(st.st_dev, st.st_ino)})
            elif stat.S_ISREG(st.st_mode):
                if exclude and exclude(name, False):
                    continue
                yield Entry(p, name, False, _perm_bits(st.st_mode), st.st_size)
            elif not (exclude and exclude(name, False)):
                skip(name, "not a regular file or folder (a socket, device or FIFO)")

    yield from visit(root, "", frozenset({(root_st.st_dev, root_st.st_ino)}))


def write_tar(entries: Iterator[Entry], out: BinaryIO) -> int:
    """Write ``entries`` as a tar stream to ``out``; returns bytes written."""
    written = 0
    for e in entries:
        hdr = header_blocks(e.name, e.mode, e.size, e.is_dir)
        out.write(hdr)
        written += len(hdr)
        if e.is_dir:
            continue
        remaining = e.size
        with open(e.path, "rb") as fh:
            while remaining > 0:
                chunk = fh.read(min(_COPY_CHUNK, remaining))
                if not chunk:
                    raise OSError(f"{e.path} shrank while it was being archived")
                out.write(chunk)
                remaining -= len(chunk)
        pad = -e.size % BLOCK
        if pad:
            out.write(b"\0" * pad)
        written += e.size + pad
    out.write(b"\0" * (2 * BLOCK))
    return written + 2 * BLOCK
