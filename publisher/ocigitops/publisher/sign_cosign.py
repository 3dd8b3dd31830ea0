"""cosign-compatible signing: key-based (bundle or legacy ``.sig``) and keyless.

Wire formats (docs/formats.md section 3), written so that ``cosign verify`` and our
:func:`ocigitops.verifier.discovery.discover` both find and accept them:

- **legacy** (cosign v2 default): a signature image tagged ``sha256-<hex>.sig`` in the
  signed repository. Config ``application/vnd.oci.image.config.v1+json`` (the
  go-containerregistry ``empty.Image`` config with one ``diff_id`` and one history entry per
  layer), one ``application/vnd.dev.cosign.simplesigning.v1+json`` layer per signature whose
  blob is the simple-signing payload and whose ``dev.cosignproject.cosign/signature``
  annotation is the base64 DER signature. A new signature is appended to an existing
  ``.sig`` image (read, modify, write; concurrent writers can lose a layer, as with cosign);
  like cosign, a payload already signed by the same key is not signed again.
- **bundle** (cosign v3 default): a DSSE envelope over an in-toto Statement v1 (predicate
  type ``https://sigstore.dev/cosign/sign/v1``, no predicate: cosign v3.0.2 writes none)
  inside a sigstore bundle v0.3 with ``verificationMaterial.publicKey.hint``, stored as an
  OCI 1.1 referrer of the signed manifest (empty config, one bundle layer, ``artifactType``
  = bundle media type, laid out byte for byte like cosign's manifest).
  Registries without the referrers API get the tag-schema fallback index
  (:meth:`RegistryClient.push_referrer`). No transparency log entry is written: there is no
  Rekor here, exactly as ``cosign sign --tlog-upload=false``.
- **keyless**: the same statement signed by sigstore-python (Fulcio certificate, Rekor
  entry), stored as the same kind of referrer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from ocigitops import mediatypes as mt
from ocigitops.artifact import GO_ZERO_TIME, build_manifest, go_json, sorted_map
from ocigitops.errors import NotFoundError, OcigitopsError, UsageError
from ocigitops.publisher.signresult import SignResult
from ocigitops.reference import Reference
from ocigitops.registry import Descriptor, RegistryClient, fallback_tag, sha256_digest
from ocigitops.verifier.bundles import pae
from ocigitops.verifier.errors import SignatureVerificationError
from ocigitops.verifier.keys import PrivateKey, PublicKey, key_hint
from ocigitops.verifier.sigalg import sign, verify_signature
from ocigitops.verifier.simplesigning import (
    BUNDLE_ANNOTATION,
    CERTIFICATE_ANNOTATION,
    SIGNATURE_ANNOTATION,
    SIMPLESIGNING_MEDIA_TYPE,
    check_digest,
    sign_legacy,
)

if TYPE_CHECKING:
    from sigstore.models import ClientTrustConfig

log = logging.getLogger("ocigitops.sign.cosign")

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
ANN_BUNDLE_CONTENT = "dev.sigstore.bundle.content"
ANN_BUNDLE_PREDICATE = "dev.sigstore.bundle.predicateType"
#: The largest ``.sig`` image we append to (cosign has no limit; this bounds memory).
MAX_LEGACY_LAYERS = 1000

Format = Literal["bundle", "legacy"]


class CosignSigningError(OcigitopsError):
    """Signing failed before or while storing the signature."""


class MissingIdentityTokenError(CosignSigningError, UsageError):
    """Keyless signing found no OIDC identity token to exchange for a certificate."""


class KeylessSigningError(CosignSigningError):
    """The keyless flow failed: bad token, or Fulcio/Rekor refused or errored."""


class SigstoreUnreachableError(KeylessSigningError):
    """Fulcio, Rekor or the TUF repository could not be reached over the network."""


# -- payloads and documents ----------------------------------------------------------------

def build_statement(name: str | None, digest: str) -> bytes:
    """The in-toto Statement v1 that cosign v3 signs for a manifest ``digest``.

    cosign v3.0.2 ``sign --key`` writes ``{"_type", "subject": [{"digest": {"sha256"}}],
    "predicateType"}``: no subject name and no ``predicate`` (protojson drops the empty
    struct). ``name`` (the repository) is added when given; sigstore-python's statement model
    requires the field, so the keyless path passes it. Verifiers match the digest only.
    """
    check_digest(digest)
    alg, _, hexd = digest.partition(":")
    if alg != "sha256":
        raise UsageError(f"cosign bundles sign sha256 digests only, not {alg}")
    subject: dict[str, Any] = {}
    if name:
        subject["name"] = name
    subject["digest"] = {"sha256": hexd}
    doc = {"_type": STATEMENT_TYPE, "subject": [subject],
           "predicateType": COSIGN_SIGN_PREDICATE}
    return go_json(doc)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def build_key_bundle(key: PrivateKey, statement: bytes) -> bytes:
    """Sign ``statement`` as DSSE with ``key`` and wrap it in a sigstore bundle v0.3.

    Same fields and order as ``cosign sign --key --tlog-upload=false`` (v3): the key is named
    by ``publicKey.hint`` (base64 sha256 of the DER SPKI); there is no log entry. cosign's
    protojson omits the empty ``tlogEntries``; we write ``[]``, which cosign reads the same
    and which sigstore-models (sigstore-python, our verifier) require to be present.
    """
    signature = sign(key, pae(INTOTO_PAYLOAD_TYPE, statement))
    doc = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key_hint(key)}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": _b64(statement),
            "payloadType": INTOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": _b64(signature)}],
        },
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _rfc3339_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_bundle_manifest(bundle: bytes, subject: Descriptor, *,
                          created: str | None = None,
                          predicate_type: str = COSIGN_SIGN_PREDICATE) -> bytes:
    """The referrer manifest that stores ``bundle`` for ``subject``.

    Field for field as cosign v3.0.2 writes it through go-containerregistry (struct order,
    ``artifactType`` on the config descriptor as well as on the manifest).
    """
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_EMPTY, "size": len(mt.EMPTY_JSON),
                   "digest": mt.EMPTY_JSON_DIGEST, "artifactType": BUNDLE_MEDIA_TYPE},
        "layers": [{"mediaType": BUNDLE_MEDIA_TYPE, "size": len(bundle),
                    "digest": sha256_digest(bundle)}],
        "annotations": bundle_annotations(created, predicate_type),
        "subject": {"mediaType": subject.media_type, "size": subject.size,
                    "digest": subject.digest},
        "artifactType": BUNDLE_MEDIA_TYPE,
    }
    return go_json(doc)


def bundle_annotations(created: str | None = None,
                       predicate_type: str = COSIGN_SIGN_PREDICATE) -> dict[str, str]:
    """Manifest annotations of a bundle referrer (also copied into its descriptor)."""
    return sorted_map({mt.ANN_CREATED: created or _rfc3339_now(),
                       ANN_BUNDLE_CONTENT: "dsse-envelope",
                       ANN_BUNDLE_PREDICATE: predicate_type})


def legacy_sig_tag(digest: str) -> str:
    """cosign's signature tag for ``digest``: ``sha256-<hex>.sig``."""
    return fallback_tag(digest) + ".sig"


def build_legacy_config(diff_ids: list[str], base: Mapping[str, Any] | None = None) -> bytes:
    """The ``.sig`` image config: go-containerregistry's empty image with ``diff_ids``.

    ``base`` (an existing config) keeps whatever else it holds; ``rootfs.diff_ids`` and one
    zero-time ``history`` entry per layer are set as ``mutate.Append`` would.
    """
    if base is None:
        doc: dict[str, Any] = {"architecture": "", "created": GO_ZERO_TIME, "history": [],
                               "os": "", "rootfs": {"type": "layers", "diff_ids": []},
                               "config": {}}
    else:
        doc = json.loads(json.dumps(base))
    history = doc.get("history")
    if not isinstance(history, list):
        history = []
    history = history[:len(diff_ids)]
    while len(history) < len(diff_ids):
        history.append({"created": GO_ZERO_TIME})
    doc["history"] = history
    rootfs = doc.get("rootfs")
    doc["rootfs"] = {**(rootfs if isinstance(rootfs, dict) else {}), "type": "layers",
                     "diff_ids": list(diff_ids)}
    return go_json(doc)


def build_legacy_manifest(config: Descriptor, layers: list[Descriptor],
                          media_type: str = mt.OCI_MANIFEST) -> bytes:
    """The ``.sig`` image manifest, as go-containerregistry marshals it (no annotations)."""
    doc = json.loads(build_manifest(config, layers, {}))
    doc["mediaType"] = media_type
    return go_json(doc)


# -- registry helpers ----------------------------------------------------------------------

async def _subject(client: RegistryClient, repo: Reference, digest: str) -> Descriptor:
    """Descriptor (media type and size) of the manifest being signed; it must exist."""
    try:
        desc = await client.head_manifest(repo.with_digest(digest))
    except NotFoundError as e:
        raise CosignSigningError(f"cannot sign {repo.name}@{digest}: no such manifest") from e
    if desc.digest != digest:
        raise CosignSigningError(f"{repo.name}@{digest} resolved to {desc.digest}")
    return desc


async def _push_small_blob(client: RegistryClient, repo: Reference, data: bytes) -> str:
    digest = sha256_digest(data)
    await client.push_blob(repo, digest, len(data), data)
    return digest


async def _store_bundle(client: RegistryClient, repo: Reference, subject: Descriptor,
                        bundle: bytes, *, kind: str, signer: str,
                        predicate_type: str = COSIGN_SIGN_PREDICATE) -> SignResult:
    """Push ``bundle`` as a referrer of ``subject`` (referrers API or tag fallback).

    ``predicate_type`` is the statement's, written in the referrer's annotations as cosign
    does (attestations pass theirs: :mod:`ocigitops.publisher.attest`).
    """
    await _push_small_blob(client, repo, mt.EMPTY_JSON)
    await _push_small_blob(client, repo, bundle)
    annotations = bundle_annotations(predicate_type=predicate_type)
    manifest = build_bundle_manifest(bundle, subject,
                                     created=annotations[mt.ANN_CREATED],
                                     predicate_type=predicate_type)
    digest = await client.push_referrer(repo, manifest, subject.digest, BUNDLE_MEDIA_TYPE,
                                        annotations)
    via = await _stored_via(client, repo, subject.digest, digest)
    return SignResult(kind=kind, subject=subject.digest, location=f"{repo.name}@{digest}",
                      stored_via=via, signer=signer)


async def _stored_via(client: RegistryClient, repo: Reference, subject: str,
                      referrer: str) -> str:
    """``api`` when the registry lists ``referrer`` itself, else ``tag``."""
    refs = await client.referrers(repo, subject, BUNDLE_MEDIA_TYPE)
    if refs.via == "api" and any(d.digest == referrer for d in refs.descriptors):
        return "api"
    return "tag"


def _same_signature(old: Descriptor, new: Descriptor, payload: bytes, key: PublicKey) -> bool:
    """True when ``old`` already is ``new``: same layer, or same payload signed by ``key``.

    ECDSA signatures are randomised, so re-signing never gives an identical layer; cosign
    skips a signature whose payload is already signed by the same key, and so do we.
    """
    if old.media_type != new.media_type or old.digest != new.digest:
        return False
    if (old.annotations or {}) == (new.annotations or {}):
        return True
    ann = old.annotations or {}
    if any(k in ann for k in (CERTIFICATE_ANNOTATION, BUNDLE_ANNOTATION)):
        return False
    try:
        sig = base64.b64decode(ann.get(SIGNATURE_ANNOTATION, ""), validate=True)
        # The payload bytes are identical (same digest), so checking the old signature
        # over the new payload checks it over the stored one.
        verify_signature(key, sig, payload)
    except (ValueError, binascii.Error, SignatureVerificationError):
        return False
    return True


async def _store_legacy(client: RegistryClient, repo: Reference, digest: str,
                        payload: bytes, annotations: dict[str, str],
                        key: PublicKey) -> tuple[str, bool]:
    """Append one simple-signing layer to the ``.sig`` image; returns (tag, added)."""
    tag = legacy_sig_tag(digest)
    sig_ref = repo.with_tag(tag)
    layers: list[Descriptor] = []
    base_config: dict[str, Any] | None = None
    # Appending keeps the media types of an existing image (go-containerregistry's
    # mutate.Append does the same); a new one is OCI.
    manifest_type, config_type = mt.OCI_MANIFEST, mt.OCI_IMAGE_CONFIG
    try:
        existing = await client.get_manifest(sig_ref)
    except NotFoundError:
        existing = None
    if existing is not None:
        doc = existing.json()
        try:
            layers = [Descriptor.from_json(x) for x in doc.get("layers") or []]
            config_desc = Descriptor.from_json(doc.get("config"))
        except ValueError as e:
            raise CosignSigningError(f"{repo.name}:{tag} is not a cosign signature image:"
                                     f" {e}") from e
        if existing.media_type in (mt.OCI_MANIFEST, mt.DOCKER_MANIFEST):
            manifest_type = existing.media_type
        if config_desc.media_type:
            config_type = config_desc.media_type
        if len(layers) >= MAX_LEGACY_LAYERS:
            raise CosignSigningError(f"{repo.name}:{tag} already holds {len(layers)}"
                                     " signatures")
        try:
            raw = await client.fetch_blob(repo, config_desc, max_size=1 << 20)
            parsed = json.loads(raw)
            base_config = parsed if isinstance(parsed, dict) else None
        except (OcigitopsError, ValueError) as e:
            log.warning("unreadable .sig config, rebuilding it", extra={"error": str(e)})
    layer = Descriptor(SIMPLESIGNING_MEDIA_TYPE, sha256_digest(payload), len(payload),
                       annotations=sorted_map(annotations))
    if any(_same_signature(x, layer, payload, key) for x in layers):
        return tag, False
    await _push_small_blob(client, repo, payload)
    layers = [*layers, layer]
    # Simple-signing layers are uncompressed: diff_id == digest.
    config = build_legacy_config([x.digest for x in layers], base_config)
    config_digest = await _push_small_blob(client, repo, config)
    manifest = build_legacy_manifest(Descriptor(config_type, config_digest, len(config)),
                                     layers, manifest_type)
    await client.put_manifest(sig_ref, manifest, manifest_type, tag=tag)
    return tag, True


# -- public API ----------------------------------------------------------------------------

async def sign_cosign_key(client: RegistryClient, repo: Reference, digest: str,
                          key: PrivateKey, *, fmt: Format = "bundle",
                          annotations: Mapping[str, str] | None = None) -> SignResult:
    """Sign ``repo@digest`` with a cosign key and store the signature next to it.

    ``fmt="bundle"`` writes cosign v3's sigstore-bundle referrer; ``fmt="legacy"`` appends a
    layer to cosign v2's ``sha256-<hex>.sig`` image. ``annotations`` (cosign ``-a``) go
    into the signed simple-signing payload (``optional``); bundles have no place for them
    (cosign v3 ignores ``-a`` in that format too), so they are refused there rather than
    silently dropped.
    """
    check_digest(digest)
    repo = repo.repo_only()
    subject = await _subject(client, repo, digest)
    hint = key_hint(key)
    if fmt == "legacy":
        sig = sign_legacy(key, repo.name, digest, dict(annotations) if annotations else None)
        tag, _added = await _store_legacy(client, repo, digest, sig.payload,
                                          sig.annotations(), key.public_key())
        return SignResult(kind="cosign-legacy", subject=digest, location=f"{repo.name}:{tag}",
                          stored_via="tag", signer=f"key sha256:{hint}")
    if fmt != "bundle":
        raise UsageError(f"unknown cosign signature format {fmt!r}: use bundle or legacy")
    if annotations:
        raise UsageError("annotations (-a) are signed in the legacy format only: pass"
                         " --format legacy, or drop them")
    bundle = build_key_bundle(key, build_statement(None, subject.digest))
    return await _store_bundle(client, repo, subject, bundle, kind="cosign-bundle",
                               signer=f"key sha256:{hint}")


def _resolve_token(identity_token: str | None) -> str:
    if identity_token:
        return identity_token
    from sigstore.oidc import IdentityError, detect_credential

    try:
        token = detect_credential()
    except IdentityError as e:
        raise KeylessSigningError(f"ambient OIDC credential detection failed: {e}") from e
    if not token:
        raise MissingIdentityTokenError(
            "keyless signing needs an OIDC identity token and none was found: pass"
            " --identity-token (or SIGSTORE_ID_TOKEN), or run in GitHub Actions with"
            " 'permissions: id-token: write'")
    return token


def _trust_config(staging: bool) -> ClientTrustConfig:
    """The public-good (or staging) trust config: TUF refresh, else the embedded copy."""
    from sigstore.errors import TUFError
    from sigstore.models import ClientTrustConfig

    load = ClientTrustConfig.staging if staging else ClientTrustConfig.production
    try:
        return load(offline=False)
    except TUFError as e:
        log.warning("TUF refresh failed, using the trust root shipped with sigstore-python",
                    extra={"error": str(e)})
        return load(offline=True)


def _keyless_sign(token: str, statement: bytes, staging: bool,
                  trust_config: ClientTrustConfig | None) -> tuple[bytes, str]:
    """Blocking sigstore-python flow: returns (bundle JSON, signer identity)."""
    import requests
    from sigstore import dsse
    from sigstore.errors import Error as SigstoreError
    from sigstore.oidc import ExpiredIdentity, IdentityError, IdentityToken
    from sigstore.sign import SigningContext

    from ocigitops.verifier.sigstore_private import FulcioClientError

    try:
        ident = IdentityToken(token)
    except IdentityError as e:
        raise KeylessSigningError(f"the OIDC identity token is not usable: {e}") from e
    try:
        config = trust_config or _trust_config(staging)
        ctx = SigningContext.from_trust_config(config)
        fulcio = config.signing_config.get_fulcio().url
    except (SigstoreError, ValueError) as e:
        raise KeylessSigningError(f"cannot load the Sigstore trust configuration: {e}") from e
    try:
        with ctx.signer(ident, cache=False) as signer:
            bundle = signer.sign_dsse(dsse.Statement(statement))
    except requests.RequestException as e:
        url = getattr(e.request, "url", None) or fulcio
        service = "Rekor" if "rekor" in str(url) else "Fulcio"
        raise SigstoreUnreachableError(
            f"cannot reach {service} at {url}: {type(e).__name__}"
            " (keyless signing needs network access to Sigstore)") from e
    except FulcioClientError as e:
        cause = e.__cause__
        if isinstance(cause, requests.RequestException) and cause.response is None:
            raise SigstoreUnreachableError(f"cannot reach Fulcio at {fulcio}: {e}") from e
        raise KeylessSigningError(f"Fulcio refused the certificate request: {e}") from e
    except ExpiredIdentity as e:
        raise KeylessSigningError("the OIDC identity token expired before Fulcio was asked"
                                  " for a certificate: get a fresh one") from e
    except (SigstoreError, ValueError) as e:
        raise KeylessSigningError(f"keyless signing failed: {e}") from e
    return bundle.to_json().encode(), ident.identity


async def sign_cosign_keyless(client: RegistryClient, repo: Reference, digest: str, *,
                              identity_token: str | None = None, staging: bool = False,
                              trust_config: ClientTrustConfig | None = None) -> SignResult:
    """Sign ``repo@digest`` keylessly (Fulcio certificate, Rekor entry) via sigstore-python.

    The OIDC token is ``identity_token`` or the ambient one (``detect_credential``: GitHub
    Actions and other CI providers). Without one :class:`MissingIdentityTokenError` is
    raised; network failures become :class:`SigstoreUnreachableError`. The bundle (DSSE over
    the cosign in-toto statement) is stored as a referrer, as cosign v3 does.
    """
    check_digest(digest)
    repo = repo.repo_only()
    token = _resolve_token(identity_token)
    subject = await _subject(client, repo, digest)
    statement = build_statement(repo.name, subject.digest)
    bundle, identity = await asyncio.to_thread(_keyless_sign, token, statement, staging,
                                               trust_config)
    return await _store_bundle(client, repo, subject, bundle, kind="cosign-keyless",
                               signer=identity)
