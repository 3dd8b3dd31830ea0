"""Notary Project (notation) signing: JWS or COSE envelopes stored as OCI referrers.

Wire format (docs/formats.md section 4), checked against notation-core-go 1.3 and notation-go
1.3.2, which is what ``notation sign`` 1.3 writes:

* payload ``application/vnd.cncf.notary.payload.v1+json``: ``{"targetArtifact": descriptor}``
  with the signed manifest's mediaType, digest, size and the user metadata as annotations.
  The JWS payload is re-marshalled by golang-jwt as a map, so its keys are sorted; the COSE
  payload keeps the OCI descriptor's field order. Either way the verifier reads the bytes
  that were signed, so only the content matters;
* JWS: flattened JSON serialisation ``{"payload", "protected", "header", "signature"}``; the
  protected header is a JSON object with sorted keys (``alg``, ``crit``, ``cty``,
  ``io.cncf.notary.expiry``, ``io.cncf.notary.signingScheme``,
  ``io.cncf.notary.signingTime``), times as RFC 3339 truncated to the second; ``crit`` lists
  the signing scheme and, when set, the expiry (the signing time of ``notary.x509`` is not
  critical); the unprotected ``header`` has ``x5c`` (standard base64 DER, leaf first) and
  ``io.cncf.notary.signingAgent``;
* COSE: tagged COSE_Sign1 (18) whose protected header holds ``1`` (alg), ``2`` (crit),
  ``3`` (content type) and the string labels above, times as CBOR tag 1 over integer epoch
  seconds; the unprotected header holds ``33`` (x5chain, an array of DER certificates) and the
  signing agent;
* RSA keys sign with RSASSA-PSS, salt length = hash length (PS256/384/512 for 2048/3072/4096
  bits); EC keys with ECDSA, signature as fixed-size ``r || s`` (ES256/384/512 for
  P-256/384/521);
* storage: an image manifest with ``artifactType`` ``application/vnd.cncf.notary.signature``,
  the empty config, the envelope as its only layer, the signed manifest as ``subject`` and
  the annotations ``io.cncf.notary.x509chain.thumbprint#S256`` and
  ``org.opencontainers.image.created``. notation-go itself writes the older form (config
  media type ``application/vnd.cncf.notary.signature``, no ``artifactType``); registries
  report both as the same artifact type, and notation lists and verifies either.
  The manifest is pushed with :meth:`RegistryClient.push_referrer`, which also writes the
  ``sha256-<hex>`` tag-schema index on registries without the referrers API.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ocigitops import mediatypes as mt
from ocigitops.artifact import go_json, sorted_map
from ocigitops.errors import UsageError
from ocigitops.publisher.signresult import SignResult
from ocigitops.reference import Reference, validate_digest
from ocigitops.registry import RegistryClient, sha256_digest
from ocigitops.verifier.errors import CertificateError
from ocigitops.verifier.keys import PrivateKey
from ocigitops.verifier.notation import check_chain_time, validate_chain
from ocigitops.version import __version__

log = logging.getLogger("ocigitops.sign.notation")

#: Artifact type of notation signature manifests.
ARTIFACT_TYPE = "application/vnd.cncf.notary.signature"
#: Content type of the signed payload.
PAYLOAD_MEDIA_TYPE = "application/vnd.cncf.notary.payload.v1+json"
JWS_MEDIA_TYPE = "application/jose+json"
COSE_MEDIA_TYPE = "application/cose"
#: Manifest annotation: JSON array of the sha256 hex of each DER certificate, leaf first.
ANN_THUMBPRINT = "io.cncf.notary.x509chain.thumbprint#S256"
SIGNING_SCHEME = "notary.x509"
SIGNING_AGENT = f"ocigitops/{__version__}"

H_SCHEME = "io.cncf.notary.signingScheme"
H_SIGNING_TIME = "io.cncf.notary.signingTime"
H_EXPIRY = "io.cncf.notary.expiry"
H_AGENT = "io.cncf.notary.signingAgent"

#: COSE header labels (RFC 9052 / RFC 9360) and algorithm identifiers.
COSE_ALG, COSE_CRIT, COSE_CONTENT_TYPE, COSE_X5CHAIN = 1, 2, 3, 33
COSE_SIGN1_TAG = 18
COSE_ALGS = {"PS256": -37, "PS384": -38, "PS512": -39, "ES256": -7, "ES384": -35, "ES512": -36}

Envelope = Literal["jws", "cose"]

_RSA_ALGS = {2048: "PS256", 3072: "PS384", 4096: "PS512"}
_EC_ALGS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


@dataclass(frozen=True)
class SignedEnvelope:
    """An envelope ready to store: its bytes, media type and the times it carries."""

    data: bytes
    media_type: str
    signing_time: datetime
    expiry: datetime | None


def signature_algorithm(key: PrivateKey) -> str:
    """The notation algorithm for ``key``: PS256/384/512 by RSA size, ES256/384/512 by curve.

    Raises :class:`UsageError` for any other key (notation supports no other sizes, curves
    or key types such as Ed25519).
    """
    if isinstance(key, rsa.RSAPrivateKey):
        alg = _RSA_ALGS.get(key.key_size)
        if alg is None:
            raise UsageError(f"notation signs with RSA 2048, 3072 or 4096-bit keys, not"
                             f" {key.key_size}-bit")
        return alg
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = _EC_ALGS.get(key.curve.name)
        if alg is None:
            raise UsageError(f"notation signs with EC keys on P-256, P-384 or P-521, not"
                             f" {key.curve.name}")
        return alg
    raise UsageError(f"notation signs with RSA or EC keys, not {type(key).__name__}")


def _raw_sign(key: PrivateKey, alg: str, data: bytes) -> bytes:
    """Sign ``data``: RSA-PSS with salt length = hash length, or ECDSA as raw ``r || s``."""
    h = _HASHES[alg[2:]]()
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PSS(mgf=padding.MGF1(h),
                                          salt_length=padding.PSS.DIGEST_LENGTH), h)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(h)))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    raise UsageError(f"notation signs with RSA or EC keys, not {type(key).__name__}")


def _spki(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo))


def check_signing_material(key: PrivateKey, cert_chain: Sequence[x509.Certificate],
                           when: datetime) -> str:
    """Check ``key`` and ``cert_chain`` the way notation does before it signs.

    The chain is leaf first and ends in a self-signed root (a self-signed leaf alone is
    allowed), each certificate is issued by the next, CAs carry the CA constraints, the leaf
    allows digitalSignature (and codeSigning when it has an EKU), every certificate is valid
    at ``when`` and the leaf certifies ``key``. Returns the signature algorithm.
    """
    alg = signature_algorithm(key)
    chain = tuple(cert_chain)
    if not chain:
        raise UsageError("notation signing needs a certificate chain (leaf first)")
    if _spki(chain[0].public_key()) != _spki(key.public_key()):
        raise UsageError(f"the signing certificate {chain[0].subject.rfc4514_string()} does"
                         " not certify the signing key (is the chain leaf first?)")
    try:
        validate_chain(chain)
        check_chain_time(chain, when, "signing time")
    except CertificateError as exc:
        raise UsageError(f"certificate chain cannot sign notation signatures: {exc}") from exc
    return alg


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def target_descriptor(media_type: str, digest: str, size: int,
                      user_metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The payload's ``targetArtifact``, in the OCI descriptor's field order."""
    desc: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": size}
    if user_metadata:
        desc["annotations"] = sorted_map(user_metadata)
    return desc


def _sorted_deep(value: Any) -> Any:
    """``value`` with every object's keys in Go map order (golang-jwt re-marshals claims)."""
    if isinstance(value, dict):
        return {k: _sorted_deep(value[k]) for k in sorted(value, key=lambda s: s.encode())}
    return value


def build_jws(payload: dict[str, Any], key: PrivateKey, chain: Sequence[x509.Certificate],
              alg: str, signing_time: datetime, expiry: datetime | None,
              signing_agent: str = SIGNING_AGENT) -> bytes:
    """A flattened JWS JSON notation envelope, as notation-core-go's ``jws`` package builds it."""
    crit = [H_SCHEME]
    header: dict[str, Any] = {"alg": alg, "cty": PAYLOAD_MEDIA_TYPE, H_SCHEME: SIGNING_SCHEME,
                              H_SIGNING_TIME: _rfc3339(signing_time)}
    if expiry is not None:
        crit.append(H_EXPIRY)
        header[H_EXPIRY] = _rfc3339(expiry)
    header["crit"] = crit
    protected = _b64url(go_json(_sorted_deep(header)))
    body = _b64url(go_json(_sorted_deep(payload)))
    signature = _raw_sign(key, alg, f"{protected}.{body}".encode())
    unprotected: dict[str, Any] = {
        "x5c": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
                for c in chain]}
    if signing_agent:
        unprotected[H_AGENT] = signing_agent
    return go_json({"payload": body, "protected": protected, "header": unprotected,
                    "signature": _b64url(signature)})


def build_cose(payload: dict[str, Any], key: PrivateKey, chain: Sequence[x509.Certificate],
               alg: str, signing_time: datetime, expiry: datetime | None,
               signing_agent: str = SIGNING_AGENT) -> bytes:
    """A tagged COSE_Sign1 notation envelope, as notation-core-go's ``cose`` package builds it.

    Map keys are written in CBOR core deterministic order (integers, then the string labels
    by encoded length), the order go-cose produces.
    """
    crit = [H_SCHEME]
    if expiry is not None:
        crit.append(H_EXPIRY)
    protected: dict[Any, Any] = {COSE_ALG: COSE_ALGS[alg], COSE_CRIT: crit,
                                 COSE_CONTENT_TYPE: PAYLOAD_MEDIA_TYPE}
    if expiry is not None:
        protected[H_EXPIRY] = cbor2.CBORTag(1, int(expiry.timestamp()))
    protected[H_SIGNING_TIME] = cbor2.CBORTag(1, int(signing_time.timestamp()))
    protected[H_SCHEME] = SIGNING_SCHEME
    protected_raw = cbor2.dumps(protected, canonical=True)
    body = go_json(payload)
    to_sign = cbor2.dumps(["Signature1", protected_raw, b"", body])
    signature = _raw_sign(key, alg, to_sign)
    unprotected: dict[Any, Any] = {
        COSE_X5CHAIN: [c.public_bytes(serialization.Encoding.DER) for c in chain]}
    if signing_agent:
        unprotected[H_AGENT] = signing_agent
    return bytes(cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG,
                                           [protected_raw, unprotected, body, signature]),
                             canonical=True))


def build_envelope(media_type: str, digest: str, size: int, key: PrivateKey,
                   cert_chain: Sequence[x509.Certificate], *, envelope: Envelope = "jws",
                   signing_time: datetime | None = None, expiry: timedelta | None = None,
                   user_metadata: Mapping[str, str] | None = None,
                   signing_agent: str = SIGNING_AGENT) -> SignedEnvelope:
    """Sign the manifest ``media_type``/``digest``/``size`` into a notation envelope.

    No network. ``signing_time`` (default: now) is truncated to the second as notation does;
    ``expiry`` is a duration after it. Key, chain and inputs are checked first, raising
    :class:`UsageError`.
    """
    validate_digest(digest)
    if not media_type:
        raise UsageError("the signed manifest's media type is required")
    if size < 0:
        raise UsageError(f"manifest size {size} is negative")
    if envelope not in ("jws", "cose"):
        raise UsageError(f"notation envelope {envelope!r} is not 'jws' or 'cose'")
    if expiry is not None and expiry.total_seconds() < 1:
        raise UsageError("the signature expiry must be at least one second in the future")
    for k in user_metadata or {}:
        if not k:
            raise UsageError("user metadata keys must not be empty")
    now = (signing_time or datetime.now(UTC)).astimezone(UTC)
    when = now.replace(microsecond=0)
    expires = (now + expiry).replace(microsecond=0) if expiry is not None else None
    chain = tuple(cert_chain)
    alg = check_signing_material(key, chain, when)
    if expires is not None and any(c.not_valid_after_utc < expires for c in chain):
        log.warning("the signature expiry is after the certificate chain expires",
                    extra={"expiry": _rfc3339(expires)})
    payload = {"targetArtifact": target_descriptor(media_type, digest, size, user_metadata)}
    build = build_jws if envelope == "jws" else build_cose
    data = build(payload, key, chain, alg, when, expires, signing_agent)
    return SignedEnvelope(data=data,
                          media_type=JWS_MEDIA_TYPE if envelope == "jws" else COSE_MEDIA_TYPE,
                          signing_time=when, expiry=expires)


def chain_thumbprints(cert_chain: Sequence[x509.Certificate]) -> list[str]:
    """Lowercase sha256 hex of each DER certificate, leaf first."""
    return [hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest()
            for c in cert_chain]


def signature_annotations(cert_chain: Sequence[x509.Certificate],
                          signing_time: datetime) -> dict[str, str]:
    """The signature manifest's annotations (Go map order)."""
    return sorted_map({
        ANN_THUMBPRINT: json.dumps(chain_thumbprints(cert_chain), separators=(",", ":")),
        mt.ANN_CREATED: _rfc3339(signing_time),
    })


def build_signature_manifest(envelope_media_type: str, envelope_digest: str,
                             envelope_size: int, subject: Mapping[str, Any],
                             annotations: Mapping[str, str]) -> bytes:
    """The signature manifest in the field order of image-spec's Go ``Manifest`` type."""
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_JSON_DIGEST,
                   "size": len(mt.EMPTY_JSON)},
        "layers": [{"mediaType": envelope_media_type, "digest": envelope_digest,
                    "size": envelope_size}],
        "subject": dict(subject),
        "annotations": sorted_map(annotations),
    }
    return go_json(doc)


async def sign_notation(
    client: RegistryClient,
    repo: Reference,
    digest: str,
    media_type: str,
    size: int,
    key: PrivateKey,
    cert_chain: Sequence[x509.Certificate],
    *,
    envelope: Envelope = "jws",
    expiry: timedelta | None = None,
    user_metadata: Mapping[str, str] | None = None,
) -> SignResult:
    """Sign ``repo@digest`` with notation's ``notary.x509`` scheme and store the signature.

    ``media_type`` and ``size`` must be those of the manifest as the registry serves it:
    ``notation verify`` compares them with the payload. ``cert_chain`` is leaf first and
    certifies ``key``. ``expiry`` adds ``io.cncf.notary.expiry`` (signing time + expiry);
    ``user_metadata`` becomes the payload descriptor's annotations (``notation sign -m``).
    The envelope blob and the empty config are uploaded, then the signature manifest is
    pushed as a referrer of ``digest`` (tag-schema fallback included).
    """
    signed = build_envelope(media_type, digest, size, key, cert_chain, envelope=envelope,
                            expiry=expiry, user_metadata=user_metadata)
    target = repo.repo_only()
    env_digest = sha256_digest(signed.data)
    await client.push_blob(target, env_digest, len(signed.data), signed.data)
    await client.push_blob(target, mt.EMPTY_JSON_DIGEST, len(mt.EMPTY_JSON), mt.EMPTY_JSON)
    annotations = signature_annotations(cert_chain, signed.signing_time)
    manifest = build_signature_manifest(
        signed.media_type, env_digest, len(signed.data),
        {"mediaType": media_type, "digest": digest, "size": size}, annotations)
    sig_digest = await client.push_referrer(target, manifest, digest, ARTIFACT_TYPE,
                                            annotations)
    # push_referrer does not say whether the registry indexed the referrer itself; one
    # listing answers that and confirms the signature is discoverable.
    refs = await client.referrers(target, digest, ARTIFACT_TYPE)
    if not any(d.digest == sig_digest for d in refs.descriptors):
        log.warning("signature manifest pushed but not listed yet as a referrer",
                    extra={"subject": digest, "signature": sig_digest, "via": refs.via})
    leaf = cert_chain[0]
    return SignResult(kind="notation", subject=digest, location=f"{target.name}@{sig_digest}",
                      stored_via=refs.via, signer=leaf.subject.rfc4514_string())
