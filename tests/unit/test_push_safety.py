"""Issue 9, data safety on the push side: ``push artifact`` refuses, before uploading, what
``pull artifact`` would refuse (one :class:`~ocigitops.extract.Limits` for both), warns
about links it leaves out and about an empty artifact, archives link targets with
``resolve_symlinks`` (flux 2.9's ``--resolve-symlinks``), and says what is true when
``--diff-tag`` finds nothing to push."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ocigitops.artifact import build_layer
from ocigitops.errors import NotFoundError, SizeLimitError, UsageError
from ocigitops.extract import Limits, extract_stream
from ocigitops.options import RegistryOptions
from ocigitops.publisher.publish import PushRequest, publish
from ocigitops.pull import pull
from ocigitops.reference import parse_reference
from ocigitops.regserver import BackgroundRegistry
from tests.helpers.trees import snapshot, write

pytestmark = pytest.mark.unit

T = TypeVar("T")
SRC = "https://example.com/acme/app"
REV = "main@sha1:" + "2" * 40


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def pull_accepts(tree: Path, limits: Limits, tmp: Path) -> bool:
    """Whether extraction with ``limits`` accepts the layer built from ``tree``."""
    layer = build_layer(tree, tmp / "layer.tgz")
    dest = tmp / "dest"
    dest.mkdir()
    try:
        with open(layer.path, "rb") as f:
            limits.check_layer_size(layer.size, "layer")
            extract_stream(f, dest, limits)
    except SizeLimitError:
        return False
    return True


def push_accepts(tree: Path, limits: Limits, tmp: Path) -> bool:
    try:
        build_layer(tree, tmp / "checked.tgz", limits=limits)
    except SizeLimitError:
        return False
    return True


SMALL = Limits(max_total=10_000, max_file=4096, max_entries=6)


@pytest.mark.parametrize(("files", "accepted"), [
    ({"a": 4096}, True),                       # exactly the per-file limit
    ({"a": 4097}, False),                      # one byte over it
    ({"a": 4000, "b": 4000, "c": 2000}, True),  # exactly the total
    ({"a": 4000, "b": 4000, "c": 2001}, False),
    ({f"d/{i}": 1 for i in range(4)}, True),   # ".", "d" and 4 files: 6 entries
    ({f"d/{i}": 1 for i in range(5)}, False),  # 7 entries
])
def test_push_refuses_exactly_what_pull_refuses(files: dict[str, int], accepted: bool,
                                                tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for name, size in files.items():
        write(tree / name, "x" * size)
    assert pull_accepts(tree, SMALL, tmp_path) is accepted
    assert push_accepts(tree, SMALL, tmp_path) is accepted


def test_tar_framing_counts_as_on_pull(tmp_path: Path) -> None:
    """Thousands of one-byte files: little content, but a tar stream over what a pull
    decompresses for that limit (headers and padding count there)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(2100):
        (tree / f"f{i:05}").write_bytes(b"x")
    limits = Limits(max_total=1024 * 1024, max_entries=10_000)
    assert not pull_accepts(tree, limits, tmp_path)
    with pytest.raises(SizeLimitError, match="as a tar stream, over the"):
        build_layer(tree, tmp_path / "x.tgz", limits=limits)


def test_per_file_message_names_the_flag(tmp_path: Path) -> None:
    write(tmp_path / "t" / "big.bin", "x" * 2048)
    with pytest.raises(SizeLimitError, match=r"file 'big.bin' is 2048 bytes, over the"
                       r" 1024-byte per-file limit \(--max-file-size\)"):
        build_layer(tmp_path / "t", tmp_path / "x.tgz", limits=Limits(max_file=1024))


@pytest.fixture
def linked(tmp_path: Path) -> Path:
    """A tree with links: to a file, to a folder outside it, to its own root, dangling."""
    outside = tmp_path / "outside"
    write(outside / "shared.yaml", "shared: true\n")
    (outside / "shared.yaml").chmod(0o640)
    tree = tmp_path / "tree"
    write(tree / "a.yaml", "a: 1\n")
    (tree / "file-link.yaml").symlink_to("a.yaml")
    (tree / "dir-link").symlink_to(outside)
    (tree / "sub").mkdir()
    (tree / "sub" / "loop").symlink_to("..")
    return tree


def layer_files(tmp_path: Path, layer_path: Path) -> dict[str, bytes | None]:
    dest = tmp_path / "extracted"
    dest.mkdir()
    with open(layer_path, "rb") as f:
        extract_stream(f, dest)
    return snapshot(dest)


def test_links_are_left_out_with_a_warning(linked: Path, tmp_path: Path) -> None:
    warnings: list[str] = []
    layer = build_layer(linked, tmp_path / "x.tgz", warn=warnings.append)
    assert layer_files(tmp_path, layer.path) == {"a.yaml": b"a: 1\n", "sub": None}
    assert [w.split(" is ")[0] for w in warnings] == ["dir-link", "file-link.yaml", "sub/loop"]
    assert all("symbolic link" in w and "--resolve-symlinks" in w for w in warnings)
    # A link that the ignore rules drop anyway is not worth a warning.
    warnings.clear()
    build_layer(linked, tmp_path / "y.tgz", ["*link*"], warn=warnings.append)
    assert [w.split(" is ")[0] for w in warnings] == ["sub/loop"]
    warnings.clear()
    build_layer(linked, tmp_path / "z.tgz", ["*link*", "sub/"], warn=warnings.append)
    assert warnings == []


def test_resolve_symlinks_archives_the_targets(linked: Path, tmp_path: Path) -> None:
    warnings: list[str] = []
    layer = build_layer(linked, tmp_path / "x.tgz", resolve_symlinks=True,
                        warn=warnings.append)
    assert layer_files(tmp_path, layer.path) == {
        "a.yaml": b"a: 1\n", "dir-link": None, "dir-link/shared.yaml": b"shared: true\n",
        "file-link.yaml": b"a: 1\n", "sub": None}
    assert len(warnings) == 1 and warnings[0].startswith("sub/loop is")
    assert "loop" in warnings[0]
    # the target's mode, as flux copies it
    again = tmp_path / "again"
    again.mkdir()
    with open(layer.path, "rb") as f:
        extract_stream(f, again)
    assert (again / "dir-link" / "shared.yaml").stat().st_mode & 0o777 == 0o640


def test_resolve_symlinks_refuses_a_dangling_link(linked: Path, tmp_path: Path) -> None:
    (linked / "gone").symlink_to("nowhere.yaml")
    with pytest.raises(UsageError, match=r"gone is a symbolic link to nowhere\.yaml, which"
                       r" does not exist"):
        build_layer(linked, tmp_path / "x.tgz", resolve_symlinks=True)


def test_empty_artifact_warns(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    warnings: list[str] = []
    assert build_layer(empty, tmp_path / "x.tgz", warn=warnings.append).files == 0
    assert warnings == [f"the artifact holds no files: {empty} is empty or everything in it"
                        " is ignored"]
    write(tmp_path / "ignored" / "a.zip", "zip")
    warnings.clear()
    build_layer(tmp_path / "ignored", tmp_path / "y.tgz", ["*.zip"], warn=warnings.append)
    assert len(warnings) == 1 and "no files" in warnings[0]


# ------------------------------------------------------------------ through publish()


def request(reg: BackgroundRegistry, repo_tag: str, path: Path, **kw: Any) -> PushRequest:
    return PushRequest(url=f"oci://{reg.host}/{repo_tag}", path=str(path), source=SRC,
                       revision=REV, **kw)


def tag_digest(reg: BackgroundRegistry, remote: RegistryOptions, repo_tag: str) -> str | None:
    async def go() -> str | None:
        async with remote.client() as c:
            try:
                return (await c.get_manifest(parse_reference(f"{reg.host}/{repo_tag}"))).digest
            except NotFoundError:
                return None
    return run(go())


def test_diff_tag_unchanged_says_what_is_true(reg: BackgroundRegistry, remote: RegistryOptions,
                                              tmp_path: Path) -> None:
    write(tmp_path / "t" / "a.yaml", "a: 1\n")
    first = run(publish(request(reg, "acme/web:latest", tmp_path / "t"), remote))
    same = run(publish(request(reg, "acme/web:v1.3.0", tmp_path / "t", diff_tag="latest"),
                       remote))
    assert (same.push.pushed, same.push.tagged) == (False, False)
    assert same.digest == first.digest
    assert tag_digest(reg, remote, "acme/web:v1.3.0") is None  # never created
    message, url = same.lines()
    assert url == f"oci://{reg.host}/acme/web@{first.digest}"  # no tag that does not exist
    assert "nothing pushed and tag v1.3.0 not created (--tag-unchanged adds it)" in message
    assert same.to_json() == {"url": url, "repository": f"{reg.host}/acme/web",
                              "tag": "v1.3.0", "digest": first.digest, "pushed": False,
                              "tagged": False}
    tagged = run(publish(request(reg, "acme/web:v1.3.0", tmp_path / "t", diff_tag="latest",
                                 tag_unchanged=True), remote))
    assert (tagged.push.pushed, tagged.push.tagged) == (False, True)
    assert tag_digest(reg, remote, "acme/web:v1.3.0") == first.digest
    assert "tagged it v1.3.0" in tagged.lines()[0]


def test_tag_unchanged_needs_diff_tag(reg: BackgroundRegistry, remote: RegistryOptions,
                                      tmp_path: Path) -> None:
    write(tmp_path / "t" / "a.yaml", "a: 1\n")
    with pytest.raises(UsageError, match="--tag-unchanged needs --diff-tag"):
        run(publish(request(reg, "acme/web:v1", tmp_path / "t", tag_unchanged=True), remote))


def test_limits_are_checked_before_uploading_and_raised_on_both_sides(
        reg: BackgroundRegistry, remote: RegistryOptions, tmp_path: Path) -> None:
    write(tmp_path / "t" / "big.bin", "x" * 4000)
    with pytest.raises(SizeLimitError, match="per-file limit"):
        run(publish(request(reg, "acme/big:v1", tmp_path / "t", max_file_size="2Ki"), remote))
    assert tag_digest(reg, remote, "acme/big:v1") is None
    assert not [p for p in reg.storage.rglob("*") if p.is_file()]  # nothing uploaded
    run(publish(request(reg, "acme/big:v1", tmp_path / "t", max_file_size="4Ki"), remote))
    url = f"oci://{reg.host}/acme/big:v1"
    with pytest.raises(SizeLimitError, match="per-file limit"):
        run(pull(url, tmp_path / "out", remote, max_file_size="2Ki"))
    assert not (tmp_path / "out").exists()
    assert run(pull(url, tmp_path / "out", remote, max_file_size=4096)).files == 1


def test_warnings_reach_the_caller(reg: BackgroundRegistry, remote: RegistryOptions,
                                   tmp_path: Path) -> None:
    write(tmp_path / "t" / "a.yaml", "a: 1\n")
    os.symlink("a.yaml", tmp_path / "t" / "b.yaml")
    said: list[str] = []
    result = run(publish(request(reg, "acme/links:v1", tmp_path / "t"), remote,
                         warn=said.append))
    assert said == result.push.warnings and len(said) == 1 and said[0].startswith("b.yaml")
