"""Helm charts as data: read ``Chart.yaml``, package a chart directory, read a chart archive.

Shared by ``push chart`` (the publisher) and the HelmChart source (the controller), so
both package a chart the same way and neither needs the helm binary. Charts are hostile
input in the controller (they come from a Helm repository, a Git tree or a registry), so
every read here is bounded and every path is checked:

- **limits** are Helm's own when it loads a chart (``helm`` 3.x ``--max-chart-size`` and
  ``--max-file-size`` defaults): 100 MiB of files in all, 5 MiB per file, plus at most
  10,000 files (Helm has no count limit; a real chart has tens);
- **archives** are read with :func:`ocigitops.extract.extract_stream` (no absolute paths,
  no ``..``, no links of any kind, no devices, a gzip bomb stopped while decompressing)
  and must hold one top-level folder with a ``Chart.yaml``;
- **directories** are walked without following links: a symbolic link, socket, device or
  FIFO in a chart is an error naming it (Helm follows links; a chart from a Git source
  must not reach outside its tree);
- **YAML** is read with the safe loader, refusing aliases (a "billion laughs" through
  merge keys expands for real), duplicate keys (Go's YAML reader, Helm's, refuses them)
  and documents over the size limit.

Packages are deterministic: files only (as ``helm package``), ``Chart.yaml`` first, then
``values.yaml``, then every other file in byte order; each under ``<chart name>/`` (the
name from ``Chart.yaml``, as Helm names the folder), mode 0644, zero owners and times,
gzip with no name and time. The same tree always gives the same digest.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import yaml

from ocigitops.digests import digest_of
from ocigitops.errors import OcigitopsError, SizeLimitError, UnsafeArchiveError
from ocigitops.extract import Limits, extract_stream
from ocigitops.tags import parse_semver
from ocigitops.tarball import BLOCK, header_blocks

#: Helm's MaxDecompressedChartSize and MaxDecompressedFileSize defaults.
CHART_MAX_TOTAL = 100 * 1024 * 1024
CHART_MAX_FILE = 5 * 1024 * 1024
CHART_MAX_ENTRIES = 10_000
CHART_LIMITS = Limits(max_total=CHART_MAX_TOTAL, max_file=CHART_MAX_FILE,
                      max_entries=CHART_MAX_ENTRIES)
#: Flux's default ``--helm-chart-max-size``: the largest chart archive (compressed) the
#: controller downloads; ``push chart`` refuses larger ones, which would never deploy.
CHART_ARCHIVE_MAX = 10 * 1024 * 1024

#: Helm's chart name rule (``chartutil`` since 3.13): letters, digits, ``.``, ``_``, ``-``.
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,250}$")
#: Helm's default ``.helmignore`` rule: dotfiles under templates/ are never rendered.
_DEFAULT_IGNORE = ("templates/.?*",)
_FILE_MODE = 0o644


class ChartError(OcigitopsError):
    """A chart (directory, archive, Chart.yaml or values file) is invalid or unsafe."""


@dataclass(frozen=True)
class ChartMeta:
    """What ``Chart.yaml`` says that matters here."""

    name: str
    version: str
    api_version: str = "v2"
    app_version: str | None = None

    @property
    def tag(self) -> str:
        """The OCI tag Helm pushes this version under (``+`` is not allowed in a tag:
        Helm writes ``_`` instead, and reads it back as ``+``)."""
        return oci_tag(self.version)


def oci_tag(version: str) -> str:
    """``1.2.3+build`` -> ``1.2.3_build``, as ``helm push`` tags a chart version."""
    return version.replace("+", "_")


def version_of_tag(tag: str) -> str:
    """The chart version a Helm OCI tag names (``_`` back to ``+``)."""
    return tag.replace("_", "+")


class _StrictLoader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader")  # type: ignore[misc]
                    else yaml.SafeLoader):
    """The safe loader, refusing duplicate mapping keys and merge keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise ChartError("YAML merge keys (<<) are not accepted")
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
            if key in seen:
                raise ChartError(f"duplicate key {str(key)[:80]!r} (line"
                                 f" {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep)


class _NoAliasLoader(_StrictLoader):
    """:class:`_StrictLoader`, also refusing aliases (used when the text could hold one)."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # An alias is the same node object met a second time: refused, so a document
        # cannot multiply itself ("billion laughs") once constructed and walked.
        if node in self.constructed_objects or node in self.recursive_objects:
            raise ChartError("YAML aliases are not accepted")
        return super().construct_object(node, deep)


#: Deepest nesting accepted in a YAML document (values, Chart.yaml, an index): far past
#: any real chart, short of what recursive code (merging, dumping) could not handle.
MAX_YAML_DEPTH = 100


def _check_depth(doc: Any, what: str) -> None:
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_YAML_DEPTH:
            raise ChartError(f"{what} is nested deeper than {MAX_YAML_DEPTH} levels")
        if isinstance(node, Mapping):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def load_yaml(data: bytes, what: str, max_bytes: int) -> Any:
    """One YAML document from untrusted bytes: at most ``max_bytes``, safe types only, no
    aliases, no duplicate keys. Raises :class:`ChartError` naming ``what``."""
    if len(data) > max_bytes:
        raise SizeLimitError(f"{what} is {len(data)} bytes, over the {max_bytes}-byte limit")
    try:
        # An alias needs an anchor (``&name``): text without '&' cannot hold one, and
        # is read without the per-node alias check (a third faster on a large index).
        loader = _NoAliasLoader if b"&" in data else _StrictLoader
        doc = yaml.load(data, Loader=loader)  # SafeLoader subclasses
        _check_depth(doc, what)
        return doc
    except ChartError as e:
        raise ChartError(f"{what}: {e}") from None
    except yaml.YAMLError as e:
        first = " ".join(str(e).split())[:300]
        raise ChartError(f"{what} is not valid YAML: {first}") from None
    except RecursionError:
        raise ChartError(f"{what} is nested too deeply") from None


def check_chart_name(name: object, what: str = "Chart.yaml") -> str:
    """A valid chart name, or :class:`ChartError`."""
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise ChartError(f"{what}: chart name {str(name)[:80]!r} is invalid (letters,"
                         " digits, '.', '_' and '-', at most 250)")
    return name


def check_chart_version(version: object, what: str = "Chart.yaml") -> str:
    """A chart version Helm accepts (semver, a leading ``v`` and missing minor or patch
    allowed, as Masterminds' ``NewVersion``), or :class:`ChartError`."""
    if isinstance(version, int | float) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or not version or len(version) > 128 \
            or parse_semver(version) is None:
        raise ChartError(f"{what}: version {str(version)[:80]!r} is not a semantic version"
                         " (e.g. 1.2.3)")
    return version


def parse_chart_yaml(data: bytes, what: str = "Chart.yaml") -> ChartMeta:
    """Read ``Chart.yaml``: ``name`` and ``version`` are required and checked, as Helm's
    ``Metadata.Validate`` does (``apiVersion`` v1 or v2)."""
    doc = load_yaml(data, what, CHART_MAX_FILE)
    if not isinstance(doc, Mapping):
        raise ChartError(f"{what} is not a YAML mapping")
    api = doc.get("apiVersion", "v1")
    if api not in ("v1", "v2"):
        raise ChartError(f"{what}: apiVersion {str(api)[:40]!r} is not v1 or v2")
    app = doc.get("appVersion")
    return ChartMeta(name=check_chart_name(doc.get("name"), what),
                     version=check_chart_version(doc.get("version"), what),
                     api_version=str(api), app_version=None if app is None else str(app))


# -- Helm's OCI format ----------------------------------------------------------------------

#: ``chart.Metadata``'s JSON field order (Helm marshals the struct, empty fields omitted):
#: the config blob ``helm push`` writes.
_METADATA_FIELDS = ("name", "home", "sources", "version", "description", "keywords",
                    "maintainers", "icon", "apiVersion", "condition", "tags", "appVersion",
                    "deprecated", "annotations", "kubeVersion", "dependencies", "type")


def helm_config(chart_yaml: bytes) -> bytes:
    """The config blob of a chart pushed in Helm's OCI format
    (``application/vnd.cncf.helm.config.v1+json``): ``Chart.yaml`` as Helm marshals its
    metadata, compact JSON in the struct's field order."""
    import json

    doc = load_yaml(chart_yaml, "Chart.yaml", CHART_MAX_FILE)
    if not isinstance(doc, Mapping):
        raise ChartError("Chart.yaml is not a YAML mapping")
    out = {k: doc[k] for k in _METADATA_FIELDS if doc.get(k) not in (None, "", [], {}, False)}
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def helm_annotations(chart_yaml: bytes, created: str) -> dict[str, str]:
    """The manifest annotations ``helm push`` writes: created, description, title, version,
    url, source and authors from ``Chart.yaml``, then the chart's own annotations (never
    overriding those)."""
    doc = load_yaml(chart_yaml, "Chart.yaml", CHART_MAX_FILE)
    if not isinstance(doc, Mapping):
        raise ChartError("Chart.yaml is not a YAML mapping")
    out = {"org.opencontainers.image.created": created,
           "org.opencontainers.image.title": str(doc.get("name", "")),
           "org.opencontainers.image.version": str(doc.get("version", ""))}
    if doc.get("description"):
        out["org.opencontainers.image.description"] = str(doc["description"])
    if doc.get("home"):
        out["org.opencontainers.image.url"] = str(doc["home"])
    sources = doc.get("sources")
    if isinstance(sources, list) and sources:
        out["org.opencontainers.image.source"] = str(sources[0])
    people = doc.get("maintainers")
    if isinstance(people, list) and people:
        names = [f"{m.get('name', '')}" + (f" ({m['email']})" if m.get("email") else "")
                 for m in people if isinstance(m, Mapping)]
        out["org.opencontainers.image.authors"] = ", ".join(n for n in names if n)
    extra = doc.get("annotations")
    if isinstance(extra, Mapping):
        for k, v in extra.items():
            out.setdefault(str(k), str(v))
    return {k: v for k, v in out.items() if v}


# -- values ---------------------------------------------------------------------------------


def merge_values(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` deep-merged into ``base``: maps merge key by key, anything else (lists
    included) is replaced, as Helm and Flux merge values files."""
    out = dict(base)
    for key, value in override.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = merge_values(old, value)
        else:
            out[key] = value
    return out


def read_values(data: bytes, what: str) -> dict[str, Any]:
    """One values file: a YAML mapping (an empty file is an empty mapping)."""
    doc = load_yaml(data, what, CHART_MAX_FILE)
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ChartError(f"{what} is not a YAML mapping")
    return dict(doc)


def merged_values(files: Sequence[tuple[str, bytes]]) -> bytes:
    """The ``values.yaml`` of several values files merged in order (the last wins)."""
    merged: dict[str, Any] = {}
    for name, data in files:
        merged = merge_values(merged, read_values(data, name))
    text: str = yaml.safe_dump(merged, sort_keys=True, default_flow_style=False)
    return text.encode()


# -- safe paths inside a tree ----------------------------------------------------------------


def relative_path(value: str, what: str) -> PurePosixPath:
    """A path inside a tree (``./charts/app``, ``values-prod.yaml``): relative, no ``..``
    that leaves it; normalised. Raises :class:`ChartError`."""
    if not value or "\0" in value or "\\" in value:
        raise ChartError(f"{what} {value!r} is not a valid path")
    p = PurePosixPath(value)
    if p.is_absolute():
        raise ChartError(f"{what} {value!r} must be relative")
    parts: list[str] = []
    for part in p.parts:
        if part == "..":
            if not parts:
                raise ChartError(f"{what} {value!r} leaves the source")
            parts.pop()
        elif part != ".":
            parts.append(part)
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def inside(root: Path, rel: PurePosixPath, what: str) -> Path:
    """``root/rel``, refusing a path that goes through a symbolic link or leaves ``root``
    (the tree is untrusted: a link could point anywhere on the machine)."""
    path = root
    for part in rel.parts:
        if part == ".":
            continue
        path = path / part
        if path.is_symlink():
            raise ChartError(f"{what} goes through the symbolic link {part!r}")
    if not path.resolve().is_relative_to(root.resolve()):
        raise ChartError(f"{what} leaves the source")
    return path


# -- packaging -------------------------------------------------------------------------------


def _ignore_rules(chart_dir: Path) -> Callable[[str, bool], bool]:
    import pathspec

    lines = list(_DEFAULT_IGNORE)
    f = chart_dir / ".helmignore"
    if f.is_file() and not f.is_symlink():
        st = f.stat()
        if st.st_size > CHART_MAX_FILE:
            raise SizeLimitError(f".helmignore is {st.st_size} bytes, over the"
                                 f" {CHART_MAX_FILE}-byte limit")
        lines += [ln for ln in f.read_text(errors="replace").splitlines()
                  if ln.strip() and not ln.lstrip().startswith("#")]
    spec = pathspec.GitIgnoreSpec.from_lines(lines)

    def ignored(rel: str, is_dir: bool) -> bool:
        return bool(spec.match_file(rel + "/" if is_dir else rel))

    return ignored


def chart_files(chart_dir: Path, limits: Limits = CHART_LIMITS) -> list[tuple[str, Path, int]]:
    """``(relative name, path, size)`` of every file ``helm package`` would include, in
    package order (``Chart.yaml``, ``values.yaml``, then byte order), honouring
    ``.helmignore``. Links, sockets, devices and FIFOs are errors naming the entry; the
    file count, each file and the total are checked against ``limits``."""
    if chart_dir.is_symlink() or not chart_dir.is_dir():
        raise ChartError(f"{chart_dir} is not a chart directory")
    ignored = _ignore_rules(chart_dir)
    out: list[tuple[str, Path, int]] = []
    total = 0

    def visit(directory: Path, rel: str) -> Iterator[tuple[str, Path, int]]:
        for n in sorted(os.listdir(directory), key=os.fsencode):
            p = directory / n
            name = f"{rel}/{n}" if rel else n
            st = p.lstat()
            if stat.S_ISDIR(st.st_mode):
                if not ignored(name, True):
                    yield from visit(p, name)
            elif stat.S_ISREG(st.st_mode):
                if not ignored(name, False):
                    yield name, p, st.st_size
            elif not ignored(name, False):
                kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else \
                    "not a regular file (a socket, device or FIFO)"
                raise ChartError(f"chart entry {name!r} is {kind}: charts may hold regular"
                                 " files only")

    for name, p, size in visit(chart_dir, ""):
        limits.check_entries(len(out) + 1, "chart")
        limits.check_file(name, size, "chart file")
        total += size
        limits.check_total(total, "chart")
        out.append((name, p, size))
    first = {"Chart.yaml": 0, "values.yaml": 1}
    out.sort(key=lambda e: (first.get(e[0], 2), os.fsencode(e[0])))
    if not out or out[0][0] != "Chart.yaml":
        raise ChartError(f"{chart_dir} has no Chart.yaml")
    return out


def _read_bounded(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        data = f.read(size + 1)
    if len(data) != size:
        raise ChartError(f"{path.name} changed while the chart was being packaged")
    return data


@dataclass(frozen=True)
class PackagedChart:
    """A chart archive written to disk."""

    meta: ChartMeta
    path: Path
    digest: str
    size: int


def package_chart(chart_dir: Path, out: Path, *, values: bytes | None = None,
                  limits: Limits = CHART_LIMITS) -> PackagedChart:
    """Package ``chart_dir`` into the ``.tgz`` ``out`` (deterministic; see the module).

    ``values`` replaces the chart's ``values.yaml`` (merged values files). Raises
    :class:`ChartError` (no or invalid ``Chart.yaml``, a link in the tree) and
    :class:`~ocigitops.errors.SizeLimitError`.
    """
    files = chart_files(chart_dir, limits)
    meta = parse_chart_yaml(_read_bounded(files[0][1], files[0][2]),
                            f"{chart_dir.name}/Chart.yaml")
    if values is not None:
        files = [f for f in files if f[0] != "values.yaml"]
        files.insert(1, ("values.yaml", Path(), len(values)))
    buf = out.open("wb")
    try:
        # mtime=0 and no file name: the same tree gives the same bytes.
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0,
                           compresslevel=9) as gz:
            for name, path, size in files:
                data = values if values is not None and name == "values.yaml" \
                    else _read_bounded(path, size)
                assert data is not None
                gz.write(header_blocks(f"{meta.name}/{name}", _FILE_MODE, len(data), False))
                gz.write(data)
                gz.write(b"\0" * (-len(data) % BLOCK))
            gz.write(b"\0" * (2 * BLOCK))
    finally:
        buf.close()
    blob = out.read_bytes()
    return PackagedChart(meta=meta, path=out, digest=digest_of(blob), size=len(blob))


# -- reading archives ------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedChart:
    """A chart archive unpacked into a directory."""

    meta: ChartMeta
    #: The chart's folder (``<dir>/<top-level folder>``).
    root: Path


def unpack_chart(stream: IO[bytes], dest: Path, *, limits: Limits = CHART_LIMITS,
                 deadline: float | None = None) -> LoadedChart:
    """Unpack a chart ``.tgz`` into the empty directory ``dest`` and read its
    ``Chart.yaml``. The archive must hold exactly one top-level folder (as Helm writes
    it); hostile archives are refused by :func:`~ocigitops.extract.extract_stream`."""
    try:
        extract_stream(stream, dest, limits, deadline=deadline)
    except UnsafeArchiveError as e:
        raise type(e)(f"chart archive: {e}") from None
    tops = [p for p in dest.iterdir()]
    dirs = [p for p in tops if p.is_dir() and not p.is_symlink()]
    if len(tops) != 1 or len(dirs) != 1:
        names = ", ".join(sorted(p.name for p in tops)[:5]) or "nothing"
        raise ChartError(f"chart archive must hold one top-level folder, not {names}")
    chart_yaml = dirs[0] / "Chart.yaml"
    if not chart_yaml.is_file():
        raise ChartError(f"chart archive has no {dirs[0].name}/Chart.yaml")
    meta = parse_chart_yaml(chart_yaml.read_bytes(), f"{dirs[0].name}/Chart.yaml")
    return LoadedChart(meta=meta, root=dirs[0])


def read_chart_archive_file(data: bytes, *, limits: Limits = CHART_LIMITS,
                            ) -> tuple[ChartMeta, bytes]:
    """Validate a chart archive held in memory (unpacked into a private temporary
    directory, removed after): its metadata and its ``Chart.yaml`` bytes."""
    tmp = Path(tempfile.mkdtemp(prefix="ocigitops-chart-"))
    try:
        loaded = unpack_chart(io.BytesIO(data), tmp, limits=limits)
        return loaded.meta, (loaded.root / "Chart.yaml").read_bytes()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_chart_meta(data: bytes, *, limits: Limits = CHART_LIMITS) -> ChartMeta:
    """The ``Chart.yaml`` of a chart archive held in memory, the archive checked."""
    return read_chart_archive_file(data, limits=limits)[0]

