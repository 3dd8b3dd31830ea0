"""Safe extraction of artifact layers: crafted hostile archives, bombs, broken streams.

Every archive is built in the test with :mod:`tarfile` and :mod:`gzip` (or, for the
10 GB header, by writing the 512-byte header by hand). After any failure the target
directory must be exactly as before (absent, or with its old content) and no
``.partial``/``.old`` directories may be left beside it.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import random
import stat
import tarfile
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from ocigitops.errors import DigestMismatchError, SizeLimitError, UnsafeArchiveError
from ocigitops.extract import BoundedGunzip, Limits, extract_stream, extract_to
from tests.helpers.trees import snapshot

pytestmark = pytest.mark.unit

MB = 1024 * 1024
TEN_GB = 10 * 1024 ** 3


# ------------------------------------------------------------------ archive builders


def member(name: str, data: bytes = b"", *, type_: bytes = tarfile.REGTYPE,
           mode: int = 0o644, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.mode = mode
    ti.linkname = linkname
    ti.size = len(data) if type_ in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    return ti, data


def tar_raw(*members: tuple[tarfile.TarInfo, bytes],
            fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return buf.getvalue()


def tgz(*members: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    return gzip.compress(tar_raw(*members, fmt=fmt), mtime=0)


GOOD = member("good.yaml", b"kind: ConfigMap\n")


def hand_header(name: bytes, size_field: bytes, typeflag: bytes = b"0") -> bytes:
    """A ustar header written field by field (size given as its raw 12 bytes)."""
    assert len(size_field) == 12
    hdr = bytearray(
        name.ljust(100, b"\0")
        + b"0000644\0" + b"0000000\0" + b"0000000\0"   # mode, uid, gid
        + size_field
        + b"00000000000\0"                              # mtime
        + b" " * 8                                      # checksum placeholder
        + typeflag
        + b"\0" * 100                                   # linkname
        + b"ustar\x0000"
        + b"\0" * 32 + b"\0" * 32                       # uname, gname
        + b"0000000\0" + b"0000000\0"                   # devmajor, devminor
        + b"\0" * 155)
    hdr += b"\0" * (512 - len(hdr))
    hdr[148:156] = b"%06o\0 " % sum(hdr)
    return bytes(hdr)


def ten_gb_header_archive() -> bytes:
    """GNU base-256 size field declaring 10 GiB, followed by only 1 MiB of data."""
    size_field = b"\x80" + TEN_GB.to_bytes(11, "big")
    return gzip.compress(hand_header(b"huge.yaml", size_field) + b"\0" * MB, mtime=0)


def gzip_stream(chunks: Callable[[], object], level: int = 6) -> bytes:
    """gzip-compress an iterable of chunks without holding the uncompressed data."""
    comp = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = bytearray()
    for chunk in chunks():  # type: ignore[attr-defined]
        out += comp.compress(chunk)
    out += comp.flush()
    return bytes(out)


@pytest.fixture(scope="module")
def tar_bomb() -> bytes:
    """A 200 MiB file of zeros in a tar, ~200 KiB once gzipped."""
    def chunks():  # type: ignore[no-untyped-def]
        ti = tarfile.TarInfo("zeros.bin")
        ti.size = 200 * MB
        yield ti.tobuf(format=tarfile.USTAR_FORMAT)
        zero = bytes(MB)
        for _ in range(200):
            yield zero
        yield bytes(1024)
    data = gzip_stream(chunks, level=9)
    assert len(data) < 1 * MB
    return data


@pytest.fixture(scope="module")
def raw_bomb() -> bytes:
    """200 MiB of zeros gzipped (no tar structure around them)."""
    def chunks():  # type: ignore[no-untyped-def]
        zero = bytes(MB)
        for _ in range(200):
            yield zero
    return gzip_stream(chunks, level=9)


# ------------------------------------------------------------------ helpers


def extract(data: bytes, dest: Path, limits: Limits | None = None) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    return extract_stream(io.BytesIO(data), dest, limits or Limits())


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def extract_into(data: bytes, output: Path, limits: Limits | None = None) -> int:
    return asyncio.run(extract_to(_chunks(data), output, limits or Limits()))


def assert_clean_parent(parent: Path, expected: set[str]) -> None:
    left = {p.name for p in parent.iterdir()}
    assert left == expected, f"left behind: {sorted(left - expected)}"
    assert not [n for n in left if ".partial-" in n or ".old-" in n]


# ------------------------------------------------------------------ the good case


def test_extracts_a_normal_archive(tmp_path: Path) -> None:
    data = tgz(member(".", type_=tarfile.DIRTYPE, mode=0o755),
               member("apps", type_=tarfile.DIRTYPE, mode=0o755),
               member("apps/deploy.yaml", b"kind: Deployment\n"),
               member("run.sh", b"#!/bin/sh\n", mode=0o755),
               member("suid", b"x", mode=0o4755),
               member("noperm", b"y", mode=0o000),
               member("implicit/dir/file.yaml", b"z"))
    dest = tmp_path / "dest"
    assert extract(data, dest) == 5
    assert snapshot(dest) == {"apps": None, "apps/deploy.yaml": b"kind: Deployment\n",
                              "implicit": None, "implicit/dir": None,
                              "implicit/dir/file.yaml": b"z", "noperm": b"y",
                              "run.sh": b"#!/bin/sh\n", "suid": b"x"}
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "suid").stat().st_mode) == 0o755  # setuid dropped
    assert stat.S_IMODE((dest / "noperm").stat().st_mode) == 0o600  # owner can read


def test_extract_to_keeps_what_the_artifact_does_not_hold(tmp_path: Path) -> None:
    """Issue 9: the artifact's files overwrite theirs, every other file stays (as Flux)."""
    parent = tmp_path / "p"
    out = parent / "out"
    (out / "old").mkdir(parents=True)
    (out / "old" / "stale.yaml").write_text("stale")
    (out / "good.yaml").write_text("previous")
    assert extract_into(tgz(GOOD, member("b/c.yaml", b"c")), out) == 2
    assert snapshot(out) == {"b": None, "b/c.yaml": b"c", "good.yaml": b"kind: ConfigMap\n",
                             "old": None, "old/stale.yaml": b"stale"}
    assert_clean_parent(parent, {"out"})
    assert not [n for n in os.listdir(out) if n.startswith(".ocigitops-pull-")]
    # into a directory that does not exist yet
    fresh = parent / "fresh"
    assert extract_into(tgz(GOOD), fresh) == 1
    assert snapshot(fresh) == {"good.yaml": b"kind: ConfigMap\n"}
    assert_clean_parent(parent, {"out", "fresh"})


def test_extract_to_clean_replaces_the_content(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "old").mkdir(parents=True)
    (out / "old" / "stale.yaml").write_text("stale")
    inode = out.stat().st_ino
    assert asyncio.run(extract_to(_chunks(tgz(GOOD)), out, Limits(), clean=True)) == 1
    assert snapshot(out) == {"good.yaml": b"kind: ConfigMap\n"}
    assert out.stat().st_ino == inode  # emptied, not replaced: a shell inside keeps working


# ------------------------------------------------------------------ hostile archives

# (archive, error type, fragment of the message)
HOSTILE: dict[str, tuple[Callable[[], bytes], type[Exception], str]] = {
    "traversal": (lambda: tgz(GOOD, member("../evil.yaml", b"pwned")),
                  UnsafeArchiveError, "'../evil.yaml' contains '..' (path traversal)"),
    "nested-traversal": (lambda: tgz(GOOD, member("a/../../evil.yaml", b"pwned")),
                         UnsafeArchiveError, "'a/../../evil.yaml' contains '..'"),
    "pax-path-traversal": (
        lambda: tgz(GOOD, member("x" * 120 + "/../../evil.yaml", b"pwned")),
        UnsafeArchiveError, "contains '..' (path traversal)"),
    "gnu-longname-traversal": (
        lambda: tgz(GOOD, member("../" + "y" * 150, b"pwned"), fmt=tarfile.GNU_FORMAT),
        UnsafeArchiveError, "contains '..' (path traversal)"),
    "absolute": (lambda: tgz(GOOD, member("/tmp/ocigitops-evil.yaml", b"pwned")),
                 UnsafeArchiveError, "'/tmp/ocigitops-evil.yaml' has an absolute path"),
    "backslash": (lambda: tgz(GOOD, member("..\\evil.yaml", b"pwned")),
                  UnsafeArchiveError, "has an invalid name"),
    "symlink-escaping": (
        lambda: tgz(GOOD, member("passwd", type_=tarfile.SYMTYPE, linkname="/etc/passwd")),
        UnsafeArchiveError, "'passwd' is a link to '/etc/passwd': links are not allowed"),
    "symlink-relative-escaping": (
        lambda: tgz(GOOD, member("up", type_=tarfile.SYMTYPE, linkname="../../..")),
        UnsafeArchiveError, "'up' is a link to '../../..'"),
    "symlink-inside": (
        lambda: tgz(GOOD, member("alias.yaml", type_=tarfile.SYMTYPE, linkname="good.yaml")),
        UnsafeArchiveError, "'alias.yaml' is a link to 'good.yaml'"),
    "hardlink": (
        lambda: tgz(GOOD, member("hard.yaml", type_=tarfile.LNKTYPE, linkname="good.yaml")),
        UnsafeArchiveError, "'hard.yaml' is a link to 'good.yaml'"),
    "hardlink-outside": (
        lambda: tgz(GOOD, member("shadow", type_=tarfile.LNKTYPE, linkname="/etc/shadow")),
        UnsafeArchiveError, "'shadow' is a link to '/etc/shadow'"),
    "char-device": (lambda: tgz(GOOD, member("null", type_=tarfile.CHRTYPE)),
                    UnsafeArchiveError, "'null' is a device or FIFO"),
    "block-device": (lambda: tgz(GOOD, member("sda", type_=tarfile.BLKTYPE)),
                     UnsafeArchiveError, "'sda' is a device or FIFO"),
    "fifo": (lambda: tgz(GOOD, member("pipe", type_=tarfile.FIFOTYPE)),
             UnsafeArchiveError, "'pipe' is a device or FIFO"),
    "10GB-header": (ten_gb_header_archive, SizeLimitError,
                    f"'huge.yaml' is {TEN_GB} bytes, over the {256 * MB}-byte per-file limit"),
    "truncated-gzip": (lambda: tgz(GOOD, member("big.yaml", os.urandom(64 * 1024)))[:40_000],
                       UnsafeArchiveError, "archive is truncated: gzip stream ended early"),
    "not-gzip": (lambda: tar_raw(GOOD), UnsafeArchiveError, "archive is not valid gzip"),
    "empty-input": (lambda: b"", UnsafeArchiveError, "archive is truncated"),
    "truncated-tar-data": (
        lambda: gzip.compress(tar_raw(GOOD, member("big.yaml", b"b" * 5000))[:2048 + 1000]),
        UnsafeArchiveError, "archive entry 'big.yaml' is truncated"),
    "corrupt-gzip-body": (
        lambda: (lambda d: d[:20] + bytes(b ^ 0xFF for b in d[20:60]) + d[60:])(
            tgz(GOOD, member("r.bin", random.Random(7).randbytes(4096)))),
        UnsafeArchiveError, "archive is not valid gzip"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archive_refused(case: str, tmp_path: Path) -> None:
    build, error, fragment = HOSTILE[case]
    dest = tmp_path / "box" / "dest"
    start = time.monotonic()
    with pytest.raises(error) as e:
        extract(build(), dest)
    assert time.monotonic() - start < 5
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)
    # nothing escaped the target
    assert not (tmp_path / "box" / "evil.yaml").exists()
    assert not (tmp_path / "evil.yaml").exists()
    assert not Path("/tmp/ocigitops-evil.yaml").exists()
    assert not any(p.is_symlink() for p in dest.rglob("*"))


@pytest.mark.parametrize("case", list(HOSTILE))
@pytest.mark.parametrize("existing", [False, True], ids=["no-output", "existing-output"])
def test_failed_extraction_leaves_output_untouched(case: str, existing: bool,
                                                   tmp_path: Path) -> None:
    build, error, _ = HOSTILE[case]
    parent = tmp_path / "parent"
    parent.mkdir()
    out = parent / "out"
    if existing:
        (out / "sub").mkdir(parents=True)
        (out / "keep.yaml").write_text("previous content\n")
        (out / "sub" / "deep.yaml").write_text("deep\n")
    before = snapshot(out)
    with pytest.raises(error):
        extract_into(build(), out)
    assert snapshot(out) == before
    assert out.exists() == existing
    assert_clean_parent(parent, {"out"} if existing else set())


def test_ten_gb_header_in_pax_and_total_limit(tmp_path: Path) -> None:
    # the same declaration through a PAX "size" record
    ti = tarfile.TarInfo("huge.yaml")
    ti.size = TEN_GB
    raw = ti.tobuf(format=tarfile.PAX_FORMAT)
    assert b"size=10737418240" in raw
    data = gzip.compress(raw + bytes(MB))
    with pytest.raises(SizeLimitError, match=r"'huge\.yaml' is 10737418240 bytes"):
        extract(data, tmp_path / "a")
    # a per-file limit above 10 GB still leaves the total limit
    with pytest.raises(SizeLimitError, match="expands to more than 1073741824 bytes"):
        extract(ten_gb_header_archive(), tmp_path / "b",
                Limits(max_total=1024 ** 3, max_file=20 * 1024 ** 3))
    assert snapshot(tmp_path / "b") == {}


def test_gzip_bomb_tar(tar_bomb: bytes, tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        start = time.monotonic()
        with pytest.raises(SizeLimitError) as e:
            extract_into(tar_bomb, tmp_path / "out", Limits(max_total=50 * MB))
        elapsed = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "expands to more than 52428800 bytes" in str(e.value)
    assert elapsed < 5
    assert peak < 100 * MB
    assert not (tmp_path / "out").exists()
    assert_clean_parent(tmp_path, set())


def test_gzip_bomb_raw_stream(raw_bomb: bytes) -> None:
    """The decompressor itself stops at its limit, whatever the bytes are."""
    tracemalloc.start()
    try:
        start = time.monotonic()
        gz = BoundedGunzip(io.BytesIO(raw_bomb), 50 * MB)
        got = 0
        with pytest.raises(SizeLimitError, match="possible decompression bomb") as e:
            while chunk := gz.read(64 * 1024):
                got += len(chunk)
        elapsed = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "52428800" in str(e.value)
    assert got <= 50 * MB
    assert elapsed < 5
    assert peak < 100 * MB


def test_many_small_files_hit_the_total_limit(tmp_path: Path) -> None:
    data = tgz(*(member(f"f{i:03}.bin", bytes(MB)) for i in range(60)))
    with pytest.raises(SizeLimitError, match="expands to more than 52428800 bytes"):
        extract(data, tmp_path / "d", Limits(max_total=50 * MB))


def test_too_many_entries(tmp_path: Path) -> None:
    data = tgz(*(member(f"d{i}", type_=tarfile.DIRTYPE) for i in range(11)))
    with pytest.raises(SizeLimitError, match="archive has more than 10 entries"):
        extract(data, tmp_path / "d", Limits(max_entries=10))
    assert extract(data, tmp_path / "e", Limits(max_entries=11)) == 0


def test_per_file_limit(tmp_path: Path) -> None:
    data = tgz(GOOD, member("big.bin", bytes(2048)))
    with pytest.raises(SizeLimitError, match=r"'big.bin' is 2048 bytes, over the 1024-byte"):
        extract(data, tmp_path / "d", Limits(max_file=1024))


def test_failing_download_leaves_output_untouched(tmp_path: Path) -> None:
    """A verification error raised by the chunk source (bad digest) aborts cleanly."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.yaml").write_text("keep")
    data = tgz(GOOD, member("x.bin", os.urandom(200_000)))

    async def broken() -> AsyncIterator[bytes]:
        yield data[:50_000]
        raise DigestMismatchError("blob sha256:abc hashes to sha256:def")

    with pytest.raises(DigestMismatchError):
        asyncio.run(extract_to(broken(), out))
    assert snapshot(out) == {"keep.yaml": b"keep"}
    assert_clean_parent(tmp_path, {"out"})


def test_output_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("i am a file")
    with pytest.raises(UnsafeArchiveError, match="exists and is not a directory"):
        extract_into(tgz(GOOD), target)
    assert target.read_text() == "i am a file"
    assert_clean_parent(tmp_path, {"out"})


# ------------------------------------------------------------------ corrupt tar structure


def test_tar_truncated_inside_a_header(tmp_path: Path) -> None:
    raw = tar_raw(GOOD, member("second.yaml", b"2"), fmt=tarfile.USTAR_FORMAT)
    data = gzip.compress(raw[:1024 + 100])  # 100 bytes into the second header
    with pytest.raises(UnsafeArchiveError, match="truncated"):
        extract(data, tmp_path / "d")


def test_tar_with_corrupt_second_header(tmp_path: Path) -> None:
    raw = bytearray(tar_raw(GOOD, member("second.yaml", b"2"), fmt=tarfile.USTAR_FORMAT))
    raw[1024 + 148:1024 + 156] = b"0000000\0"  # wrong checksum in header 2
    with pytest.raises(UnsafeArchiveError, match="corrupt"):
        extract(gzip.compress(bytes(raw)), tmp_path / "d")


def test_conflicting_entries_are_an_archive_error(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="'a/b'"):
        extract(tgz(member("a", b"file"), member("a/b", b"child")), tmp_path / "d")
