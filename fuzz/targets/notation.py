"""Notation signature envelopes (``verifier/notation.py``).

The first byte picks the entry point, the rest is its input; each may raise only the
verifier's typed errors (``VerifierError`` subclasses):

0. ``parse_envelope`` as JWS (``application/jose+json``), then ``verify_integrity`` of
   what parsed (signature, certificate chain, payload) against a digest it cannot name;
1. the same as COSE_Sign1 (``application/cose``);
2. ``parse_payload``: the signed payload's ``targetArtifact``;
3. ``verify_timestamp``: an RFC 3161 countersignature token;
4. a JWS envelope whose protected header is the input (JSON), around a valid certificate:
   the header rules are reached without the fuzzer having to discover base64url;
5. the same for COSE: the input is the protected header (CBOR).
"""

from __future__ import annotations

import base64
import datetime as dt
import json

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fuzz.targets import split_mode
from ocigitops.verifier.errors import VerifierError
from ocigitops.verifier.notation import (
    COSE_MEDIA_TYPE,
    JWS_MEDIA_TYPE,
    parse_envelope,
    parse_payload,
    verify_integrity,
    verify_timestamp,
)

_DIGEST = "sha256:" + "f" * 64
_PAYLOAD = json.dumps({"targetArtifact": {
    "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _DIGEST,
    "size": 1}}).encode()


def _self_signed(cn: str, *, ca: bool) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(1)
               .not_valid_before(now - dt.timedelta(days=1))
               .not_valid_after(now + dt.timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.KeyUsage(
            True, False, False, False, False, False, False, False, False), critical=True
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),
                        critical=False)
    return builder.sign(key, hashes.SHA256())


_TSA_ROOT = _self_signed("fuzz TSA root", ca=True)
_LEAF_DER = _self_signed("fuzz signer", ca=False).public_bytes(serialization.Encoding.DER)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jws_around(protected: bytes) -> bytes:
    return json.dumps({
        "protected": _b64url(protected), "payload": _b64url(_PAYLOAD),
        "signature": _b64url(b"\1" * 64),
        "header": {"x5c": [base64.b64encode(_LEAF_DER).decode()],
                   "io.cncf.notary.signingAgent": "fuzz"},
    }).encode()


def _cose_around(protected: bytes) -> bytes:
    return bytes(cbor2.dumps(cbor2.CBORTag(18, [protected, {33: _LEAF_DER}, _PAYLOAD,
                                                b"\1" * 64])))


def test_one_input(data: bytes) -> None:
    mode, rest = split_mode(data, 6)
    try:
        if mode in (0, 1, 4, 5):
            if mode == 4:
                rest, mode = _jws_around(rest), 0
            elif mode == 5:
                rest, mode = _cose_around(rest), 1
            env = parse_envelope(rest, JWS_MEDIA_TYPE if mode == 0 else COSE_MEDIA_TYPE)
            verify_integrity(env, _DIGEST)
            raise AssertionError("an envelope passed integrity without a valid signature")
        if mode == 2:
            target = parse_payload(rest)
            assert isinstance(target, dict)
        else:
            verify_timestamp(rest, b"signature", [_TSA_ROOT])
            raise AssertionError("a timestamp token verified against a root that signed none")
    except VerifierError:
        pass
