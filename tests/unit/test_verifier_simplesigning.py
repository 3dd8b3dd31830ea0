"""Legacy cosign ``.sig`` layers: payload, signature, annotations, Rekor SET, keyless."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding

from ocigitops.verifier import keys, rekor, simplesigning
from ocigitops.verifier.bundles import PUBLIC_GOOD_TRUSTED_ROOT, load_trusted_root
from ocigitops.verifier.errors import (
    CertificateError,
    DigestMismatchError,
    IdentityMismatchError,
    MalformedSignatureError,
    OversizedInputError,
    SignatureVerificationError,
    TransparencyLogError,
)
from ocigitops.verifier.identity import IdentityPolicy
from ocigitops.verifier.legacy_keyless import (
    verify_certificate_signature,
    verify_legacy_keyless_signature,
)
from ocigitops.verifier.simplesigning import LegacySignature, sign_legacy, verify_legacy_signature
from tests.helpers.vectors import (
    CONFORMANCE,
    DEFAULT_ISSUER,
    FakeSigstore,
    hashedrekord_body,
    pem,
    rsa_key,
    vectors,
)

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + hashlib.sha256(b"manifest").hexdigest()
REF = "registry.example.com/team/app"


def test_payload_matches_cosign_layout() -> None:
    p = simplesigning.build_payload(REF, DIGEST)
    assert p == (
        b'{"critical":{"identity":{"docker-reference":"registry.example.com/team/app"},'
        b'"image":{"docker-manifest-digest":"' + DIGEST.encode() + b'"},'
        b'"type":"cosign container image signature"},"optional":null}')
    parsed = simplesigning.parse_payload(p)
    assert parsed.manifest_digest == DIGEST and parsed.optional is None


@pytest.mark.parametrize("make_key", [
    lambda: ec.generate_private_key(ec.SECP256R1()),
    lambda: ec.generate_private_key(ec.SECP384R1()),
    lambda: ec.generate_private_key(ec.SECP521R1()),
    lambda: rsa_key(2048),
    lambda: ed25519.Ed25519PrivateKey.generate(),
], ids=["p256", "p384", "p521", "rsa", "ed25519"])
def test_sign_and_verify_round_trip(make_key: Any) -> None:
    key = make_key()
    sig = sign_legacy(key, REF, DIGEST, {"env": "prod"})
    layer = LegacySignature.from_layer(sig.payload, sig.annotations())
    r = verify_legacy_signature(layer, key.public_key(), DIGEST,
                                required_annotations={"env": "prod"})
    assert r.digest == DIGEST and r.signer.key_hint == keys.key_hint(key)


def test_rsa_pss_and_p256_with_sha256_accepted() -> None:
    key = rsa_key(2048)
    payload = simplesigning.build_payload(REF, DIGEST)
    pss = key.sign(payload, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    verify_legacy_signature(LegacySignature(payload, pss), key.public_key(), DIGEST)
    # Older cosign signed P-384 payloads with SHA-256.
    p384 = ec.generate_private_key(ec.SECP384R1())
    verify_legacy_signature(LegacySignature(payload, p384.sign(payload, ec.ECDSA(hashes.SHA256()))),
                            p384.public_key(), DIGEST)


def test_refusals() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    sig = sign_legacy(key, REF, DIGEST, {"env": "dev"})
    other = "sha256:" + "e" * 64
    with pytest.raises(DigestMismatchError, match="not for"):
        verify_legacy_signature(sig, key.public_key(), other)
    with pytest.raises(SignatureVerificationError, match="annotation 'env'"):
        verify_legacy_signature(sig, key.public_key(), DIGEST, required_annotations={"env": "prod"})
    with pytest.raises(SignatureVerificationError, match="not in the payload"):
        verify_legacy_signature(sig, key.public_key(), DIGEST, required_annotations={"team": "a"})
    with pytest.raises(SignatureVerificationError, match="does not verify"):
        verify_legacy_signature(sig, ec.generate_private_key(ec.SECP256R1()).public_key(), DIGEST)
    truncated = LegacySignature(sig.payload, sig.signature[:-5])
    with pytest.raises(SignatureVerificationError):
        verify_legacy_signature(truncated, key.public_key(), DIGEST)
    with pytest.raises(SignatureVerificationError, match="cap"):
        verify_legacy_signature(LegacySignature(sig.payload, b"\x30" * 5000), key.public_key(),
                                DIGEST)
    with pytest.raises(TransparencyLogError, match="required"):
        verify_legacy_signature(sig, key.public_key(), DIGEST, require_tlog=True)


def test_layer_parsing_errors() -> None:
    with pytest.raises(MalformedSignatureError, match=r"no dev\.cosignproject"):
        LegacySignature.from_layer(b"{}", {})
    with pytest.raises(MalformedSignatureError, match="base64"):
        LegacySignature.from_layer(b"{}", {simplesigning.SIGNATURE_ANNOTATION: "***"})
    with pytest.raises(OversizedInputError):
        LegacySignature.from_layer(b" " * ((1 << 20) + 1),
                                   {simplesigning.SIGNATURE_ANNOTATION: "AA=="})
    for bad in (b"", b"[]", b'{"critical": {"type": "other"}}',
                b'{"critical":{"type":"cosign container image signature","image":'
                b'{"docker-manifest-digest":"md5:abc"}}}'):
        with pytest.raises(MalformedSignatureError):
            simplesigning.parse_payload(bad)


# -- Rekor SET -------------------------------------------------------------------------------

def _logged(fs: FakeSigstore, key: ec.EllipticCurvePrivateKey) -> tuple[LegacySignature, str]:
    sig = sign_legacy(key, REF, DIGEST)
    entry = fs.log_entry(hashedrekord_body(sig.signature, keys.public_key_pem(key),
                                           hashlib.sha256(sig.payload).digest()))
    return sig, fs.rekor_annotation(entry)


def test_rekor_set_verifies_and_binds_the_entry() -> None:
    fs = FakeSigstore()
    key = ec.generate_private_key(ec.SECP256R1())
    sig, ann = _logged(fs, key)
    rk = rekor.rekor_keys_from_trusted_root(fs.trusted_root())
    layer = LegacySignature.from_layer(sig.payload, {**sig.annotations(),
                                                     simplesigning.BUNDLE_ANNOTATION: ann})
    r = verify_legacy_signature(layer, key.public_key(), DIGEST, rekor_keys=rk, require_tlog=True)
    assert r.signed_at is not None and "transparency log" in r.details[0]

    # An entry for a different signature (same key) is refused even with a valid SET.
    other = sign_legacy(key, REF, "sha256:" + "f" * 64)
    entry = fs.log_entry(hashedrekord_body(other.signature, keys.public_key_pem(key),
                                           hashlib.sha256(other.payload).digest()))
    swapped = LegacySignature(sig.payload, sig.signature,
                              rekor_bundle=fs.rekor_annotation(entry))
    with pytest.raises(TransparencyLogError, match="payload"):
        verify_legacy_signature(swapped, key.public_key(), DIGEST, rekor_keys=rk)

    # A forged SET, or a log we do not trust.
    doc = json.loads(ann)
    doc["Payload"]["integratedTime"] += 1
    with pytest.raises(TransparencyLogError, match="does not verify"):
        verify_legacy_signature(LegacySignature(sig.payload, sig.signature,
                                                rekor_bundle=json.dumps(doc)),
                                key.public_key(), DIGEST, rekor_keys=rk)
    with pytest.raises(TransparencyLogError, match="no trusted Rekor key"):
        verify_legacy_signature(layer, key.public_key(), DIGEST,
                                rekor_keys=rekor.rekor_keys_from_trusted_root(
                                    FakeSigstore().trusted_root()))


def test_rekor_bundle_parse_errors() -> None:
    for bad in ("", "{}", '{"SignedEntryTimestamp": "AA==", "Payload": {"body": "AA==", '
                '"integratedTime": -1, "logIndex": 0, "logID": "00"}}'):
        with pytest.raises(MalformedSignatureError):
            rekor.parse_rekor_bundle(bad)


def _conformance_v01() -> tuple[bytes, bytes, bytes, str]:
    """The happy-path v0.1 bundle recast as legacy annotations: payload, sig, cert, SET."""
    d = vectors(CONFORMANCE)
    b = json.loads((d / "happy-path-v0.1" / "bundle.sigstore.json").read_text())
    vm = b["verificationMaterial"]
    e = vm["tlogEntries"][0]
    cert = x509.load_der_x509_certificate(
        base64.b64decode(vm["x509CertificateChain"]["certificates"][0]["rawBytes"]))
    ann = json.dumps({"SignedEntryTimestamp": e["inclusionPromise"]["signedEntryTimestamp"],
                      "Payload": {"body": e["canonicalizedBody"],
                                  "integratedTime": int(e["integratedTime"]),
                                  "logIndex": int(e["logIndex"]),
                                  "logID": base64.b64decode(e["logId"]["keyId"]).hex()}})
    return ((d / "a.txt").read_bytes(), base64.b64decode(b["messageSignature"]["signature"]),
            pem(cert), ann)


def test_public_good_set_and_keyless_certificate() -> None:
    payload, sig, cert_pem, ann = _conformance_v01()
    # The production Rekor key from sigstore-python's shipped trusted root signs this SET.
    rb = rekor.parse_rekor_bundle(ann)
    rk = rekor.rekor_keys_from_trusted_root(PUBLIC_GOOD_TRUSTED_ROOT.read_bytes())
    rekor.verify_set(rb, rk)
    rekor.check_entry_body(rb, signature=sig, payload=payload,
                           certificate=x509.load_pem_x509_certificate(cert_pem))
    ident = IdentityPolicy(issuer=DEFAULT_ISSUER,
                           subject_regexp=r"^https://github\.com/sigstore-conformance/")
    _cert, when = verify_certificate_signature(payload, sig, cert_pem, None, ann, ident)
    assert when.year == 2023
    with pytest.raises(IdentityMismatchError):
        verify_certificate_signature(payload, sig, cert_pem, None, ann,
                                     IdentityPolicy(issuer=DEFAULT_ISSUER, subject="someone"))
    with pytest.raises(SignatureVerificationError):
        verify_certificate_signature(payload + b"x", sig, cert_pem, None, ann, ident)


def test_legacy_keyless_with_private_root() -> None:
    fs = FakeSigstore()
    key = ec.generate_private_key(ec.SECP256R1())
    issuer, subject = "https://accounts.example", "dev@example.com"
    cert = fs.issue(key, subject=subject, issuer=issuer)
    payload = simplesigning.build_payload(REF, DIGEST)
    sig = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    entry = fs.log_entry(hashedrekord_body(sig, pem(cert), hashlib.sha256(payload).digest()))
    layer = LegacySignature(payload, sig, certificate_pem=pem(cert),
                            rekor_bundle=fs.rekor_annotation(entry))
    root = load_trusted_root(fs.trusted_root())
    ident = IdentityPolicy(issuer=issuer, subject=subject)
    r = verify_legacy_keyless_signature(layer, ident, DIGEST, trusted_root=root)
    assert r.signer.subject == subject and r.signer.kind == "keyless"
    with pytest.raises(DigestMismatchError):
        verify_legacy_keyless_signature(layer, ident, "sha256:" + "a" * 64, trusted_root=root)
    # Same Rekor log, another CA: the certificate is outside the trusted root.
    other = FakeSigstore(ca_cn="other-fulcio")
    other.rekor_key, other.rekor_der, other.rekor_id = fs.rekor_key, fs.rekor_der, fs.rekor_id
    with pytest.raises(CertificateError, match="Fulcio CA"):
        verify_legacy_keyless_signature(layer, ident, DIGEST,
                                        trusted_root=load_trusted_root(other.trusted_root()))
    with pytest.raises(TransparencyLogError):
        verify_legacy_keyless_signature(layer, ident, DIGEST,
                                        trusted_root=load_trusted_root(
                                            FakeSigstore().trusted_root()))


# -- security: parser differentials with Go --------------------------------------------------

_OTHER = "sha256:" + "0" * 63 + "1"
_TARGET = "sha256:" + "ab" * 32


@pytest.mark.parametrize("image", [
    # Python keeps the last duplicate: it reads TARGET.
    f'"docker-manifest-digest":"{_OTHER}","docker-manifest-digest":"{_TARGET}"',
    # Python reads the exact key (TARGET); Go's encoding/json fills the field from the later
    # case variant too, and keeps the last: it reads OTHER.
    f'"docker-manifest-digest":"{_TARGET}","Docker-Manifest-Digest":"{_OTHER}"',
])
def test_ambiguous_signed_payload_is_refused(image: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    payload = ('{"critical":{"identity":{"docker-reference":"r"},"image":{' + image
               + '},"type":"cosign container image signature"},"optional":null}').encode()
    from ocigitops.verifier.sigalg import sign

    sig = LegacySignature(payload=payload, signature=sign(key, payload))
    with pytest.raises(MalformedSignatureError, match="twice"):
        verify_legacy_signature(sig, key.public_key(), _TARGET)


@pytest.mark.parametrize("payload, match", [
    (b'{"critical":{"Type":"x","type":"cosign container image signature"}}', "twice"),
    (b'{"critical":' * 100 + b"{}" + b"}" * 100, "nested"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b"[]", "not a JSON object"),
    (b'{"critical":[]}', "missing or mistyped"),
])
def test_payload_parse_errors_are_typed(payload: bytes, match: str) -> None:
    with pytest.raises(MalformedSignatureError, match=match):
        simplesigning.parse_payload(payload)


def test_rekor_annotation_and_body_are_strict() -> None:
    with pytest.raises(MalformedSignatureError, match="twice"):
        rekor.parse_rekor_bundle('{"Payload":{},"payload":{}}')
    rb = rekor.RekorBundle(b"", b'{"kind":"hashedrekord","Kind":"x","spec":{}}', 1, 1, b"")
    with pytest.raises(TransparencyLogError, match="twice"):
        rekor.check_entry_body(rb, signature=b"", payload=b"",
                               key=ec.generate_private_key(ec.SECP256R1()).public_key())


def test_rekor_integrated_time_out_of_range_is_typed() -> None:
    ann = json.dumps({"SignedEntryTimestamp": "", "Payload": {
        "body": "", "integratedTime": 10 ** 20, "logIndex": 1, "logID": "00"}})
    with pytest.raises(MalformedSignatureError, match="year 9999"):
        rekor.parse_rekor_bundle(ann)
