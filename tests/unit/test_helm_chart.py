"""Chart packaging and reading (ocigitops.chart): Helm's layout, determinism, strict YAML,
bounded and path-safe reads of hostile archives and trees, values merging, Helm's OCI
config and annotations."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from ocigitops.chart import (
    CHART_LIMITS,
    ChartError,
    chart_files,
    check_chart_version,
    helm_annotations,
    helm_config,
    inside,
    load_yaml,
    merge_values,
    merged_values,
    oci_tag,
    package_chart,
    parse_chart_yaml,
    read_chart_archive_file,
    read_chart_meta,
    relative_path,
    version_of_tag,
)
from ocigitops.errors import SizeLimitError, UnsafeArchiveError
from ocigitops.extract import Limits

EXAMPLE = Path(__file__).resolve().parents[2] / "ocigitops" / "examples" / "charts" / "hello"


def _chart(root: Path, name: str = "web", version: str = "1.0.0") -> Path:
    d = root / "src"
    (d / "templates").mkdir(parents=True)
    (d / "Chart.yaml").write_text(f"apiVersion: v2\nname: {name}\nversion: {version}\n")
    (d / "values.yaml").write_text("a: 1\n")
    (d / "templates" / "cm.yaml").write_text("kind: ConfigMap\n")
    (d / "templates" / ".hidden").write_text("x")  # Helm's default rule drops it
    (d / "README.md").write_text("hi")
    return d


def test_package_layout_and_determinism(tmp_path: Path) -> None:
    d = _chart(tmp_path)
    a = package_chart(d, tmp_path / "a.tgz")
    b = package_chart(d, tmp_path / "b.tgz")
    assert a.digest == b.digest and a.size == b.size
    assert (a.meta.name, a.meta.version) == ("web", "1.0.0")
    with tarfile.open(a.path) as tar:
        members = tar.getmembers()
    # The chart's name (not the folder's) as top folder, Chart.yaml then values.yaml first,
    # files only, 0644, zero owners and times.
    assert [m.name for m in members] == ["web/Chart.yaml", "web/values.yaml", "web/README.md",
                                         "web/templates/cm.yaml"]
    assert all(m.isfile() and m.mode == 0o644 and m.mtime == 0 and m.uid == 0
               for m in members)
    assert gzip.decompress(a.path.read_bytes())  # a plain gzip stream
    assert a.path.read_bytes()[4:8] == b"\0\0\0\0"  # gzip MTIME zero


def test_helmignore_and_values_override(tmp_path: Path) -> None:
    d = _chart(tmp_path)
    (d / ".helmignore").write_text("# comment\nREADME.md\n")
    out = package_chart(d, tmp_path / "c.tgz", values=b"b: 2\n")
    with tarfile.open(out.path) as tar:
        names = tar.getnames()
        values = tar.extractfile("web/values.yaml").read()  # type: ignore[union-attr]
    assert "web/README.md" not in names and "web/.helmignore" in names
    assert values == b"b: 2\n"


def test_links_and_specials_refused(tmp_path: Path) -> None:
    d = _chart(tmp_path)
    (d / "templates" / "passwd.yaml").symlink_to("/etc/passwd")
    with pytest.raises(ChartError, match="symbolic link"):
        package_chart(d, tmp_path / "x.tgz")


def test_bounds_when_packaging(tmp_path: Path) -> None:
    d = _chart(tmp_path)
    (d / "templates" / "big.yaml").write_bytes(b"a" * 2048)
    with pytest.raises(SizeLimitError, match="per-file limit"):
        chart_files(d, Limits(max_total=10_000, max_file=1024, max_entries=100))
    with pytest.raises(SizeLimitError, match="more than 3 entries"):
        chart_files(d, Limits(max_total=10_000, max_file=4096, max_entries=3))
    with pytest.raises(ChartError, match=r"no Chart\.yaml"):
        (d / "Chart.yaml").unlink()
        chart_files(d)


@pytest.mark.parametrize(("doc", "message"), [
    (b"apiVersion: v2\nname: web\n", "not a semantic version"),
    (b"apiVersion: v2\nname: ../evil\nversion: 1.0.0\n", "chart name"),
    (b"apiVersion: v3\nname: web\nversion: 1.0.0\n", "not v1 or v2"),
    (b"apiVersion: v2\nname: web\nname: other\nversion: 1.0.0\n", "duplicate key"),
    (b"a: &x {b: 1}\nname: *x\n", "aliases"),
    (b"- not\n- a mapping\n", "not a YAML mapping"),
    (b"name: [unclosed\n", "not valid YAML"),
])
def test_chart_yaml_refused(doc: bytes, message: str) -> None:
    with pytest.raises(ChartError, match=message):
        parse_chart_yaml(doc)


def test_chart_yaml_accepted() -> None:
    meta = parse_chart_yaml(b"name: web\nversion: v1.2\nappVersion: 3\n")
    assert (meta.api_version, meta.version, meta.app_version) == ("v1", "v1.2", "3")
    assert check_chart_version("1.2.3-rc.1+b") == "1.2.3-rc.1+b"


def test_yaml_bounds() -> None:
    with pytest.raises(SizeLimitError):
        load_yaml(b"a: 1\n" * 100, "doc", 64)
    with pytest.raises(ChartError, match="merge keys"):
        load_yaml(b"base: {a: 1}\nx:\n  <<: {a: 2}\n", "doc", 1024)
    deep = b"[" * 5000 + b"]" * 5000
    with pytest.raises(ChartError, match="nested deeper than 100"):
        load_yaml(deep, "doc", 1 << 20)


def _tgz(members: list[tuple[str, bytes | None, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = "/etc/passwd"
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data) if data else None)
    return gzip.compress(buf.getvalue())


CHART_YAML = b"apiVersion: v2\nname: web\nversion: 1.0.0\n"


def test_read_archive(tmp_path: Path) -> None:
    packaged = package_chart(_chart(tmp_path), tmp_path / "ok.tgz")
    meta, chart_yaml = read_chart_archive_file(packaged.path.read_bytes())
    assert meta.name == "web" and chart_yaml.startswith(b"apiVersion: v2")


@pytest.mark.parametrize(("members", "error", "message"), [
    ([("web/Chart.yaml", CHART_YAML, tarfile.REGTYPE),
      ("web/../../x", b"x", tarfile.REGTYPE)], UnsafeArchiveError, "path traversal"),
    ([("web/Chart.yaml", CHART_YAML, tarfile.REGTYPE),
      ("/abs", b"x", tarfile.REGTYPE)], UnsafeArchiveError, "absolute path"),
    ([("web/Chart.yaml", CHART_YAML, tarfile.REGTYPE),
      ("web/l", None, tarfile.SYMTYPE)], UnsafeArchiveError, "links are not allowed"),
    ([("web/Chart.yaml", CHART_YAML, tarfile.REGTYPE),
      ("web/fifo", None, tarfile.FIFOTYPE)], UnsafeArchiveError, "device or FIFO"),
    ([("web/Chart.yaml", CHART_YAML, tarfile.REGTYPE),
      ("other/Chart.yaml", CHART_YAML, tarfile.REGTYPE)], ChartError, "one top-level"),
    ([("web/values.yaml", b"a: 1", tarfile.REGTYPE)], ChartError, "no web/Chart.yaml"),
    ([("Chart.yaml", CHART_YAML, tarfile.REGTYPE)], ChartError, "one top-level"),
])
def test_hostile_archives(members: list[tuple[str, bytes | None, bytes]],
                          error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        read_chart_meta(_tgz(members))


def test_archive_bomb_stopped() -> None:
    # 6 MiB of zeros compress to a few KiB: refused at Helm's 5 MiB per-file limit.
    data = _tgz([("web/Chart.yaml", CHART_YAML, tarfile.REGTYPE),
                 ("web/zeros", b"\0" * (6 * 1024 * 1024), tarfile.REGTYPE)])
    assert len(data) < 64 * 1024
    with pytest.raises(SizeLimitError):
        read_chart_meta(data, limits=CHART_LIMITS)


def test_values_merge() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    assert merge_values(base, {"a": {"c": [3]}, "e": 1}) == {"a": {"b": 1, "c": [3]},
                                                             "d": "x", "e": 1}
    out = merged_values([("v1", b"a: {b: 1}\nlist: [1]\n"), ("v2", b"a: {c: 2}\n"),
                         ("empty", b"")])
    assert out == b"a:\n  b: 1\n  c: 2\nlist:\n- 1\n"
    with pytest.raises(ChartError, match="not a YAML mapping"):
        merged_values([("v", b"- 1\n")])


def test_paths(tmp_path: Path) -> None:
    assert str(relative_path("./charts/app/", "spec.chart")) == "charts/app"
    assert str(relative_path("a/../b", "x")) == "b"
    for bad in ("/etc", "../up", "a/../../b", "", "a\\b"):
        with pytest.raises(ChartError):
            relative_path(bad, "spec.chart")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(ChartError, match="symbolic link"):
        inside(tmp_path, relative_path("link/x", "p"), "p")
    assert inside(tmp_path, relative_path("real", "p"), "p") == tmp_path / "real"


def test_helm_oci_format() -> None:
    chart_yaml = (EXAMPLE / "Chart.yaml").read_bytes()
    # Byte for byte the config helm 3.19 pushes for this chart (helm push, observed).
    assert helm_config(chart_yaml) == (
        b'{"name":"hello","version":"0.1.0","description":"A minimal chart for the'
        b' ocigitops examples and rendering tests.","apiVersion":"v2","appVersion":"6.7.0",'
        b'"type":"application"}')
    ann = helm_annotations(chart_yaml, "2026-01-01T00:00:00Z")
    assert ann == {"org.opencontainers.image.created": "2026-01-01T00:00:00Z",
                   "org.opencontainers.image.title": "hello",
                   "org.opencontainers.image.version": "0.1.0",
                   "org.opencontainers.image.description": "A minimal chart for the"
                   " ocigitops examples and rendering tests."}
    assert oci_tag("1.2.3+build.1") == "1.2.3_build.1"
    assert version_of_tag("1.2.3_build.1") == "1.2.3+build.1"
