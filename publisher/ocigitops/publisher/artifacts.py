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
    Warn,
    build_config,
    build_layer,
    build_manifest,
    now_rfc3339,
    parse_manifest,
)
from ocigitops.errors import NotFoundError, UsageError
from ocigitops.extract import DEFAULT_LIMITS, BoundedGunzip, Limits
from ocigitops.reference import Reference, validate_tag
from ocigitops.registry import Descriptor, RegistryClient, sha256_digest
from ocigitops.tags import filter_tags

ProgressFactory = Callable[[str, int], Callable[[int], None] | None]


@dataclass
class PushResult:
    """What a push did.

    ``pushed`` is False when ``--diff-tag`` found identical content: then nothing was
    uploaded, ``digest`` is the existing artifact's, and ``tagged`` says whether ``tag``
    was added to it (``tag_unchanged``) or never created.
    """

    #: ``oci://host/repo@digest``: the digest URL, as ``flux push artifact -o json``.
    url: str
    repository: str
    tag: str
    digest: str
    pushed: bool = True
    #: Whether ``tag`` now points at ``digest``.
    tagged: bool = True
    #: One line for people (stderr): what was done, and what was not.
    message: str = ""
    layer_digest: str = ""
    diff_id: str = ""
    #: Warnings met while packaging (links left out, an empty artifact), in order.
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """The ``-o json`` document: Flux's fields (``url`` is the digest URL), then
        ``pushed`` and ``tagged``."""
        return {"url": self.url, "repository": self.repository, "tag": self.tag,
                "digest": self.digest, "pushed": self.pushed, "tagged": self.tagged}


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


async def _unchanged_digest(client: RegistryClient, ref: Reference, diff_tag: str,
                            diff_id: str) -> str | None:
    """The digest at ``diff_tag`` when its content is ``diff_id``; None when it differs or
    the tag does not exist."""
    validate_tag(diff_tag)
    try:
        remote = await client.get_manifest(ref.with_tag(diff_tag))
    except NotFoundError:
        return None
    manifest = parse_manifest(remote.data, remote.media_type)
    if await _remote_diff_id(client, ref, manifest) != diff_id:
        return None
    return remote.digest


async def push_artifact(
    client: RegistryClient,
    ref: Reference,
    path: Path | str,
    meta: Metadata,
    *,
    ignore: Sequence[str] = (),
    reproducible: bool = False,
    diff_tag: str | None = None,
    tag_unchanged: bool = False,
    limits: Limits = DEFAULT_LIMITS,
    resolve_symlinks: bool = False,
    warn: Warn | None = None,
    progress: ProgressFactory | None = None,
) -> PushResult:
    """Package ``path`` and push it to ``ref`` (which must carry a tag).

    The tree is checked against ``limits`` while it is packaged, before anything is
    uploaded: what a pull with the same limits would refuse is never pushed.
    ``resolve_symlinks`` archives what links point to; without it each link left out is
    a warning (``warn``, and :attr:`PushResult.warnings`), as is an empty artifact.

    With ``diff_tag`` the content is compared with that tag first (by the digest of the
    uncompressed tar, so artifacts pushed by Flux compare equal too) and nothing is
    pushed when it is the same; ``tag_unchanged`` then adds ``ref``'s tag to the
    existing digest, otherwise the tag is not created.
    """
    if not ref.tag or ref.digest:
        raise UsageError(f"{ref.url()}: push needs a tag (oci://repo:tag), not a digest")
    if not meta.source or not meta.revision:
        raise UsageError("--source and --revision are required outside a Git checkout and"
                         " GitHub Actions")
    warnings: list[str] = []

    def note(line: str) -> None:
        warnings.append(line)
        if warn:
            warn(line)

    with tempfile.TemporaryDirectory(prefix="ocigitops-push-") as tmp:
        layer: Layer = build_layer(path, Path(tmp) / "artifact.tgz", ignore, limits=limits,
                                   resolve_symlinks=resolve_symlinks, warn=note)
        existing = (await _unchanged_digest(client, ref, diff_tag, layer.diff_id)
                    if diff_tag else None)
        if existing is not None:
            return await _unchanged(client, ref, existing, str(diff_tag), tag_unchanged,
                                    layer, warnings)
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
    return PushResult(url=ref.repo_only().with_digest(digest).url(), repository=ref.name,
                      tag=ref.tag, digest=digest, layer_digest=layer.digest,
                      diff_id=layer.diff_id, warnings=warnings,
                      message=f"artifact pushed to {ref.url()}")


async def _unchanged(client: RegistryClient, ref: Reference, digest: str, diff_tag: str,
                     tag_unchanged: bool, layer: Layer, warnings: list[str]) -> PushResult:
    """The ``--diff-tag`` no-op: nothing uploaded; the tag added only when asked."""
    assert ref.tag is not None  # push_artifact checked it
    if tag_unchanged:
        await tag_artifact(client, ref.repo_only().with_digest(digest), [ref.tag])
        message = (f"content unchanged from tag {diff_tag} ({digest}): nothing pushed,"
                   f" tagged it {ref.tag}")
    else:
        message = (f"content unchanged from tag {diff_tag} ({digest}): nothing pushed and"
                   f" tag {ref.tag} not created (--tag-unchanged adds it)")
    return PushResult(url=ref.repo_only().with_digest(digest).url(), repository=ref.name,
                      tag=ref.tag, digest=digest, pushed=False, tagged=tag_unchanged,
                      layer_digest=layer.digest, diff_id=layer.diff_id, warnings=warnings,
                      message=message)


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

    def to_json(self) -> dict[str, object]:
        """``diff artifact -o json|yaml``: ``same`` and the two content digests."""
        return {"same": self.same, "localDiffID": self.local_diff_id,
                "remoteDiffID": self.remote_diff_id, "remoteDigest": self.remote_digest}


async def diff_artifact(client: RegistryClient, ref: Reference, path: Path | str,
                        ignore: Sequence[str] = (), *, resolve_symlinks: bool = False
                        ) -> DiffResult:
    """Compare the content of ``path`` with the artifact at ``ref`` (annotations ignored).

    ``resolve_symlinks``: compare what links point to, as ``push artifact
    --resolve-symlinks`` archives it (the same flag must be given to both for the same
    content to compare equal)."""
    m = await client.get_manifest(ref)
    manifest = parse_manifest(m.data, m.media_type)
    remote = await _remote_diff_id(client, ref, manifest)
    with tempfile.TemporaryDirectory(prefix="ocigitops-diff-") as tmp:
        local = build_layer(path, Path(tmp) / "artifact.tgz", ignore,
                            resolve_symlinks=resolve_symlinks)
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


def build_artifact_file(path: Path | str, output: Path, ignore: Sequence[str] = (), *,
                        resolve_symlinks: bool = False, warn: Warn | None = None,
                        limits: Limits = DEFAULT_LIMITS) -> Layer:
    """Write the artifact layer (tar+gzip) for ``path`` to ``output``, atomically.

    ``resolve_symlinks``, ``warn`` and ``limits`` (what a pull with the same limits would
    refuse is refused here, and nothing is written): as
    :func:`ocigitops.artifact.build_layer`."""
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=output.parent, prefix=f".{output.name}.",
                                     delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        layer = build_layer(path, tmp_path, ignore, resolve_symlinks=resolve_symlinks,
                            warn=warn, limits=limits)
        tmp_path.chmod(0o644)
        tmp_path.replace(output)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return Layer(path=output, digest=layer.digest, size=layer.size, diff_id=layer.diff_id,
                 files=layer.files)
