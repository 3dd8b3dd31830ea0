"""The source contract: what every source kind offers and every consumer reads.

A source kind (OCIRepository today; GitRepository, HelmChart next) reconciles a remote
thing into a tarball in the process's content-addressed :class:`ArtifactCache` and
publishes, in its status, Flux's ``Artifact`` (``revision``, ``digest`` of the tarball,
``path``, ``url``, ``metadata``) and, when it verified signatures, which authorities did.
A consumer (Kustomization today; HelmRelease next) never looks at a source's spec or at
its kind-specific status: it calls :func:`get_artifact` with its ``sourceRef`` and gets a
:class:`SourceArtifact`, whose :meth:`SourceArtifact.extract` re-hashes the cached copy
while reading it, so a consumer only ever builds from bytes whose digest the source
recorded. Adding a source kind is a module with a reconciler that writes that status and
declares a :class:`SourceKind`; consumers do not change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocigitops.errors import OcigitopsError
from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.cache import ArtifactCache

if TYPE_CHECKING:
    from ocigitops.puller.kube import DynamicClient


class SourceError(OcigitopsError):
    """A consumer cannot use its source (reason ``ArtifactFailed``)."""


class SourceNotFoundError(SourceError):
    """The referenced source object does not exist."""


class ArtifactNotReadyError(SourceError):
    """The source exists but has no artifact here yet: wait for it, do not fail hard."""


class UnsupportedSourceError(SourceError):
    """The reference names a kind this controller does not reconcile."""


def _spec_ignore(obj: Mapping[str, Any]) -> str | None:
    value = (obj.get("spec") or {}).get("ignore")
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class SourceKind:
    """A kind whose objects others consume as a source."""

    kind: str
    api_version: str = API_VERSION
    #: The ignore rules consumers apply on top of the artifact's ``.sourceignore``
    #: (Flux: ``spec.ignore`` of OCIRepository and GitRepository).
    ignore: Callable[[Mapping[str, Any]], str | None] = _spec_ignore


@dataclass(frozen=True)
class SourceArtifact:
    """One source's current artifact, as every consumer sees it."""

    kind: str
    namespace: str
    name: str
    #: Flux's revision string (``v1.2.0@sha256:...``, ``main@sha1:...``).
    revision: str
    #: Digest of the stored tarball: the cache key, checked on every read.
    digest: str
    #: The cache holding it (this process's).
    cache: ArtifactCache
    #: Names of the authorities that verified this revision (empty: not verified).
    authorities: tuple[str, ...] = ()
    #: Ignore rules of the source's spec.
    ignore: str | None = None
    #: The artifact's metadata (an OCI artifact's manifest annotations).
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def ident(self) -> str:
        """``Kind/namespace/name``, as Flux names a source in messages."""
        return f"{self.kind}/{self.namespace}/{self.name}"

    def extract(self, output: Path, *, deadline: float | None = None) -> None:
        """Unpack the cached tarball into ``output``, verifying its digest while reading
        (a corrupt or replaced cache entry fails; nothing unverified is used)."""
        self.cache.extract(self.digest, output, deadline=deadline)


def artifact_of(obj: Mapping[str, Any], source: SourceKind, cache: ArtifactCache,
                ) -> SourceArtifact | None:
    """The :class:`SourceArtifact` a source object's status publishes, or None."""
    md, st = obj.get("metadata") or {}, obj.get("status") or {}
    art = st.get("artifact")
    if not isinstance(art, Mapping) or not isinstance(art.get("digest"), str) \
            or not art.get("digest"):
        return None
    verification = st.get("verification")
    found = verification.get("authorities") if isinstance(verification, Mapping) else None
    authorities = tuple(str(a.get("name")) for a in found or []
                        if isinstance(a, Mapping) and a.get("passed") is True)
    raw_meta = art.get("metadata")
    meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
    return SourceArtifact(kind=source.kind, namespace=str(md.get("namespace") or ""),
                          name=str(md.get("name") or ""), revision=str(art.get("revision")
                                                                       or ""),
                          digest=art["digest"], authorities=authorities,
                          ignore=source.ignore(obj),
                          metadata={str(k): str(v) for k, v in meta.items()}, cache=cache)


async def get_artifact(kube: DynamicClient, cache: ArtifactCache,
                       sources: Mapping[str, SourceKind], served: frozenset[str] | set[str],
                       kind: str, namespace: str, name: str) -> SourceArtifact:
    """The current artifact of the source ``kind``/``namespace``/``name``.

    Raises :class:`UnsupportedSourceError` for a kind nobody here reconciles,
    :class:`SourceNotFoundError` when the object does not exist, and
    :class:`ArtifactNotReadyError` when it has no artifact yet or this process's cache
    does not hold it yet (the source reconciler fetches it again and wakes consumers).
    """
    source = sources.get(kind)
    if source is None:
        known = ", ".join(sorted(sources)) or "none"
        raise UnsupportedSourceError(f"source kind {kind} is not supported (supported:"
                                     f" {known})")
    if kind not in served:
        raise UnsupportedSourceError(f"source kind {kind} is not reconciled by this"
                                     " controller: enable it in --controllers")
    ident = f"{kind}/{namespace}/{name}"
    obj = await kube.get(source.api_version, kind, name, namespace)
    if obj is None:
        raise SourceNotFoundError(f"Source '{ident}' not found")
    artifact = artifact_of(obj, source, cache)
    if artifact is None:
        raise ArtifactNotReadyError(f"Source '{ident}' has no artifact yet")
    if not cache.has(artifact.digest):
        raise ArtifactNotReadyError(f"artifact {artifact.digest} of Source '{ident}' is not"
                                    " in the cache yet")
    return artifact
