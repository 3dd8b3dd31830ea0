"""Pull an artifact: resolve, fetch the manifest, stream the layer, extract safely.

Shared by the ``pull artifact`` command and the in-cluster puller. The layer is fetched
by the digest in the manifest and verified before anything is extracted; the whole
archive is checked before a file is written into the output, and then only the files the
artifact holds are written (see :mod:`ocigitops.extract`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from ocigitops.artifact import ArtifactManifest, Metadata, parse_manifest
from ocigitops.errors import UsageError
from ocigitops.extract import DEFAULT_LIMITS, Limits, check_clean_target, extract_to, limits_from
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
                        progress: ProgressFactory | None = None, clean: bool = False,
                        force: bool = False) -> PullResult:
    """Download the artifact at ``ref`` and extract its content layer into ``output``.

    The files the artifact holds overwrite those of the same name and every other file in
    ``output`` stays, as with ``flux pull artifact``. ``clean`` empties ``output`` first
    (refused for ``/``, the home or current directory and a Git work tree's root unless
    ``force``: checked before the registry is asked anything).
    """
    if clean:
        check_clean_target(output, force=force)
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

    files = await extract_to(chunks(), output, limits, deadline=client.deadline_at,
                             clean=clean)
    return PullResult(url=ref.url(), digest=digest, layer=layer, metadata=manifest.metadata,
                      files=files, output=output, repository_url=ref.repo_only().url())


#: Values of ``--output`` that are an output format typed where pull wants a directory.
FORMAT_NAMES = ("json", "yaml", "yml", "table")


def check_output_dir(output: str | Path) -> Path:
    """``output`` as a Path, refusing a bare ``json``/``yaml``: pull's ``-o`` is Flux's
    ``--output DIR``, and ``-o json`` there is almost surely meant as a format. An
    existing directory of that name, or ``./json``, is taken as asked."""
    text = str(output) if isinstance(output, Path) else output
    path = Path(text)
    if text in FORMAT_NAMES and not path.is_dir():
        raise UsageError(f"--output {text}: pull's -o/--output is the directory to extract"
                         f" into (as in flux); for a JSON result use --json, and to extract"
                         f" into a directory named {text} write ./{text}")
    return path


async def pull(url: str, output: str | Path, registry: RegistryOptions, *,
               layer_selector: str | None = None, max_size: str | int | None = None,
               max_file_size: str | int | None = None, clean: bool = False,
               force: bool = False, progress: ProgressFactory | None = None) -> PullResult:
    """``pull artifact``: pull ``url`` (``oci://host/repo[:tag][@digest]``, ``:latest``
    when it names neither) into ``output`` over a client made from ``registry``.

    ``max_size`` and ``max_file_size`` raise (or lower) the bounds on all the content and
    on one file (bytes, or sizes like ``512Mi``, ``1G``): the same limits ``push artifact``
    checks before uploading. ``clean`` and ``force``: see :func:`pull_artifact`.
    """
    path = check_output_dir(output)
    if force and not clean:
        raise UsageError("--force only applies to --clean")
    ref = parse_reference(url, require_scheme=True)
    if not ref.tag and not ref.digest:
        ref = ref.with_tag("latest")  # as Flux: a bare repository means its latest tag
    limits = limits_from(max_size, max_file_size)
    async with registry.client() as client:
        return await pull_artifact(client, ref, path, layer_selector=layer_selector,
                                   limits=limits, progress=progress, clean=clean, force=force)
