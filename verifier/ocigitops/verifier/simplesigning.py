"""cosign "simple signing" payloads and legacy ``.sig`` layer verification.

cosign v2 signs a small JSON document naming the image manifest digest and stores it as a layer
of the ``sha256-<hex>.sig`` image, with the base64 signature in a layer annotation. No library
outside Go verifies these (sigstore-python only handles bundles), so it is done here.

What is checked, as ``cosign verify --key`` does: the signature over the exact payload bytes, the
payload ``type``, the ``docker-manifest-digest`` against the digest being verified, the required
``-a`` annotations against ``optional``, and when a Rekor bundle annotation is present (or
required) its SET and entry body. The ``docker-reference`` is not compared (cosign does not
either: images get copied between registries).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ocigitops import jsonsafe
from ocigitops.errors import MalformedDocumentError
from ocigitops.verifier.errors import (
    DigestMismatchError,
    MalformedSignatureError,
    OversizedInputError,
    SignatureVerificationError,
    TransparencyLogError,
)
from ocigitops.verifier.keys import PrivateKey, PublicKey, key_hint
from ocigitops.verifier.rekor import RekorKey, check_entry_body, parse_rekor_bundle, verify_set
from ocigitops.verifier.results import SignatureVerification, Signer
from ocigitops.verifier.sigalg import sign, verify_signature

SIMPLESIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
RFC3161_ANNOTATION = "dev.sigstore.cosign/rfc3161timestamp"
PAYLOAD_TYPE = "cosign container image signature"

# A simple-signing payload is a few hundred bytes; 1 MiB leaves room for big annotation maps
# while refusing blobs meant to exhaust memory.
MAX_PAYLOAD_BYTES = 1 << 20
MAX_ANNOTATION_BYTES = 1 << 20

_DIGEST_RE = re.compile(r"^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$")


def check_digest(digest: str) -> str:
    """Return ``digest`` if it is a well-formed ``sha256:``/``sha384:``/``sha512:`` digest."""
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise MalformedSignatureError(f"{digest!r} is not a valid OCI digest")
    return digest


@dataclass(frozen=True)
class SimpleSigningPayload:
    """The parsed cosign simple-signing payload."""

    docker_reference: str
    manifest_digest: str
    optional: Mapping[str, Any] | None


def build_payload(reference: str, digest: str,
                  annotations: Mapping[str, Any] | None = None) -> bytes:
    """Build the payload ``cosign sign`` writes (same key order and compact separators)."""
    check_digest(digest)
    doc = {
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": PAYLOAD_TYPE,
        },
        "optional": dict(annotations) if annotations else None,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def parse_payload(data: bytes) -> SimpleSigningPayload:
    """Parse a simple-signing payload; refuse wrong types and missing fields.

    The JSON is read strictly: a key given twice, or twice in different case (Go's
    ``encoding/json``, which cosign and Flux use, fills ``docker-manifest-digest`` from
    ``Docker-Manifest-Digest`` too, and keeps the last), is refused, so no payload can name
    one digest to us and another to them.
    """
    if len(data) > MAX_PAYLOAD_BYTES:
        raise OversizedInputError(f"signature payload is {len(data)} bytes, over the 1 MiB cap")
    try:
        doc = jsonsafe.loads_object(data, "simple-signing payload")
    except MalformedDocumentError as exc:
        raise MalformedSignatureError(f"not a cosign simple-signing payload: {exc}") from exc
    try:
        critical = doc["critical"]
        ptype = critical["type"]
        digest = critical["image"]["docker-manifest-digest"]
        ref = critical.get("identity", {}).get("docker-reference", "")
        optional = doc.get("optional")
    except (KeyError, TypeError, AttributeError) as exc:
        raise MalformedSignatureError(
            f"not a cosign simple-signing payload: missing or mistyped {exc}") from exc
    if ptype != PAYLOAD_TYPE:
        raise MalformedSignatureError(f"payload type {ptype!r} is not {PAYLOAD_TYPE!r}")
    if optional is not None and not isinstance(optional, dict):
        raise MalformedSignatureError("payload 'optional' is not an object")
    if not isinstance(ref, str):
        raise MalformedSignatureError("payload docker-reference is not a string")
    return SimpleSigningPayload(ref, check_digest(digest), optional)


@dataclass(frozen=True)
class LegacySignature:
    """One layer of a cosign ``.sig`` image: payload bytes plus the layer annotations."""

    payload: bytes
    signature: bytes
    certificate_pem: bytes | None = None
    chain_pem: bytes | None = None
    rekor_bundle: str | None = None
    rfc3161_timestamp: str | None = None

    @classmethod
    def from_layer(cls, payload: bytes, annotations: Mapping[str, str]) -> LegacySignature:
        """Build from the layer blob and its annotations (as found in the manifest)."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise OversizedInputError(
                f"signature payload is {len(payload)} bytes, over the 1 MiB cap"
            )
        for k, v in annotations.items():
            if len(v) > MAX_ANNOTATION_BYTES:
                raise OversizedInputError(f"annotation {k} is over the 1 MiB cap")
        sig_b64 = annotations.get(SIGNATURE_ANNOTATION)
        if not sig_b64:
            raise MalformedSignatureError(f"layer has no {SIGNATURE_ANNOTATION} annotation")
        try:
            sig = base64.b64decode(sig_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedSignatureError("signature annotation is not valid base64") from exc
        cert = annotations.get(CERTIFICATE_ANNOTATION)
        chain = annotations.get(CHAIN_ANNOTATION)
        return cls(
            payload=payload,
            signature=sig,
            certificate_pem=cert.encode() if cert else None,
            chain_pem=chain.encode() if chain else None,
            rekor_bundle=annotations.get(BUNDLE_ANNOTATION) or None,
            rfc3161_timestamp=annotations.get(RFC3161_ANNOTATION) or None,
        )

    def annotations(self) -> dict[str, str]:
        """The layer annotations to write for this signature (publisher side)."""
        out = {SIGNATURE_ANNOTATION: base64.b64encode(self.signature).decode()}
        if self.certificate_pem:
            out[CERTIFICATE_ANNOTATION] = self.certificate_pem.decode()
        if self.chain_pem:
            out[CHAIN_ANNOTATION] = self.chain_pem.decode()
        if self.rekor_bundle:
            out[BUNDLE_ANNOTATION] = self.rekor_bundle
        if self.rfc3161_timestamp:
            out[RFC3161_ANNOTATION] = self.rfc3161_timestamp
        return out


def check_annotations(payload: SimpleSigningPayload, required: Mapping[str, Any]) -> None:
    """Every required annotation must appear in ``optional`` with the same value."""
    optional = payload.optional or {}
    for k, v in required.items():
        if k not in optional:
            raise SignatureVerificationError(f"required annotation {k!r} is not in the payload")
        if optional[k] != v:
            raise SignatureVerificationError(
                f"annotation {k!r} is {optional[k]!r} in the payload, required {v!r}"
            )


def verify_legacy_signature(
    sig: LegacySignature,
    key: PublicKey,
    digest: str,
    *,
    required_annotations: Mapping[str, Any] | None = None,
    rekor_keys: list[RekorKey] | None = None,
    require_tlog: bool = False,
) -> SignatureVerification:
    """Verify one key-signed ``.sig`` layer for the manifest ``digest``.

    When ``sig`` carries a Rekor bundle and ``rekor_keys`` are given, the SET and entry body are
    checked too; ``require_tlog`` makes a missing or unverifiable bundle a failure (cosign's
    default unless ``--insecure-ignore-tlog``). Raises a :class:`SignatureVerificationError`
    subclass on any failure.
    """
    check_digest(digest)
    verify_signature(key, sig.signature, sig.payload)
    payload = parse_payload(sig.payload)
    if payload.manifest_digest != digest:
        raise DigestMismatchError(
            f"signature is for {payload.manifest_digest}, not for {digest}"
        )
    check_annotations(payload, required_annotations or {})
    tlog = False
    when: datetime | None = None
    if sig.rekor_bundle is not None and rekor_keys is not None:
        rb = parse_rekor_bundle(sig.rekor_bundle)
        verify_set(rb, rekor_keys)
        check_entry_body(rb, signature=sig.signature, payload=sig.payload, key=key)
        tlog = True
        when = datetime.fromtimestamp(rb.integrated_time, tz=UTC)
    elif require_tlog:
        raise TransparencyLogError(
            "a transparency log entry is required but the signature has none"
            if sig.rekor_bundle is None else "no Rekor keys were given to check the log entry"
        )
    return SignatureVerification(
        digest=digest, signer=Signer(kind="key", key_hint=key_hint(key)),
        kind="cosign-legacy", payload_type=SIMPLESIGNING_MEDIA_TYPE, signed_at=when,
        details=("verified in transparency log",) if tlog else (),
    )


def sign_legacy(key: PrivateKey, reference: str, digest: str,
                annotations: Mapping[str, Any] | None = None) -> LegacySignature:
    """Sign ``digest`` as ``cosign sign --key --tlog-upload=false`` would."""
    payload = build_payload(reference, digest, annotations)
    return LegacySignature(payload=payload, signature=sign(key, payload))
