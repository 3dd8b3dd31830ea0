"""Pull an artifact: resolve, fetch the manifest, stream the layer, extract safely.

Shared by the ``pull artifact`` command and the in-cluster puller. The layer is fetched
by the digest in the manifest and verified before anything is extracted; extraction is
all-or-nothing (see :mod:`ocigitops.extract`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from ocigitops.artifact import ArtifactManifest, Metadata, parse_manifest
from ocigitops.extract import DEFAULT_LIMITS, Limits, extract_to
from ocigitops.options import RegistryOptions
from ocigitops.reference import Reference, parse_reference
from ocigitops.registry import Descriptor, RegistryClient

ProgressFactory = Callable[[str, int], Callable[[int], None] | None]


@dataclass
class PullResult:
    """What was pulled: the manifest digest, the layer and the artifact metadata."""

    url: str
    digest: str
    layer: Descriptor
    metadata: Metadata
    files: int
    output: Path
    #: ``oci://host/repo`` without tag or digest, to print the pinned ``...@digest``.
    repository_url: str = ""

    def to_json(self) -> dict[str, object]:
        """The ``-o json`` document."""
        return {"url": self.url, "digest": self.digest, "layer": self.layer.digest,
                "source": self.metadata.source, "revision": self.metadata.revision,
                "created": self.metadata.created, "annotations": self.metadata.annotations,
                "files": self.files, "output": str(self.output)}


async def resolve_manifest(client: RegistryClient, ref: Reference,
                           ) -> tuple[str, ArtifactManifest]:
    """Fetch and parse the manifest of ``ref``; returns (digest, manifest)."""
    m = await client.get_manifest(ref)
    return m.digest, parse_manifest(m.data, m.media_type)


async def pull_artifact(client: RegistryClient, ref: Reference, output: Path, *,
                        layer_selector: str | None = None, limits: Limits = DEFAULT_LIMITS,
                        progress: ProgressFactory | None = None) -> PullResult:
    """Download the artifact at ``ref`` and extract its content layer into ``output``."""
    digest, manifest = await resolve_manifest(client, ref)
    layer = manifest.select_layer(layer_selector)
    limits.check_layer_size(layer.size, f"layer {layer.digest}")
    pinned = ref.with_digest(digest)
    on_progress = progress("download", layer.size) if progress else None

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in client.stream_blob(pinned, layer):
            if on_progress:
                on_progress(len(chunk))
            yield chunk

    files = await extract_to(chunks(), output, limits, deadline=client.deadline_at)
    return PullResult(url=ref.url(), digest=digest, layer=layer, metadata=manifest.metadata,
                      files=files, output=output, repository_url=ref.repo_only().url())


async def pull(url: str, output: Path, registry: RegistryOptions, *,
               layer_selector: str | None = None, max_size: int | None = None,
               progress: ProgressFactory | None = None) -> PullResult:
    """``pull artifact``: pull ``url`` (``oci://host/repo[:tag][@digest]``, ``:latest``
    when it names neither) into ``output`` over a client made from ``registry``.

    ``max_size`` bounds the extracted content in bytes (default: the extraction limits).
    """
    ref = parse_reference(url, require_scheme=True)
    if not ref.tag and not ref.digest:
        ref = ref.with_tag("latest")  # as Flux: a bare repository means its latest tag
    limits = Limits(max_total=max_size) if max_size is not None else Limits()
    async with registry.client() as client:
        return await pull_artifact(client, ref, output, layer_selector=layer_selector,
                                   limits=limits, progress=progress)
