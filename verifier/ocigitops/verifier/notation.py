"""Notary Project (notation) signature envelopes: JWS and COSE_Sign1, verified offline.

There is no Python notation verifier, so the envelope rules of notation-core-go and the
verification steps of notation-go are implemented here:

* integrity: envelope structure, protected headers and ``crit``, signing scheme, the algorithm
  derived from the leaf key equals the header ``alg``, the signature, the certificate chain
  (leaf first, each signed by the next, ending in a self-signed root; CA constraints and the
  code-signing EKU rules), and the payload's ``targetArtifact`` digest equals the subject;
* authenticity: a certificate of the chain is in a trust store of the scheme's type
  (``ca`` for ``notary.x509``, ``signingAuthority`` for the signing-authority scheme) and the
  leaf subject satisfies the statement's trusted identities;
* authentic timestamp: ``notary.x509`` signatures need the chain valid now, or valid at the
  time of an RFC 3161 countersignature that verifies against a ``tsa`` store;
  signing-authority signatures need the chain valid at ``authenticSigningTime``;
* expiry: ``io.cncf.notary.expiry`` has not passed;
* revocation: not checked (this verifier never goes online); reported as such.

Each check is enforced, logged or skipped per the trust policy level and overrides. Envelopes
that require a verification plugin or carry critical headers we do not understand are refused:
failing closed is the only safe answer without the plugin.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID
from rfc3161_client import VerificationError as Rfc3161VerificationError
from rfc3161_client import VerifierBuilder, decode_timestamp_response

from ocigitops import jsonsafe
from ocigitops.errors import MalformedDocumentError
from ocigitops.verifier.errors import (
    CertificateError,
    DigestMismatchError,
    IdentityMismatchError,
    MalformedSignatureError,
    OversizedInputError,
    PolicyError,
    SignatureVerificationError,
    TimestampError,
    TrustStoreError,
    UnsupportedAlgorithmError,
)
from ocigitops.verifier.results import SignatureVerification, Signer
from ocigitops.verifier.simplesigning import check_digest
from ocigitops.verifier.trustpolicy import (
    Action,
    Check,
    TrustPolicyDocument,
    TrustPolicyStatement,
    TrustStore,
)

JWS_MEDIA_TYPE = "application/jose+json"
COSE_MEDIA_TYPE = "application/cose"
PAYLOAD_CONTENT_TYPE = "application/vnd.cncf.notary.payload.v1+json"
SCHEME_X509 = "notary.x509"
SCHEME_SIGNING_AUTHORITY = "notary.x509.signingAuthority"
MAX_ENVELOPE_BYTES = 1 << 20
MAX_CHAIN_LENGTH = 10

H_SCHEME = "io.cncf.notary.signingScheme"
H_SIGNING_TIME = "io.cncf.notary.signingTime"
H_AUTHENTIC_TIME = "io.cncf.notary.authenticSigningTime"
H_EXPIRY = "io.cncf.notary.expiry"
H_PLUGIN = "io.cncf.notary.verificationPlugin"
H_PLUGIN_MIN = "io.cncf.notary.verificationPluginMinVersion"
H_TIMESTAMP = "io.cncf.notary.timestampSignature"
H_AGENT = "io.cncf.notary.signingAgent"

_KNOWN_PROTECTED = {H_SCHEME, H_SIGNING_TIME, H_AUTHENTIC_TIME, H_EXPIRY, H_PLUGIN, H_PLUGIN_MIN}
_COSE_ALGS = {-37: "PS256", -38: "PS384", -39: "PS512", -7: "ES256", -35: "ES384", -36: "ES512"}
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "PS256": hashes.SHA256(), "PS384": hashes.SHA384(), "PS512": hashes.SHA512(),
    "ES256": hashes.SHA256(), "ES384": hashes.SHA384(), "ES512": hashes.SHA512(),
}


@dataclass(frozen=True)
class NotationEnvelope:
    """The parts of a notation signature envelope that verification needs."""

    format: str
    alg: str
    signing_scheme: str
    signing_time: datetime | None
    authentic_signing_time: datetime | None
    expiry: datetime | None
    payload: bytes
    signature: bytes
    signed_bytes: bytes
    chain: tuple[x509.Certificate, ...]
    timestamp_token: bytes | None
    plugin: str | None
    extended_critical: tuple[str, ...] = ()


def _b64url(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedSignatureError(f"JWS {what} is missing")
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedSignatureError(f"JWS {what} is not base64url") from exc


def _one_line(exc: BaseException) -> str:
    """An exception message on one line, bounded: reasons stay one line."""
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else (text or type(exc).__name__)


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    """Strict JSON (no duplicate keys, also ignoring case, as Go would read them)."""
    try:
        return jsonsafe.loads_object(data, what)
    except MalformedDocumentError as exc:
        raise MalformedSignatureError(str(exc)) from exc


_CBOR_MAX_DEPTH = 32


def _cbor_key(raw: bytes) -> Any:
    try:
        key = cbor2.loads(raw)
        hash(key)
    except Exception:
        return ("raw", raw)
    return (type(key).__name__, key)


def _cbor_item(data: bytes, pos: int, depth: int) -> int:
    """End offset of the CBOR item at ``pos``; refuses duplicate map keys, indefinite
    lengths and truncation."""
    if depth > _CBOR_MAX_DEPTH:
        raise ValueError("CBOR is nested too deeply")
    if pos >= len(data):
        raise ValueError("CBOR is truncated")
    major, info = data[pos] >> 5, data[pos] & 0x1F
    pos += 1
    if info < 24:
        arg = info
    elif info <= 27:
        n = 1 << (info - 24)
        if pos + n > len(data):
            raise ValueError("CBOR is truncated")
        arg = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    else:
        raise ValueError("indefinite-length or reserved CBOR items are not accepted")
    if major in (0, 1, 7):
        return pos
    if major in (2, 3):
        if pos + arg > len(data):
            raise ValueError("CBOR is truncated")
        return pos + arg
    if major == 4:
        for _ in range(arg):
            pos = _cbor_item(data, pos, depth + 1)
        return pos
    if major == 5:
        seen: set[Any] = set()
        for _ in range(arg):
            start = pos
            pos = _cbor_item(data, pos, depth + 1)
            key = _cbor_key(data[start:pos])
            if key in seen:
                raise ValueError(f"CBOR map has the key {key[1]!r} twice")
            seen.add(key)
            pos = _cbor_item(data, pos, depth + 1)
        return pos
    return _cbor_item(data, pos, depth + 1)  # major 6: a tag and its item


def _cbor_unique_keys(data: bytes) -> None:
    """Refuse CBOR that go-cose would refuse and cbor2 reads: duplicate map keys (cbor2
    keeps the last), indefinite lengths, trailing bytes."""
    if _cbor_item(data, 0, 0) != len(data):
        raise ValueError("CBOR has trailing bytes")


def _parse_time(value: Any, what: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise MalformedSignatureError(f"{what} is not a finite time")
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise MalformedSignatureError(f"{what} {value!r} is out of range") from exc
    if isinstance(value, str):
        try:
            t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise MalformedSignatureError(f"{what} {value!r} is not an RFC 3339 time") from exc
        if t.tzinfo is None:
            raise MalformedSignatureError(f"{what} {value!r} has no time zone")
        return t
    raise MalformedSignatureError(f"{what} is not a time")


def _load_chain(ders: list[bytes]) -> tuple[x509.Certificate, ...]:
    if not ders:
        raise MalformedSignatureError("envelope carries no certificate chain")
    if len(ders) > MAX_CHAIN_LENGTH:
        raise MalformedSignatureError(f"certificate chain is longer than {MAX_CHAIN_LENGTH}")
    try:
        return tuple(x509.load_der_x509_certificate(d) for d in ders)
    except (ValueError, TypeError, x509.InvalidVersion) as exc:
        raise MalformedSignatureError(
            f"certificate chain holds an invalid certificate: {_one_line(exc)}") from exc


def _check_protected(h: Mapping[str, Any], crit: Any, fmt: str) -> tuple[str, ...]:
    """Shared protected-header rules; returns the extended critical header names."""
    if not isinstance(crit, list) or not all(isinstance(c, str) for c in crit):
        raise MalformedSignatureError(f"{fmt} 'crit' header is missing or not a list of names")
    if len(set(crit)) != len(crit):
        raise MalformedSignatureError(f"{fmt} 'crit' lists a header twice")
    for c in crit:
        if c not in h:
            raise MalformedSignatureError(f"{fmt} critical header {c!r} is not present")
    if H_SCHEME not in crit:
        raise MalformedSignatureError(f"{fmt} signing scheme header is not marked critical")
    if H_EXPIRY in h and H_EXPIRY not in crit:
        raise MalformedSignatureError(f"{fmt} expiry header is not marked critical")
    if H_AUTHENTIC_TIME in h and H_AUTHENTIC_TIME not in crit:
        raise MalformedSignatureError(f"{fmt} authenticSigningTime is not marked critical")
    if H_PLUGIN in h and H_PLUGIN not in crit:
        raise MalformedSignatureError(f"{fmt} verificationPlugin is not marked critical")
    return tuple(c for c in crit if c not in _KNOWN_PROTECTED)


def _build(fmt: str, alg: str, h: Mapping[str, Any], payload: bytes, signature: bytes,
           signed: bytes, chain: tuple[x509.Certificate, ...], ts: bytes | None,
           extended: tuple[str, ...]) -> NotationEnvelope:
    scheme = h.get(H_SCHEME)
    if scheme not in (SCHEME_X509, SCHEME_SIGNING_AUTHORITY):
        raise MalformedSignatureError(f"unknown signing scheme {scheme!r}")
    signing_time = authentic = None
    if scheme == SCHEME_X509:
        if H_SIGNING_TIME not in h:
            raise MalformedSignatureError("notary.x509 envelope lacks io.cncf.notary.signingTime")
        if H_AUTHENTIC_TIME in h:
            raise MalformedSignatureError(
                "notary.x509 envelope must not carry authenticSigningTime")
        signing_time = _parse_time(h[H_SIGNING_TIME], "signingTime")
    else:
        if H_AUTHENTIC_TIME not in h:
            raise MalformedSignatureError(
                "signingAuthority envelope lacks io.cncf.notary.authenticSigningTime")
        authentic = _parse_time(h[H_AUTHENTIC_TIME], "authenticSigningTime")
        if H_SIGNING_TIME in h:
            signing_time = _parse_time(h[H_SIGNING_TIME], "signingTime")
    expiry = _parse_time(h[H_EXPIRY], "expiry") if H_EXPIRY in h else None
    plugin = h.get(H_PLUGIN)
    return NotationEnvelope(
        format=fmt, alg=alg, signing_scheme=scheme, signing_time=signing_time,
        authentic_signing_time=authentic, expiry=expiry, payload=payload,
        signature=signature, signed_bytes=signed, chain=chain, timestamp_token=ts,
        plugin=plugin if isinstance(plugin, str) else None, extended_critical=extended,
    )


def parse_jws(data: bytes) -> NotationEnvelope:
    """Parse a flattened JWS JSON notation envelope."""
    doc = _json_object(data, "JWS envelope")
    protected_b64 = doc.get("protected")
    payload_b64 = doc.get("payload")
    protected = _b64url(protected_b64, "protected header")
    payload = _b64url(payload_b64, "payload")
    signature = _b64url(doc.get("signature"), "signature")
    h = _json_object(protected, "JWS protected header")
    alg = h.get("alg")
    if not isinstance(alg, str) or alg not in _HASHES:  # a list or object is unhashable
        raise UnsupportedAlgorithmError(f"JWS signing algorithm {alg!r} is not supported")
    if h.get("cty") != PAYLOAD_CONTENT_TYPE:
        raise MalformedSignatureError(f"JWS content type {h.get('cty')!r} is not the notation "
                                      "payload type")
    extended = _check_protected(h, h.get("crit"), "JWS")
    unprotected = doc.get("header")
    if not isinstance(unprotected, dict):
        raise MalformedSignatureError("JWS unprotected header is missing")
    x5c = unprotected.get("x5c")
    if not isinstance(x5c, list) or not all(isinstance(c, str) for c in x5c):
        raise MalformedSignatureError("JWS x5c header is missing or malformed")
    try:
        ders = [base64.b64decode(c, validate=True) for c in x5c]
        ts_raw = unprotected.get(H_TIMESTAMP)
        ts = base64.b64decode(ts_raw, validate=True) if ts_raw else None
    except (binascii.Error, ValueError, TypeError) as exc:
        raise MalformedSignatureError("JWS x5c or timestamp is not base64") from exc
    signed = f"{protected_b64}.{payload_b64}".encode()
    return _build("jws", alg, h, payload, signature, signed, _load_chain(ders), ts, extended)


def parse_cose(data: bytes) -> NotationEnvelope:
    """Parse a tagged COSE_Sign1 notation envelope."""
    try:
        _cbor_unique_keys(data)
        msg = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise MalformedSignatureError(f"COSE envelope is not CBOR: {_one_line(exc)}") from exc
    if not isinstance(msg, cbor2.CBORTag) or msg.tag != 18:
        raise MalformedSignatureError("COSE envelope is not a tagged COSE_Sign1 (18)")
    parts = msg.value
    if not isinstance(parts, list | tuple) or len(parts) != 4:
        raise MalformedSignatureError("COSE_Sign1 must have four elements")
    protected_raw, unprotected, payload, signature = parts
    if not isinstance(protected_raw, bytes) or not isinstance(payload, bytes) \
            or not isinstance(signature, bytes) or not isinstance(unprotected, Mapping):
        raise MalformedSignatureError("COSE_Sign1 elements have the wrong types")
    try:
        _cbor_unique_keys(protected_raw)
        h = cbor2.loads(protected_raw)
    except Exception as exc:
        raise MalformedSignatureError(
            f"COSE protected header is not CBOR: {_one_line(exc)}") from exc
    if not isinstance(h, Mapping):
        raise MalformedSignatureError("COSE protected header is not a map")
    alg_id = h.get(1)
    alg = _COSE_ALGS.get(alg_id) if isinstance(alg_id, int) else None
    if alg is None:
        raise UnsupportedAlgorithmError(f"COSE signing algorithm {h.get(1)!r} is not supported")
    if h.get(3) != PAYLOAD_CONTENT_TYPE:
        raise MalformedSignatureError("COSE content type is not the notation payload type")
    named = {k: v for k, v in h.items() if isinstance(k, str)}
    crit = h.get(2)
    extended = _check_protected(named, list(crit) if isinstance(crit, tuple) else crit, "COSE")
    chain_raw = unprotected.get(33)
    if isinstance(chain_raw, bytes):
        chain_raw = [chain_raw]
    if not isinstance(chain_raw, list | tuple) or not all(isinstance(c, bytes) for c in chain_raw):
        raise MalformedSignatureError("COSE x5chain (33) is missing from the unprotected header")
    ts = unprotected.get(H_TIMESTAMP)
    if ts is not None and not isinstance(ts, bytes):
        raise MalformedSignatureError("COSE timestamp signature is not a byte string")
    sig_structure = cbor2.dumps(["Signature1", protected_raw, b"", payload])
    return _build("cose", alg, named, payload, signature, sig_structure,
                  _load_chain(list(chain_raw)), ts, extended)


def parse_envelope(data: bytes, media_type: str) -> NotationEnvelope:
    """Parse a notation envelope of ``media_type`` (``application/jose+json`` or ``cose``)."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise OversizedInputError(f"signature envelope is {len(data)} bytes, over the 1 MiB cap")
    if not data:
        raise MalformedSignatureError("signature envelope is empty")
    if media_type == JWS_MEDIA_TYPE:
        return parse_jws(data)
    if media_type == COSE_MEDIA_TYPE:
        return parse_cose(data)
    raise UnsupportedAlgorithmError(f"signature envelope media type {media_type!r} is unknown")


# -- integrity -------------------------------------------------------------------------------

def expected_alg(key: object) -> str:
    """The notation algorithm for a leaf key (notation-core-go's key spec rules)."""
    if isinstance(key, rsa.RSAPublicKey):
        by_size = {2048: "PS256", 3072: "PS384", 4096: "PS512"}
        if key.key_size not in by_size:
            raise UnsupportedAlgorithmError(f"RSA key size {key.key_size} is not supported")
        return by_size[key.key_size]
    if isinstance(key, ec.EllipticCurvePublicKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        if key.curve.name not in by_curve:
            raise UnsupportedAlgorithmError(f"curve {key.curve.name} is not supported")
        return by_curve[key.curve.name]
    raise UnsupportedAlgorithmError(f"leaf key type {type(key).__name__} is not supported")


def _verify_raw(env: NotationEnvelope) -> None:
    key = env.chain[0].public_key()
    want = expected_alg(key)
    if want != env.alg:
        raise UnsupportedAlgorithmError(
            f"envelope algorithm {env.alg} does not match the signing key ({want})")
    h = _HASHES[env.alg]
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(env.signature, env.signed_bytes,
                       padding.PSS(mgf=padding.MGF1(h), salt_length=padding.PSS.AUTO), h)
        else:
            assert isinstance(key, ec.EllipticCurvePublicKey)
            size = (key.curve.key_size + 7) // 8
            if len(env.signature) != 2 * size:
                raise SignatureVerificationError(
                    f"{env.alg} signature must be {2 * size} bytes, got {len(env.signature)}")
            r = int.from_bytes(env.signature[:size], "big")
            s = int.from_bytes(env.signature[size:], "big")
            key.verify(encode_dss_signature(r, s), env.signed_bytes, ec.ECDSA(h))
    except InvalidSignature as exc:
        raise SignatureVerificationError("notation signature does not verify") from exc


def _is_ca(cert: x509.Certificate) -> tuple[bool, int | None]:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False, None
    return bc.ca, bc.path_length


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def validate_chain(chain: tuple[x509.Certificate, ...]) -> None:
    """Check the x5c chain's shape and code-signing rules (no time checks here).

    Leaf first, each certificate issued and signed by the next, the last self-signed; CAs
    need basicConstraints CA and keyCertSign within path length; the leaf needs
    digitalSignature and, when it has an EKU, codeSigning.
    """
    if len(chain) == 1:
        leaf = chain[0]
        if not _signed_by(leaf, leaf):
            raise CertificateError("single certificate chain is not self-signed")
    else:
        for i in range(len(chain) - 1):
            if not _signed_by(chain[i], chain[i + 1]):
                raise CertificateError(
                    f"certificate {i} ({chain[i].subject.rfc4514_string()}) is not issued by "
                    f"the next certificate in the chain")
        root = chain[-1]
        if not _signed_by(root, root):
            raise CertificateError("the last certificate of the chain is not a self-signed root")
        for depth, ca in enumerate(chain[1:]):
            is_ca, path_len = _is_ca(ca)
            if not is_ca:
                raise CertificateError(f"{ca.subject.rfc4514_string()} is not a CA certificate")
            if path_len is not None and depth > path_len:
                raise CertificateError(f"{ca.subject.rfc4514_string()} path length exceeded")
            try:
                ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
                if not ku.key_cert_sign:
                    raise CertificateError(f"{ca.subject.rfc4514_string()} lacks keyCertSign")
            except x509.ExtensionNotFound:
                raise CertificateError(
                    f"{ca.subject.rfc4514_string()} has no key usage extension") from None
        if _is_ca(chain[0])[0]:
            raise CertificateError("the signing certificate must not be a CA")
    leaf = chain[0]
    try:
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise CertificateError("signing certificate has no key usage extension") from None
    if not ku.digital_signature:
        raise CertificateError("signing certificate key usage lacks digitalSignature")
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is not None and ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        raise CertificateError("signing certificate extended key usage lacks codeSigning")


def check_chain_time(chain: tuple[x509.Certificate, ...], when: datetime, what: str) -> None:
    """Every certificate must be valid at ``when`` (bounds inclusive)."""
    for cert in chain:
        if when < cert.not_valid_before_utc:
            raise CertificateError(
                f"{what} {when.isoformat()} is before {cert.subject.rfc4514_string()} is valid "
                f"(notBefore {cert.not_valid_before_utc.isoformat()})")
        if when > cert.not_valid_after_utc:
            raise CertificateError(
                f"{what} {when.isoformat()} is after {cert.subject.rfc4514_string()} expired "
                f"(notAfter {cert.not_valid_after_utc.isoformat()})")


def parse_payload(payload: bytes) -> dict[str, Any]:
    """The ``targetArtifact`` descriptor of a notation payload.

    Parsed strictly: duplicate keys (also ones equal ignoring case, which Go's
    ``encoding/json`` would read into the same field) are refused.
    """
    doc = _json_object(payload, "notation payload")
    target = doc.get("targetArtifact")
    if not isinstance(target, dict):
        raise MalformedSignatureError("notation payload has no targetArtifact object")
    return target


def verify_integrity(env: NotationEnvelope, digest: str,
                     expected_size: int | None = None,
                     expected_media_type: str | None = None) -> dict[str, Any]:
    """Integrity: plugins/critical headers, signature, chain shape, target descriptor.

    The payload's ``targetArtifact`` must name ``digest`` and, when known, the manifest's
    ``expected_size`` and ``expected_media_type``: notation-go compares the whole descriptor
    (media type, digest and size) with the artifact being verified.
    """
    if env.plugin is not None:
        raise SignatureVerificationError(
            f"signature requires verification plugin {env.plugin!r}; plugins are not supported")
    if env.extended_critical:
        raise SignatureVerificationError(
            f"signature has critical headers we do not understand: {list(env.extended_critical)}")
    try:
        _verify_raw(env)
        validate_chain(env.chain)
    except (ValueError, TypeError, KeyError, UnsupportedAlgorithm) as exc:  # malformed certificates
        raise CertificateError(
            f"signing certificate chain cannot be used: {_one_line(exc)}") from exc
    target = parse_payload(env.payload)
    got_digest, got_size, got_type = (target.get("digest"), target.get("size"),
                                      target.get("mediaType"))
    if not isinstance(got_digest, str) or got_digest != digest:
        raise DigestMismatchError(f"signature is for {got_digest!r}, not for {digest}")
    if not isinstance(got_size, int) or isinstance(got_size, bool) or got_size < 0:
        raise MalformedSignatureError(
            f"notation payload size {got_size!r} is not a non-negative integer")
    if not isinstance(got_type, str) or not got_type:
        raise MalformedSignatureError("notation payload names no target media type")
    if expected_size is not None and got_size != expected_size:
        raise DigestMismatchError(
            f"signature names size {got_size!r}, the artifact is {expected_size}")
    if expected_media_type is not None and got_type != expected_media_type:
        raise DigestMismatchError(
            f"signature names media type {got_type!r}, the artifact is "
            f"{expected_media_type!r}")
    return target


# -- timestamp -------------------------------------------------------------------------------

def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, end) of the DER element at ``pos`` (single-byte tags only)."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag = data[pos]
    length = data[pos + 1]
    start = pos + 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or start + n > len(data):
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[start : start + n], "big")
        start += n
    end = start + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, start, end


def _children(data: bytes, start: int, end: int) -> list[bytes]:
    out = []
    pos = start
    while pos < end:
        _t, _s, e = _tlv(data, pos)
        out.append(data[pos:e])
        pos = e
    return out


def _sort_token_certificates(token: bytes) -> bytes:
    """Re-encode the token's ``certificates`` SET OF in DER order.

    Some TSAs (and notation's test vectors) emit that set unsorted, which Go accepts and the
    strict DER parser of rfc3161-client refuses. The set is outside the signed attributes, so
    sorting it changes no signed byte.
    """
    tag, s, e = _tlv(token, 0)  # ContentInfo
    if tag != 0x30:
        raise ValueError("timestamp token is not a ContentInfo")
    oid, explicit = _children(token, s, e)[:2]
    _t, es, _e = _tlv(explicit, 0)  # [0] EXPLICIT
    _t, ss, se = _tlv(explicit, es)  # SignedData
    parts = _children(explicit, ss, se)
    for i, p in enumerate(parts):
        if p[0] == 0xA0:  # [0] IMPLICIT certificates
            _t, cs, ce = _tlv(p, 0)
            certs = sorted(_children(p, cs, ce))
            body = b"".join(certs)
            parts[i] = b"\xa0" + _der_len(len(body)) + body
    sd_body = b"".join(parts)
    sd = b"\x30" + _der_len(len(sd_body)) + sd_body
    exp = b"\xa0" + _der_len(len(sd)) + sd
    ci_body = oid + exp
    return b"\x30" + _der_len(len(ci_body)) + ci_body


def _wrap_token(token: bytes) -> bytes:
    """Wrap a TimeStampToken in a granted TimeStampResp so rfc3161-client can read it."""
    try:
        token = _sort_token_certificates(token)
    except (ValueError, IndexError) as exc:
        raise TimestampError(f"timestamp countersignature is not a CMS SignedData: {exc}") \
            from exc
    status = b"\x30\x03\x02\x01\x00"
    body = status + token
    return b"\x30" + _der_len(len(body)) + body


def verify_timestamp(token: bytes, signature: bytes,
                     tsa_roots: list[x509.Certificate]) -> tuple[datetime, datetime, datetime]:
    """Verify an RFC 3161 countersignature over ``signature`` against TSA roots.

    Returns (time, earliest, latest) where earliest/latest widen the time by its accuracy.
    """
    if not tsa_roots:
        raise TimestampError("no trusted TSA certificate found in trust store")
    try:
        tsr = decode_timestamp_response(_wrap_token(token))
    except ValueError as exc:
        raise TimestampError(f"timestamp countersignature cannot be parsed: {exc}") from exc
    errors: list[str] = []
    for root in tsa_roots:
        try:
            VerifierBuilder().add_root_certificate(root).build().verify_message(tsr, signature)
        except (Rfc3161VerificationError, ValueError) as exc:
            errors.append(str(exc))
            continue
        info = tsr.tst_info
        gen = info.gen_time if info.gen_time.tzinfo else info.gen_time.replace(tzinfo=UTC)
        acc = timedelta()
        if info.accuracy is not None:
            acc = timedelta(seconds=info.accuracy.seconds or 0,
                            milliseconds=info.accuracy.millis or 0,
                            microseconds=info.accuracy.micros or 0)
        return gen, gen - acc, gen + acc
    raise TimestampError(f"timestamp countersignature did not verify: {'; '.join(errors)}")


# -- the whole verification ---------------------------------------------------------------

@dataclass
class _Outcome:
    logged: list[str] = field(default_factory=list)
    #: Checks at ``log`` that failed. They never make a verification pass.
    failed: list[str] = field(default_factory=list)

    def apply(self, check: Check, action: Action, fn: Any) -> Any:
        if action == "skip":
            return None
        try:
            try:
                return fn()
            except (ValueError, TypeError, KeyError, UnsupportedAlgorithm) as exc:
                raise SignatureVerificationError(f"{check}: {_one_line(exc)}") from exc
        except (SignatureVerificationError, TrustStoreError, PolicyError) as exc:
            if action == "enforce":
                raise
            self.logged.append(f"{check} (logged, not enforced): {exc}")
            self.failed.append(f"{check} failed: {exc}")
            return None


def _store_certs(statement: TrustPolicyStatement, trust_store: TrustStore,
                 store_type: str) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for t, name in statement.trust_stores:
        if t == store_type:
            certs.extend(trust_store.certificates(t, name))
    return certs


def verify_with_statement(
    envelope: bytes,
    media_type: str,
    digest: str,
    statement: TrustPolicyStatement,
    trust_store: TrustStore,
    *,
    now: datetime | None = None,
    expected_size: int | None = None,
    expected_media_type: str | None = None,
) -> SignatureVerification:
    """Verify one notation envelope for ``digest`` under one trust policy statement.

    A ``skip`` statement raises: skipping is not a verification, and nothing here may count
    as verified by default. Raises a :class:`SignatureVerificationError` subclass when an
    enforced check fails. A check the statement only logs (``audit`` level, ``log``
    overrides) that fails is returned in :attr:`SignatureVerification.logged_failures`:
    notation-go reports such a signature as verified, but here it is not a pass, and the
    policy never counts it (callers must check that field).
    """
    check_digest(digest)
    if statement.level == "skip":
        raise SignatureVerificationError(
            f"trust policy statement {statement.name!r} skips verification")
    now = now or datetime.now(UTC)
    env = parse_envelope(envelope, media_type)
    verify_integrity(env, digest, expected_size, expected_media_type)
    out = _Outcome()
    actions = statement.actions
    store_type = "ca" if env.signing_scheme == SCHEME_X509 else "signingAuthority"

    def authenticity() -> None:
        anchors = _store_certs(statement, trust_store, store_type)
        if not anchors:
            raise TrustStoreError(
                f"trust policy {statement.name!r} lists no {store_type} trust store")
        if not any(c == a for c in env.chain for a in anchors):
            raise CertificateError(
                f"signature is not produced by a trusted signer: no certificate of the chain is "
                f"in the {store_type} trust stores of {statement.name!r}")
        if not statement.identity_matches(env.chain[0]):
            raise IdentityMismatchError(
                f"signing certificate subject {env.chain[0].subject.rfc4514_string()} is not a "
                f"trusted identity of {statement.name!r}")

    def authentic_timestamp() -> None:
        if env.signing_scheme == SCHEME_SIGNING_AUTHORITY:
            assert env.authentic_signing_time is not None
            check_chain_time(env.chain, env.authentic_signing_time, "authentic signing time")
            return
        need_ts = statement.verify_timestamp == "always" or any(
            now > c.not_valid_after_utc for c in env.chain)
        if env.timestamp_token is None or not need_ts:
            check_chain_time(env.chain, now, "verification time")
            return
        roots = _store_certs(statement, trust_store, "tsa")
        _t, earliest, latest = verify_timestamp(env.timestamp_token, env.signature, roots)
        check_chain_time(env.chain, earliest, "timestamp")
        check_chain_time(env.chain, latest, "timestamp")

    def expiry() -> None:
        if env.expiry is not None and now > env.expiry:
            raise SignatureVerificationError(f"signature expired at {env.expiry.isoformat()}")

    out.apply("authenticity", actions["authenticity"], authenticity)
    out.apply("authenticTimestamp", actions["authenticTimestamp"], authentic_timestamp)
    out.apply("expiry", actions["expiry"], expiry)
    if actions["revocation"] != "skip":
        out.logged.append("revocation: not checked (offline verifier)")
    leaf = env.chain[0]
    return SignatureVerification(
        digest=digest,
        signer=Signer(kind="x509", subject=leaf.subject.rfc4514_string(),
                      issuer=leaf.issuer.rfc4514_string(),
                      claims={"sha256": hashlib.sha256(
                          leaf.public_bytes(serialization.Encoding.DER)).hexdigest()}),
        kind=f"notation-{env.format}",
        signed_at=env.authentic_signing_time or env.signing_time,
        details=tuple(out.logged),
        logged_failures=tuple(out.failed),
    )


def verify_notation(
    envelope: bytes,
    media_type: str,
    digest: str,
    *,
    repository: str,
    policy: TrustPolicyDocument,
    trust_store: TrustStore,
    now: datetime | None = None,
    expected_size: int | None = None,
    expected_media_type: str | None = None,
) -> SignatureVerification:
    """Verify a notation envelope for ``repository@digest`` under a trust policy document.

    See :func:`verify_with_statement`: a result with ``logged_failures`` is not a pass.
    """
    statement = policy.statement_for(repository)
    return verify_with_statement(envelope, media_type, digest, statement, trust_store,
                                 now=now, expected_size=expected_size,
                                 expected_media_type=expected_media_type)


def media_type_for(data: bytes) -> str:
    """Guess the envelope media type from its first byte (JSON object vs CBOR tag 18)."""
    return JWS_MEDIA_TYPE if data.lstrip()[:1] == b"{" else COSE_MEDIA_TYPE
