"""Issue 9, data safety on the pull side (``ocigitops.extract``, ``ocigitops.pull``): a pull
writes the files the artifact holds and keeps every other one, refuses before writing
anything when the archive or the output is wrong, and ``--clean`` refuses the directories a
mistyped flag must not wipe."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ocigitops.errors import OutputConflictError, SizeLimitError, UnsafeArchiveError, UsageError
from ocigitops.extract import (
    DEFAULT_MAX_FILE,
    DEFAULT_MAX_TOTAL,
    Limits,
    check_clean_target,
    extract_to,
    limits_from,
    parse_size,
)
from ocigitops.pull import check_output_dir
from tests.helpers.trees import snapshot

pytestmark = pytest.mark.unit


def tgz(*files: tuple[str, bytes]) -> bytes:
    """A Flux-like layer: a ``.`` root entry, then the files (folders implied)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        root = tarfile.TarInfo(".")
        root.type = tarfile.DIRTYPE
        root.mode = 0o755
        tar.addfile(root)
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue())


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 4096):
        yield data[i:i + 4096]


def extract(data: bytes, out: Path, *, clean: bool = False, limits: Limits | None = None) -> int:
    return asyncio.run(extract_to(_chunks(data), out, limits or Limits(), clean=clean))


ARTIFACT = tgz(("deploy.yaml", b"kind: Deployment\n"), ("apps/cm.yaml", b"kind: ConfigMap\n"))


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """A directory holding a user's own files, a Git folder and an older pull."""
    out = tmp_path / "work"
    (out / ".git" / "objects").mkdir(parents=True)
    (out / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (out / "notes.txt").write_text("mine\n")
    (out / "apps").mkdir()
    (out / "apps" / "cm.yaml").write_text("old\n")
    (out / "apps" / "local.yaml").write_text("also mine\n")
    return out


def test_pull_keeps_what_the_artifact_does_not_hold(user_dir: Path) -> None:
    assert extract(ARTIFACT, user_dir) == 2
    assert snapshot(user_dir) == {
        ".git": None, ".git/HEAD": b"ref: refs/heads/main\n", ".git/objects": None,
        "apps": None, "apps/cm.yaml": b"kind: ConfigMap\n", "apps/local.yaml": b"also mine\n",
        "deploy.yaml": b"kind: Deployment\n", "notes.txt": b"mine\n"}


def test_pull_into_the_current_directory(user_dir: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(user_dir)
    inode = os.stat(".").st_ino
    assert extract(ARTIFACT, Path(".")) == 2
    assert os.stat(".").st_ino == inode and Path.cwd() == user_dir.resolve()
    assert (user_dir / "notes.txt").read_text() == "mine\n"
    assert (user_dir / "deploy.yaml").read_bytes() == b"kind: Deployment\n"
    assert not [n for n in os.listdir(".") if n.startswith(".ocigitops-pull-")]


def test_hostile_archive_is_refused_before_a_byte_is_written(user_dir: Path) -> None:
    before = snapshot(user_dir)
    evil = tgz(("deploy.yaml", b"replaced?"), ("../escape.yaml", b"pwned"))
    with pytest.raises(UnsafeArchiveError, match="path traversal"):
        extract(evil, user_dir)
    assert snapshot(user_dir) == before  # deploy.yaml came first, and was not written
    big = tgz(("deploy.yaml", b"x"), ("big.bin", bytes(4096)))
    with pytest.raises(SizeLimitError, match="per-file limit"):
        extract(big, user_dir, limits=Limits(max_file=1024))
    assert snapshot(user_dir) == before


@pytest.mark.parametrize(("prepare", "fragment"), [
    (lambda d: os.rename(d / "apps", d / "apps.bak") or (d / "apps").write_text("a file"),
     "is a file where the artifact has a folder"),
    (lambda d: (d / "deploy.yaml").mkdir(), "is a folder where the artifact has a file"),
    (lambda d: os.rename(d / "apps", d / "real") or (d / "apps").symlink_to(d / "real"),
     "is a symbolic link where the artifact has a folder"),
], ids=["file-for-folder", "folder-for-file", "link-for-folder"])
def test_conflicts_with_the_output_are_refused_before_writing(
        user_dir: Path, prepare: object, fragment: str) -> None:
    prepare(user_dir)  # type: ignore[operator]
    before = snapshot(user_dir)
    with pytest.raises(OutputConflictError, match=fragment) as e:
        extract(ARTIFACT, user_dir)
    assert "--clean" in str(e.value)
    assert snapshot(user_dir) == before


def test_a_link_in_the_output_is_never_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "apps").symlink_to(outside)
    with pytest.raises(OutputConflictError):
        extract(ARTIFACT, out)
    assert list(outside.iterdir()) == []


def test_clean_replaces_everything(user_dir: Path) -> None:
    assert extract(ARTIFACT, user_dir, clean=True) == 2
    assert snapshot(user_dir) == {"apps": None, "apps/cm.yaml": b"kind: ConfigMap\n",
                                  "deploy.yaml": b"kind: Deployment\n"}


def test_a_failed_pull_removes_the_directories_it_created(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError):
        extract(tgz(("../x", b"")), tmp_path / "a" / "b" / "c")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    h = tmp_path / "home"
    (h / "project" / "sub").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(h))
    yield h


@pytest.mark.parametrize(("target", "cwd", "fragment"), [
    ("/", "project", "the root directory"),
    ("home", "project", "your home directory"),
    ("home/..", "project", "holds your home directory"),
    (".", "project/sub", "the current directory"),
    ("..", "project/sub", "holds the current directory"),
    ("project", "home", "the root of a Git work tree"),
])
def test_clean_refuses_directories_it_must_not_wipe(
        home: Path, monkeypatch: pytest.MonkeyPatch, target: str, cwd: str,
        fragment: str) -> None:
    (home / "project" / ".git").mkdir()
    monkeypatch.chdir(home if cwd == "home" else home / cwd)
    path = Path(target) if target in ("/", ".", "..") else (
        home if target == "home" else home / ".." if target == "home/.." else home / target)
    with pytest.raises(OutputConflictError, match=fragment) as e:
        check_clean_target(path)
    assert "--force" in str(e.value)
    check_clean_target(path, force=True)  # --force lets it through


def test_clean_accepts_a_directory_of_its_own(home: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(home / "project")
    check_clean_target(home / "project" / "sub")
    check_clean_target(home / "project" / "not-yet")


@pytest.mark.parametrize("name", ["json", "yaml"])
def test_output_that_looks_like_a_format_is_refused(name: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=f"write ./{name}") as e:
        check_output_dir(name)
    assert "--json" in str(e.value)
    assert check_output_dir(f"./{name}") == Path(name)  # spelled as a path: taken as asked
    (tmp_path / name).mkdir()
    assert check_output_dir(name) == Path(name)  # an existing directory: taken as asked


@pytest.mark.parametrize(("text", "value"), [
    ("1024", 1024), ("512Mi", 512 * 1024 ** 2), ("1G", 10 ** 9), ("1Gi", 1024 ** 3),
    ("2k", 2000), ("3Ki", 3072), ("1GiB", 1024 ** 3), ("10B", 10), (" 7 ", 7), (42, 42),
])
def test_parse_size(text: str | int, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "1.5G", "-1", "0", "10X", "Mi", "1 G", "1e9"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="--max-size"):
        parse_size(text, "--max-size")


def test_limits_from_flags() -> None:
    assert limits_from() == Limits()
    assert limits_from(None, None).max_total == DEFAULT_MAX_TOTAL
    both = limits_from("2Gi", "512Mi")
    assert (both.max_total, both.max_file) == (2 * 1024 ** 3, 512 * 1024 ** 2)
    only_total = limits_from("2Gi")
    assert only_total.max_file == DEFAULT_MAX_FILE  # the per-file limit has its own flag
