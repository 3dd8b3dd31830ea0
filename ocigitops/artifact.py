"""The Flux-compatible artifact: layer, config and manifest, built and parsed.

Wire format (docs/formats.md section 1): an OCI image manifest with a Flux config
(``application/vnd.cncf.flux.config.v1+json``) and exactly one
``application/vnd.cncf.flux.content.v1.tar+gzip`` layer, annotated with created,
source and revision. JSON is serialised the way Go's ``encoding/json`` does it (struct
field order, sorted map keys, HTML-safe escapes) so our manifests hash like Flux's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from ocigitops import jsonsafe
from ocigitops import mediatypes as mt
from ocigitops.errors import NotAnArtifactError, OcigitopsError, UsageError
from ocigitops.extract import Limits
from ocigitops.ignore import matcher
from ocigitops.pgzip import ParallelGzipWriter
from ocigitops.registry import Descriptor
from ocigitops.tarball import Entry, walk, write_tar

REPRODUCIBLE_CREATED = "1970-01-01T00:00:00Z"
#: gzip level 6 = Go's default compression (and Go's gzip header, XFL=0); compressed on
#: all cores in pigz-style blocks (see :mod:`ocigitops.pgzip`).
GZIP_LEVEL = 6
STDIN_FILENAME = "manifests.yaml"


def go_json(doc: Any) -> bytes:
    """Serialise like Go's ``json.Marshal``: compact, UTF-8, ``<>&`` and U+2028/9 escaped.

    Dict insertion order is kept (callers build dicts in Go struct order); maps that Go
    would sort (annotations) must be passed sorted, see :func:`sorted_map`.
    """
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    text = (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    return text.encode()


def sorted_map(m: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``m`` with keys in Go's map-marshalling (byte) order."""
    return {k: m[k] for k in sorted(m, key=lambda s: s.encode())}


def now_rfc3339() -> str:
    """Current UTC time as Go's ``time.RFC3339`` (second precision, ``Z``)."""
    return datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Metadata:
    """What the manifest annotations say about where the content came from."""

    source: str
    revision: str
    created: str = ""
    annotations: dict[str, str] = field(default_factory=dict)

    def to_annotations(self) -> dict[str, str]:
        """Manifest annotations: created, source, revision, then user ones (user wins)."""
        out = {mt.ANN_CREATED: self.created or now_rfc3339(),
               mt.ANN_SOURCE: self.source, mt.ANN_REVISION: self.revision}
        out.update(self.annotations)
        return sorted_map(out)

    @classmethod
    def from_annotations(cls, ann: Mapping[str, str] | None) -> Metadata:
        """Split manifest annotations back into metadata."""
        ann = dict(ann or {})
        created = ann.pop(mt.ANN_CREATED, "")
        source = ann.pop(mt.ANN_SOURCE, "")
        revision = ann.pop(mt.ANN_REVISION, "")
        return cls(source=source, revision=revision, created=created, annotations=ann)


@dataclass(frozen=True)
class Layer:
    """A built layer on disk with its digests."""

    path: Path
    digest: str
    size: int
    diff_id: str
    #: Regular files in it (0: an empty artifact, worth a warning).
    files: int = 0

    def descriptor(self) -> Descriptor:
        """The layer descriptor as it goes into the manifest."""
        return Descriptor(mt.FLUX_CONTENT, self.digest, self.size)


class _HashingWriter:
    """File-like sink that hashes and counts what passes through."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def _stage_source(path: Path | str, stage: Path) -> Path:
    """Return what to archive: ``path`` itself, or a staged file holding stdin."""
    if str(path) == "-":
        target = stage / STDIN_FILENAME
        with open(target, "wb") as fh:
            shutil.copyfileobj(sys.stdin.buffer, fh)
        target.chmod(0o644)
        return target
    p = Path(path)
    if not p.exists():
        raise UsageError(f"--path {p}: no such file or directory")
    if not (p.is_dir() or p.is_file()):
        raise UsageError(f"--path {p}: not a regular file or directory")
    return p


#: Receives one line for each thing worth a warning (a link left out, no files at all).
Warn = Callable[[str], None]


def _within(entries: Iterator[Entry], limits: Limits, counts: list[int]) -> Iterator[Entry]:
    """``entries``, each checked against ``limits`` before its content is read, so a tree
    that a pull would refuse stops the packaging early; ``counts[0]`` counts the files."""
    total = 0
    for seen, e in enumerate(entries, start=1):
        limits.check_entries(seen, "the artifact")
        if not e.is_dir:
            limits.check_file(e.name, e.size, "file")
            total += e.size
            limits.check_total(total, "the artifact")
            counts[0] += 1
        yield e


def build_layer(path: Path | str, out_file: Path, ignore: Sequence[str] = (),
                progress: Callable[[int], None] | None = None, *,
                limits: Limits | None = None, resolve_symlinks: bool = False,
                warn: Warn | None = None) -> Layer:
    """Archive ``path`` (directory, file, or ``-`` for stdin) into ``out_file`` (tar+gzip).

    ``ignore`` holds gitignore-style patterns relative to the archived root. A file (or
    stdin, archived as ``manifests.yaml``) becomes a one-entry archive, as in Flux.

    ``limits``: raise SizeLimitError for a tree that a pull with these limits would
    refuse (file count, one file, all files, and the tar and gzip streams), checked while
    packaging, before anything is uploaded. ``resolve_symlinks``: archive what links point
    to (see :func:`ocigitops.tarball.walk`); otherwise each link left out is reported to
    ``warn``, and so is an artifact without a single file.
    """
    excluded = matcher(list(ignore))
    files = [0]
    with tempfile.TemporaryDirectory(prefix="ocigitops-stage-") as stage_dir:
        root = _stage_source(path, Path(stage_dir))
        tar_sha = hashlib.sha256()
        tar_size = [0]

        def skipped(name: str, why: str) -> None:
            if warn:
                warn(f"{name} is {why}")

        entries = walk(root, excluded, resolve_symlinks=resolve_symlinks, on_skip=skipped)
        checked = _within(entries, limits or Limits(max_total=1 << 62, max_file=1 << 62,
                                                    max_entries=1 << 62), files)
        with open(out_file, "wb") as raw:
            sink = _HashingWriter(raw)
            gz = ParallelGzipWriter(sink, level=GZIP_LEVEL)

            class _TarSink:
                def write(self, data: bytes) -> int:
                    tar_sha.update(data)
                    tar_size[0] += len(data)
                    if progress:
                        progress(len(data))
                    return gz.write(data)

            try:
                write_tar(checked, _TarSink())  # type: ignore[arg-type]
            finally:
                gz.close()
    if limits is not None:
        limits.check_stream(tar_size[0], "the artifact")
        limits.check_layer_size(sink.size, "the artifact's layer")
    if warn and files[0] == 0:
        warn(f"the artifact holds no files: {path} is empty or everything in it is ignored")
    return Layer(path=out_file, digest="sha256:" + sink.sha.hexdigest(), size=sink.size,
                 diff_id="sha256:" + tar_sha.hexdigest(), files=files[0])


#: go-containerregistry marshals the zero ``time.Time``; flux 2.7 never sets the config's
#: created time (the manifest annotation carries it), so every Flux config has this value.
GO_ZERO_TIME = "0001-01-01T00:00:00Z"


def build_config(diff_id: str) -> bytes:
    """The Flux config blob, byte for byte as ``flux push artifact`` (go-containerregistry
    mutating ``empty.Image``) writes it: only the layer's ``diff_id`` varies."""
    doc: dict[str, Any] = {
        "architecture": "",
        "created": GO_ZERO_TIME,
        "history": [{"created": GO_ZERO_TIME}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "config": {},
    }
    return go_json(doc)


def _go_descriptor(d: Descriptor) -> dict[str, Any]:
    # go-containerregistry's Descriptor field order: mediaType, size, digest, annotations.
    out: dict[str, Any] = {"mediaType": d.media_type, "size": d.size, "digest": d.digest}
    if d.annotations:
        out["annotations"] = sorted_map(d.annotations)
    if d.artifact_type:
        out["artifactType"] = d.artifact_type
    return out


def build_manifest(config: Descriptor, layers: Sequence[Descriptor],
                   annotations: Mapping[str, str]) -> bytes:
    """The image manifest bytes, field for field as go-containerregistry marshals them."""
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": _go_descriptor(config),
        "layers": [_go_descriptor(x) for x in layers],
    }
    if annotations:
        doc["annotations"] = sorted_map(annotations)
    return go_json(doc)


@dataclass(frozen=True)
class ArtifactManifest:
    """A parsed artifact manifest: its config and layers, and the chosen content layer."""

    config: Descriptor
    layers: list[Descriptor]
    annotations: dict[str, str]
    artifact_type: str | None

    @property
    def metadata(self) -> Metadata:
        """Source, revision, created and user annotations."""
        return Metadata.from_annotations(self.annotations)

    def select_layer(self, media_type: str | None = None) -> Descriptor:
        """The layer to extract: ``media_type`` if given, else the Flux content layer.

        Raises NotAnArtifactError naming the layer types present when none fits.
        """
        wanted = media_type or mt.FLUX_CONTENT
        for layer in self.layers:
            if layer.media_type == wanted:
                return layer
        present = ", ".join(sorted({x.media_type for x in self.layers})) or "none"
        hint = "" if media_type else " (pass --layer-selector MEDIATYPE to choose another)"
        raise NotAnArtifactError(f"no layer of media type {wanted} (layers: {present}){hint}")


def parse_manifest(data: bytes, media_type: str = "") -> ArtifactManifest:
    """Parse an image manifest; refuse indexes and anything that is not one."""
    try:
        doc = jsonsafe.loads(data, "manifest")
    except OcigitopsError as e:
        raise NotAnArtifactError(str(e)) from e
    if not isinstance(doc, dict):
        raise NotAnArtifactError("manifest is not a JSON object")
    kind = str(doc.get("mediaType") or media_type)
    if kind in mt.INDEX_TYPES or "manifests" in doc:
        raise NotAnArtifactError("reference points to an image index (a multi-platform image"
                                 " or signature index), not an artifact manifest")
    if kind not in (mt.OCI_MANIFEST, mt.DOCKER_MANIFEST):
        raise NotAnArtifactError(f"unsupported manifest media type {kind or '(none)'}")
    try:
        config = Descriptor.from_json(doc.get("config"))
        layers = [Descriptor.from_json(x) for x in doc.get("layers") or []]
    except ValueError as e:
        raise NotAnArtifactError(f"malformed manifest: {e}") from e
    ann = doc.get("annotations")
    return ArtifactManifest(
        config=config, layers=layers,
        annotations={str(k): str(v) for k, v in ann.items()} if isinstance(ann, dict) else {},
        artifact_type=str(doc["artifactType"]) if doc.get("artifactType") else None)
