"""Find the signatures of one manifest digest in a registry.

Sources: cosign's legacy ``sha256-<hex>.sig`` tag, and referrers (API or tag-schema
fallback) filtered to sigstore bundles and notation signatures. Everything is bounded:
the referrers list is capped by the registry client, at most ``max_per_kind`` signature
manifests of each kind are fetched (newest first), and every blob has a size cap, so a
repository with 10,000 referrers costs one listing and a few fetches.

Sigstore bundles whose referrer names a predicate type other than cosign's signature one
(``dev.sigstore.bundle.predicateType``) are attestations: they get their own
``max_per_kind`` budget (so a pile of scans cannot push the signatures out) and the larger
size cap of :data:`ocigitops.verifier.intoto.MAX_ATTESTATION_BUNDLE_BYTES`, since they carry a
predicate. They are handed over with the other bundles: the policy's signature checks
refuse them as signatures, its attestation requirements read them.

Fetch problems (a signature manifest pointing to a missing layer, an oversized blob) do
not abort discovery; they are recorded in :attr:`Discovered.problems` and reported next
to the verification result. They never make anything pass.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from ocigitops.errors import NotFoundError, OcigitopsError
from ocigitops.reference import Reference
from ocigitops.registry import Descriptor, RegistryClient, fallback_tag
from ocigitops.verifier.intoto import MAX_ATTESTATION_BUNDLE_BYTES
from ocigitops.verifier.policy import COSIGN_SIGN_PREDICATE, Candidates, NotationCandidate
from ocigitops.verifier.simplesigning import LegacySignature

COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
#: cosign v2's experimental ``--registry-referrers-mode=oci-1-1`` signature referrer.
COSIGN_ARTIFACT_SIG = "application/vnd.dev.cosign.artifact.sig.v1+json"
#: Types that say nothing about the referrer: cosign v3 writes fallback-index entries
#: with the empty config type, and old writers leave artifactType out.
_UNTYPED = (None, "", "application/vnd.oci.empty.v1+json")
SIGSTORE_BUNDLE_PREFIX = "application/vnd.dev.sigstore.bundle"
NOTATION_SIGNATURE = "application/vnd.cncf.notary.signature"
NOTATION_MEDIA_TYPES = ("application/jose+json", "application/cose")
MAX_SIGNATURE_BLOB = 1 << 20
#: The referrer annotation cosign v3 (and we) write with the statement's predicate type.
ANN_PREDICATE_TYPE = "dev.sigstore.bundle.predicateType"


@dataclass
class Found:
    """One signature found, for reporting: kind, where it was, and its media type."""

    kind: str
    location: str
    media_type: str


@dataclass
class Discovered:
    """Candidates for the policy, what was found, and what could not be fetched."""

    candidates: Candidates
    found: list[Found] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    referrers_via: str = ""


def _is_bundle(d: Descriptor) -> bool:
    return (d.artifact_type or "").startswith(SIGSTORE_BUNDLE_PREFIX)


def _is_attestation(d: Descriptor) -> bool:
    """A bundle referrer whose annotation names a predicate other than a signature's."""
    ptype = (d.annotations or {}).get(ANN_PREDICATE_TYPE)
    return _is_bundle(d) and bool(ptype) and ptype != COSIGN_SIGN_PREDICATE


def _is_notation(d: Descriptor) -> bool:
    return d.artifact_type == NOTATION_SIGNATURE


def _maybe_signature(d: Descriptor) -> bool:
    """Referrers worth keeping: signature types, and untyped ones (classified later)."""
    return (_is_bundle(d) or _is_notation(d) or d.artifact_type == COSIGN_ARTIFACT_SIG
            or d.artifact_type in _UNTYPED)


def _newest_first(descs: list[Descriptor]) -> list[Descriptor]:
    return sorted(descs, key=lambda d: (d.annotations or {}).get(
        "org.opencontainers.image.created", ""), reverse=True)


async def _single_layer(client: RegistryClient, repo: Reference, manifest_digest: str,
                        cap: int = MAX_SIGNATURE_BLOB) -> tuple[Descriptor, bytes]:
    """Fetch a signature manifest and its one layer (size-capped at ``cap``)."""
    m = await client.get_manifest(repo.with_digest(manifest_digest))
    doc = m.json()
    layers = doc.get("layers") or []
    if len(layers) != 1:
        raise OcigitopsError(f"signature manifest {manifest_digest} has {len(layers)} layers,"
                             " expected 1")
    layer = Descriptor.from_json(layers[0])
    if layer.size > cap:
        raise OcigitopsError(f"signature layer {layer.digest} is {layer.size} bytes, over the"
                             f" {cap}-byte cap")
    try:
        blob = await client.fetch_blob(repo, layer, max_size=cap)
    except NotFoundError as e:
        raise OcigitopsError(f"signature manifest {manifest_digest} points to missing layer"
                             f" {layer.digest}") from e
    return layer, blob


async def _legacy(client: RegistryClient, repo: Reference, digest: str, out: Discovered,
                  max_layers: int) -> list[LegacySignature]:
    tag = fallback_tag(digest) + ".sig"
    try:
        m = await client.get_manifest(repo.with_tag(tag))
    except NotFoundError:
        return []
    sigs: list[LegacySignature] = []
    layers = [x for x in (m.json().get("layers") or [])
              if isinstance(x, dict) and x.get("mediaType") == COSIGN_SIMPLESIGNING]
    for raw in layers[:max_layers]:
        try:
            layer = Descriptor.from_json(raw)
            payload = await client.fetch_blob(repo, layer, max_size=MAX_SIGNATURE_BLOB)
            sigs.append(LegacySignature.from_layer(payload, layer.annotations or {}))
            out.found.append(Found("cosign-legacy", f"{repo.name}:{tag}", layer.media_type))
        except (OcigitopsError, ValueError) as e:
            out.problems.append(f"legacy signature in {tag}: {e}")
    return sigs


async def _classify(client: RegistryClient, repo: Reference, d: Descriptor) -> Descriptor:
    """Give an untyped referrer the artifactType its own manifest declares."""
    m = await client.get_manifest(repo.with_digest(d.digest))
    doc = m.json()
    atype = doc.get("artifactType") or (doc.get("config") or {}).get("mediaType")
    layers = doc.get("layers") or []
    if atype in _UNTYPED and len(layers) == 1 and isinstance(layers[0], dict):
        lt = str(layers[0].get("mediaType", ""))
        if lt.startswith(SIGSTORE_BUNDLE_PREFIX):
            atype = lt
    # cosign's fallback-index entries carry no annotations: the manifest's tell whether a
    # bundle is an attestation (its predicate type).
    annotations = d.annotations
    if not annotations and isinstance(doc.get("annotations"), dict):
        annotations = {str(k): str(v) for k, v in doc["annotations"].items()}
    return Descriptor(d.media_type, d.digest, d.size, annotations,
                      str(atype) if atype else None)


async def _oci11_legacy(client: RegistryClient, repo: Reference, d: Descriptor,
                        out: Discovered) -> list[LegacySignature]:
    """Simple-signing layers of a cosign v2 OCI 1.1 signature referrer."""
    m = await client.get_manifest(repo.with_digest(d.digest))
    sigs: list[LegacySignature] = []
    for raw in (m.json().get("layers") or [])[:16]:
        layer = Descriptor.from_json(raw)
        if layer.media_type != COSIGN_SIMPLESIGNING:
            continue
        payload = await client.fetch_blob(repo, layer, max_size=MAX_SIGNATURE_BLOB)
        sigs.append(LegacySignature.from_layer(payload, layer.annotations or {}))
        out.found.append(Found("cosign-legacy", f"{repo.name}@{d.digest} (referrer)",
                               layer.media_type))
    return sigs


async def discover(client: RegistryClient, repo: Reference, digest: str, *,
                   max_per_kind: int = 16, legacy: bool = True) -> Discovered:
    """Collect the signatures of ``digest`` in ``repo`` (both cosign formats, notation)."""
    out = Discovered(candidates=Candidates())
    legacy_task = asyncio.create_task(
        _legacy(client, repo, digest, out, max_per_kind) if legacy else _none())
    try:
        refs = await client.referrers(repo, digest, accept=_maybe_signature)
    except BaseException:
        legacy_task.cancel()
        with contextlib.suppress(BaseException):
            await legacy_task
        raise
    out.referrers_via = refs.via
    descs = list(refs.descriptors)
    if refs.via == "api":
        # notation writes the tag-schema index even where the API exists, and some
        # registries then list only one of the two: read both, merged by digest.
        known = {d.digest for d in descs}
        try:
            extra = await client.fallback_referrers(repo, digest)
        except OcigitopsError as e:
            out.problems.append(f"tag-schema referrers index could not be read: {e}")
            extra = []
        descs += [d for d in extra if d.digest not in known and _maybe_signature(d)]
    untyped = [d for d in descs if d.artifact_type in _UNTYPED][:max_per_kind]
    if untyped:
        typed = {d.digest: d for d in descs if d.artifact_type not in _UNTYPED}
        for d in await asyncio.gather(*(_classify(client, repo, x) for x in untyped),
                                      return_exceptions=True):
            if isinstance(d, Descriptor):
                typed[d.digest] = d
            else:
                out.problems.append(f"referrer could not be read: {d}")
        descs = list(typed.values())
    bundles_d = _newest_first([d for d in descs if _is_bundle(d) and not _is_attestation(d)]
                              )[:max_per_kind]
    bundles_d += _newest_first([d for d in descs if _is_attestation(d)])[:max_per_kind]
    notation_d = _newest_first([d for d in descs if _is_notation(d)])[:max_per_kind]
    oci11_d = [d for d in descs if d.artifact_type == COSIGN_ARTIFACT_SIG][:max_per_kind]

    async def fetch(d: Descriptor) -> tuple[Descriptor, Descriptor, bytes] | None:
        cap = MAX_ATTESTATION_BUNDLE_BYTES if _is_attestation(d) else MAX_SIGNATURE_BLOB
        try:
            layer, blob = await _single_layer(client, repo, d.digest, cap)
            return d, layer, blob
        except (OcigitopsError, ValueError) as e:
            out.problems.append(str(e))
            return None

    fetched = await asyncio.gather(*(fetch(d) for d in [*bundles_d, *notation_d]))
    bundles: list[bytes] = []
    notation: list[NotationCandidate] = []
    for item in fetched:
        if item is None:
            continue
        d, layer, blob = item
        where = f"{repo.name}@{d.digest} (referrer via {refs.via})"
        if _is_bundle(d):
            bundles.append(blob)
            out.found.append(Found("cosign-bundle", where, layer.media_type))
        elif layer.media_type in NOTATION_MEDIA_TYPES:
            notation.append(NotationCandidate(blob, layer.media_type))
            out.found.append(Found("notation", where, layer.media_type))
        else:
            out.problems.append(f"notation signature {d.digest} has layer media type"
                                f" {layer.media_type}, expected JWS or COSE")
    legacy_sigs = list(await legacy_task)
    for d in oci11_d:
        try:
            legacy_sigs += await _oci11_legacy(client, repo, d, out)
        except (OcigitopsError, ValueError) as e:
            out.problems.append(f"cosign OCI 1.1 signature {d.digest}: {e}")
    out.candidates = Candidates(legacy=legacy_sigs, bundles=bundles, notation=notation)
    return out


async def _none() -> list[LegacySignature]:
    return []
