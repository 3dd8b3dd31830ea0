"""Publisher operations on artifacts: push, tag, diff, list, build.

Each function takes an open :class:`~ocigitops.registry.RegistryClient` and plain values
and returns a dataclass; the CLI only parses flags and prints. Pulling lives in the core
(:mod:`ocigitops.pull`) because the in-cluster puller needs it too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ocigitops import mediatypes as mt
from ocigitops.artifact import (
    REPRODUCIBLE_CREATED,
    ArtifactManifest,
    Layer,
    Metadata,
    build_config,
    build_layer,
    build_manifest,
    now_rfc3339,
    parse_manifest,
)
from ocigitops.errors import NotFoundError, UsageError
from ocigitops.extract import BoundedGunzip
from ocigitops.reference import Reference, validate_tag
from ocigitops.registry import Descriptor, RegistryClient, sha256_digest
from ocigitops.tags import filter_tags

ProgressFactory = Callable[[str, int], Callable[[int], None] | None]


@dataclass
class PushResult:
    """What a push did. ``pushed`` is False when ``--diff-tag`` found identical content."""

    url: str
    repository: str
    tag: str
    digest: str
    pushed: bool = True
    message: str = ""
    layer_digest: str = ""
    diff_id: str = ""

    def to_json(self) -> dict[str, object]:
        """The ``-o json`` document (Flux's fields plus ``pushed``)."""
        return {"url": self.url, "repository": self.repository, "tag": self.tag,
                "digest": self.digest, "pushed": self.pushed}


async def _remote_diff_id(client: RegistryClient, ref: Reference,
                          manifest: ArtifactManifest) -> str:
    """The uncompressed-tar digest of the remote content layer.

    Read from the config's ``rootfs.diff_ids`` when it has one (Flux and we write it);
    otherwise computed by streaming and gunzipping the layer.
    """
    layer = manifest.select_layer()
    if manifest.config.size <= 64 * 1024:
        cfg = await client.fetch_blob(ref, manifest.config, max_size=64 * 1024)
        try:
            diff_ids = json.loads(cfg).get("rootfs", {}).get("diff_ids") or []
            if len(diff_ids) == len(manifest.layers):
                return str(diff_ids[manifest.layers.index(layer)])
        except (ValueError, AttributeError):
            pass
    h = hashlib.sha256()
    with tempfile.TemporaryFile() as spool:
        async for chunk in client.stream_blob(ref, layer):
            spool.write(chunk)
        spool.seek(0)
        gz = BoundedGunzip(spool, 8 * 1024 * 1024 * 1024)
        while chunk := gz.read(1024 * 1024):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


async def push_artifact(
    client: RegistryClient,
    ref: Reference,
    path: Path | str,
    meta: Metadata,
    *,
    ignore: Sequence[str] = (),
    reproducible: bool = False,
    diff_tag: str | None = None,
    progress: ProgressFactory | None = None,
) -> PushResult:
    """Package ``path`` and push it to ``ref`` (which must carry a tag).

    With ``diff_tag`` the content is compared with that tag first (by the digest of the
    uncompressed tar, so artifacts pushed by Flux compare equal too) and nothing is
    pushed when it is the same.
    """
    if not ref.tag or ref.digest:
        raise UsageError(f"{ref.url()}: push needs a tag (oci://repo:tag), not a digest")
    if not meta.source or not meta.revision:
        raise UsageError("--source and --revision are required outside a Git checkout and"
                         " GitHub Actions")
    with tempfile.TemporaryDirectory(prefix="ocigitops-push-") as tmp:
        layer: Layer = build_layer(path, Path(tmp) / "artifact.tgz", ignore)
        if diff_tag:
            validate_tag(diff_tag)
            try:
                remote = await client.get_manifest(ref.with_tag(diff_tag))
                remote_manifest = parse_manifest(remote.data, remote.media_type)
                remote_diff = await _remote_diff_id(client, ref, remote_manifest)
            except NotFoundError:
                remote_diff = ""
            if remote_diff == layer.diff_id:
                return PushResult(
                    url=ref.with_tag(ref.tag).url(), repository=ref.name, tag=ref.tag,
                    digest=remote.digest, pushed=False, layer_digest=layer.digest,
                    diff_id=layer.diff_id,
                    message=f"content unchanged from tag {diff_tag} ({remote.digest}):"
                            " nothing pushed")
        created = REPRODUCIBLE_CREATED if reproducible else (meta.created or now_rfc3339())
        meta = Metadata(source=meta.source, revision=meta.revision, created=created,
                        annotations=dict(meta.annotations))
        config = build_config(layer.diff_id)
        config_desc = Descriptor(mt.FLUX_CONFIG, sha256_digest(config), len(config))
        on_progress = progress("upload", layer.size) if progress else None
        await asyncio.gather(
            client.push_blob(ref, layer.digest, layer.size, layer.path, progress=on_progress),
            client.push_blob(ref, config_desc.digest, config_desc.size, config),
        )
        manifest = build_manifest(config_desc, [layer.descriptor()], meta.to_annotations())
        digest, _ = await client.put_manifest(ref, manifest, mt.OCI_MANIFEST, tag=ref.tag)
    return PushResult(url=ref.url(), repository=ref.name, tag=ref.tag, digest=digest,
                      layer_digest=layer.digest, diff_id=layer.diff_id,
                      message=f"pushed {ref.url()}@{digest}")


async def tag_artifact(client: RegistryClient, ref: Reference, tags: Sequence[str]) -> str:
    """Add ``tags`` to the manifest ``ref`` points at (bytes copied exactly). Returns digest."""
    if not tags:
        raise UsageError("at least one --tag is required")
    for t in tags:
        validate_tag(t)
    m = await client.get_manifest(ref)
    for t in tags:
        await client.put_manifest(ref, m.data, m.media_type, tag=t)
    return m.digest


@dataclass
class DiffResult:
    """Outcome of comparing a local tree with a remote artifact."""

    same: bool
    local_diff_id: str
    remote_diff_id: str
    remote_digest: str


async def diff_artifact(client: RegistryClient, ref: Reference, path: Path | str,
                        ignore: Sequence[str] = ()) -> DiffResult:
    """Compare the content of ``path`` with the artifact at ``ref`` (annotations ignored)."""
    m = await client.get_manifest(ref)
    manifest = parse_manifest(m.data, m.media_type)
    remote = await _remote_diff_id(client, ref, manifest)
    with tempfile.TemporaryDirectory(prefix="ocigitops-diff-") as tmp:
        local = build_layer(path, Path(tmp) / "artifact.tgz", ignore)
    return DiffResult(same=local.diff_id == remote, local_diff_id=local.diff_id,
                      remote_diff_id=remote, remote_digest=m.digest)


@dataclass
class ListedArtifact:
    """One row of ``list artifacts``."""

    url: str
    tag: str
    digest: str
    source: str = ""
    revision: str = ""
    created: str = ""
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """JSON form of the row."""
        return {"url": self.url, "tag": self.tag, "digest": self.digest,
                "source": self.source, "revision": self.revision, "created": self.created}


async def list_artifacts(client: RegistryClient, ref: Reference, *,
                         semver_range: str | None = None, regex: str | None = None,
                         concurrency: int = 8) -> list[ListedArtifact]:
    """Tags of ``ref``'s repository with digest, source and revision of each artifact."""
    tags = filter_tags(await client.list_tags(ref), semver_range, regex)
    sem = asyncio.Semaphore(concurrency)

    async def describe(tag: str) -> ListedArtifact:
        async with sem:
            m = await client.get_manifest(ref.with_tag(tag))
        row = ListedArtifact(url=ref.with_tag(tag).url(), tag=tag, digest=m.digest)
        try:
            meta = parse_manifest(m.data, m.media_type).metadata
        except Exception:  # a non-artifact tag (an image, an index) is listed bare
            return row
        row.source, row.revision, row.created = meta.source, meta.revision, meta.created
        row.annotations = meta.annotations
        return row

    return list(await asyncio.gather(*(describe(t) for t in tags)))


def build_artifact_file(path: Path | str, output: Path, ignore: Sequence[str] = ()) -> Layer:
    """Write the artifact layer (tar+gzip) for ``path`` to ``output``, atomically."""
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=output.parent, prefix=f".{output.name}.",
                                     delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        layer = build_layer(path, tmp_path, ignore)
        tmp_path.chmod(0o644)
        tmp_path.replace(output)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return Layer(path=output, digest=layer.digest, size=layer.size, diff_id=layer.diff_id)
