"""notation signing: envelope shapes, and our signatures verify with our verifier."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
from collections.abc import Callable
from functools import cache
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ocigitops.errors import UsageError
from ocigitops.publisher.sign_notation import (
    ANN_THUMBPRINT,
    ARTIFACT_TYPE,
    COSE_MEDIA_TYPE,
    JWS_MEDIA_TYPE,
    SIGNING_AGENT,
    build_envelope,
    sign_notation,
    signature_algorithm,
)
from ocigitops.reference import Reference
from ocigitops.registry import Descriptor, Referrers, sha256_digest
from ocigitops.verifier.errors import (
    CertificateError,
    DigestMismatchError,
    IdentityMismatchError,
    SignatureVerificationError,
)
from ocigitops.verifier.notation import parse_envelope, verify_notation
from ocigitops.verifier.trustpolicy import TrustStore, parse_trust_policy
from tests.helpers.vectors import make_ca, make_leaf, name, now, rsa_key, trust_policy

pytestmark = pytest.mark.unit

REPO = "registry.example.com/team/app"
DIGEST = "sha256:" + "ab" * 32
MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
SIZE = 1234
IDENTITY = "x509.subject: C=US, ST=WA, O=Example, CN=signer"
SUBJECT = name("signer", C="US", ST="WA", O="Example")

KEYS: dict[str, Callable[[], Any]] = {
    "rsa2048": lambda: rsa_key(2048),
    "rsa3072": lambda: rsa_key(3072),
    "rsa4096": lambda: rsa_key(4096),
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "p521": lambda: ec.generate_private_key(ec.SECP521R1()),
}
ALGS = {"rsa2048": "PS256", "rsa3072": "PS384", "rsa4096": "PS512",
        "p256": "ES256", "p384": "ES384", "p521": "ES512"}


@cache
def _key(kind: str) -> Any:
    return KEYS[kind]()


@cache
def _pki(kind: str) -> tuple[Any, tuple[x509.Certificate, ...], x509.Certificate]:
    """(leaf key, chain leaf-intermediate-root, root) with a ``kind`` leaf key."""
    root, root_key = make_ca("Example Root CA", C="US", ST="WA", O="Example")
    inter_key = ec.generate_private_key(ec.SECP384R1())
    inter = (x509.CertificateBuilder()
             .subject_name(name("Example Intermediate", C="US", ST="WA", O="Example"))
             .issuer_name(root.subject).public_key(inter_key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now() - dt.timedelta(days=1))
             .not_valid_after(now() + dt.timedelta(days=365))
             .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
             .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                          False), critical=True)
             .sign(root_key, _sha256()))
    key = _key(kind)
    leaf = make_leaf(inter, inter_key, SUBJECT, key, not_before=now() - dt.timedelta(hours=1),
                     not_after=now() + dt.timedelta(days=30))
    return key, (leaf, inter, root), root


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes
    return hashes.SHA256()


def _verify(data: bytes, media_type: str, root: x509.Certificate, *, digest: str = DIGEST,
            identities: tuple[str, ...] = (IDENTITY,), level: str = "strict",
            when: dt.datetime | None = None) -> Any:
    policy = parse_trust_policy(trust_policy(level, ("ca:test",), identities))
    return verify_notation(data, media_type, digest, repository=REPO, policy=policy,
                           trust_store=TrustStore({("ca", "test"): [root]}), now=when,
                           expected_size=SIZE)


def _b64url_json(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


@pytest.mark.parametrize("envelope", ["jws", "cose"])
@pytest.mark.parametrize("kind", list(KEYS))
def test_ours_verify_with_our_verifier(kind: str, envelope: Any) -> None:
    key, chain, root = _pki(kind)
    signed = build_envelope(MEDIA_TYPE, DIGEST, SIZE, key, chain, envelope=envelope)
    v = _verify(signed.data, signed.media_type, root)
    assert v.kind == f"notation-{envelope}"
    assert v.digest == DIGEST
    assert v.signer.subject == chain[0].subject.rfc4514_string()
    assert v.signed_at == signed.signing_time
    assert parse_envelope(signed.data, signed.media_type).alg == ALGS[kind]
    assert signature_algorithm(key) == ALGS[kind]


def test_jws_shape() -> None:
    key, chain, _root = _pki("p256")
    t = (now() - dt.timedelta(minutes=30)).replace(microsecond=987654)
    stamp = t.strftime("%Y-%m-%dT%H:%M:%SZ")
    expires = (t + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    signed = build_envelope(MEDIA_TYPE, DIGEST, SIZE, key, chain, envelope="jws",
                            signing_time=t, expiry=dt.timedelta(days=2),
                            user_metadata={"b": "2", "a": "1"})
    assert signed.media_type == JWS_MEDIA_TYPE
    raw = signed.data.decode()
    # notation-core-go's struct order; base64url without padding.
    assert list(json.loads(raw)) == ["payload", "protected", "header", "signature"]
    doc = json.loads(raw)
    for part in ("payload", "protected", "signature"):
        assert "=" not in doc[part] and "+" not in doc[part] and "/" not in doc[part]
    protected_raw = base64.urlsafe_b64decode(doc["protected"] + "==")
    protected = json.loads(protected_raw)
    assert list(protected) == sorted(protected)  # golang-jwt marshals a map
    assert protected == {
        "alg": "ES256", "cty": "application/vnd.cncf.notary.payload.v1+json",
        "crit": ["io.cncf.notary.signingScheme", "io.cncf.notary.expiry"],
        "io.cncf.notary.signingScheme": "notary.x509",
        "io.cncf.notary.signingTime": stamp,
        "io.cncf.notary.expiry": expires,
    }
    assert b" " not in protected_raw
    assert _b64url_json(doc["payload"]) == {"targetArtifact": {
        "annotations": {"a": "1", "b": "2"}, "digest": DIGEST, "mediaType": MEDIA_TYPE,
        "size": SIZE}}
    header = doc["header"]
    assert list(header) == ["x5c", "io.cncf.notary.signingAgent"]
    assert header["io.cncf.notary.signingAgent"] == SIGNING_AGENT
    assert [base64.b64decode(c, validate=True) for c in header["x5c"]] == [
        c.public_bytes(serialization.Encoding.DER) for c in chain]
    assert len(base64.urlsafe_b64decode(doc["signature"] + "==")) == 64  # raw r || s


def test_jws_without_expiry_marks_only_the_scheme_critical() -> None:
    key, chain, _root = _pki("rsa2048")
    signed = build_envelope(MEDIA_TYPE, DIGEST, SIZE, key, chain)
    protected = _b64url_json(json.loads(signed.data)["protected"])
    assert protected["crit"] == ["io.cncf.notary.signingScheme"]
    assert "io.cncf.notary.expiry" not in protected
    assert protected["alg"] == "PS256"
    payload = _b64url_json(json.loads(signed.data)["payload"])
    assert "annotations" not in payload["targetArtifact"]


def test_payload_escaped_like_go() -> None:
    """User metadata is marshalled as Go does: ``<>&`` escaped, UTF-8 kept."""
    key, chain, root = _pki("p256")
    md = {"note": "a<b>&c", "ünï": "çødé"}
    for envelope in ("jws", "cose"):
        signed = build_envelope(MEDIA_TYPE, DIGEST, SIZE, key, chain, envelope=envelope,  # type: ignore[arg-type]
                                user_metadata=md)
        env = parse_envelope(signed.data, signed.media_type)
        assert b"a\\u003cb\\u003e\\u0026c" in env.payload
        assert "çødé".encode() in env.payload
        assert json.loads(env.payload)["targetArtifact"]["annotations"] == md
        _verify(signed.data, signed.media_type, root)


def test_cose_shape() -> None:
    key, chain, _root = _pki("rsa3072")
    t = (now() - dt.timedelta(minutes=30)).replace(microsecond=500000)
    signed = build_envelope(MEDIA_TYPE, DIGEST, SIZE, key, chain, envelope="cose",
                            signing_time=t, expiry=dt.timedelta(hours=1),
                            user_metadata={"k": "v"})
    assert signed.media_type == COSE_MEDIA_TYPE
    msg = cbor2.loads(signed.data)
    assert isinstance(msg, cbor2.CBORTag) and msg.tag == 18
    protected_raw, unprotected, payload, signature = msg.value
    protected = cbor2.loads(protected_raw)
    # go-cose's core deterministic order: integer labels, then strings by encoded length.
    assert list(protected) == [1, 2, 3, "io.cncf.notary.expiry", "io.cncf.notary.signingTime",
                               "io.cncf.notary.signingScheme"]
    epoch = int(t.replace(microsecond=0).timestamp())
    assert protected[1] == -38
    assert protected[2] == ["io.cncf.notary.signingScheme", "io.cncf.notary.expiry"]
    assert protected[3] == "application/vnd.cncf.notary.payload.v1+json"
    assert protected["io.cncf.notary.signingScheme"] == "notary.x509"
    assert protected["io.cncf.notary.signingTime"] == t.replace(microsecond=0)
    assert protected["io.cncf.notary.expiry"] == t.replace(microsecond=0) + dt.timedelta(hours=1)
    # times are CBOR tag 1 (0xc1) over an integer (0x1a: uint32), not a float or a string
    for value in (epoch, epoch + 3600):
        assert b"\xc1\x1a" + value.to_bytes(4, "big") in protected_raw
    assert list(unprotected[33]) == [c.public_bytes(serialization.Encoding.DER) for c in chain]
    assert unprotected["io.cncf.notary.signingAgent"] == SIGNING_AGENT
    assert json.loads(payload) == {"targetArtifact": {
        "mediaType": MEDIA_TYPE, "digest": DIGEST, "size": SIZE, "annotations": {"k": "v"}}}
    assert len(signature) == 384  # RSA 3072


@pytest.mark.parametrize("envelope", ["jws", "cose"])
def test_expiry_enforced(envelope: Any) -> None:
    key, chain, root = _pki("p384")
    signed = build_envelope(MEDIA_TYPE, DIGEST, SIZE, key, chain, envelope=envelope,
                            expiry=dt.timedelta(hours=1))
    assert signed.expiry is not None
    _verify(signed.data, signed.media_type, root)
    later = now() + dt.timedelta(hours=2)
    with pytest.raises(SignatureVerificationError, match="expired"):
        _verify(signed.data, signed.media_type, root, when=later)
    # permissive logs the expiry instead of failing
    v = _verify(signed.data, signed.media_type, root, when=later, level="permissive")
    assert any("expired" in d for d in v.details)


@pytest.mark.parametrize("envelope", ["jws", "cose"])
def test_rejections(envelope: Any) -> None:
    key, chain, root = _pki("p256")
    signed = build_envelope(MEDIA_TYPE, DIGEST, SIZE, key, chain, envelope=envelope)
    with pytest.raises(DigestMismatchError):
        _verify(signed.data, signed.media_type, root, digest="sha256:" + "cd" * 32)
    other_root, _ = make_ca("Other Root", C="US", ST="WA", O="Other")
    with pytest.raises(CertificateError, match="not produced by a trusted signer"):
        _verify(signed.data, signed.media_type, other_root)
    with pytest.raises(IdentityMismatchError):
        _verify(signed.data, signed.media_type, root,
                identities=("x509.subject: C=US, ST=WA, O=Someone Else",))
    tampered = bytearray(signed.data)
    if envelope == "jws":
        doc = json.loads(signed.data)
        sig = bytearray(base64.urlsafe_b64decode(doc["signature"] + "=="))
        sig[5] ^= 1
        doc["signature"] = base64.urlsafe_b64encode(bytes(sig)).rstrip(b"=").decode()
        tampered = bytearray(json.dumps(doc).encode())
    else:
        tampered[-3] ^= 1
    with pytest.raises(SignatureVerificationError, match="does not verify"):
        _verify(bytes(tampered), signed.media_type, root)


def test_self_signed_leaf() -> None:
    key = _key("p256")
    leaf = make_leaf_self_signed(key)
    signed = build_envelope(MEDIA_TYPE, DIGEST, SIZE, key, [leaf], envelope="cose")
    _verify(signed.data, signed.media_type, leaf, identities=("*",))


def make_leaf_self_signed(key: Any) -> x509.Certificate:
    """A self-signed code-signing certificate like ``notation cert generate-test``."""
    subject = name("self", C="US", ST="WA", O="Example")
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now() - dt.timedelta(minutes=5))
            .not_valid_after(now() + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                         False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CODE_SIGNING]),
                           critical=False)
            .sign(key, _sha256()))


def test_bad_signing_material_is_refused() -> None:
    key, chain, _root = _pki("p256")
    with pytest.raises(UsageError, match="does not certify the signing key"):
        build_envelope(MEDIA_TYPE, DIGEST, SIZE, _key("p384"), chain)
    with pytest.raises(UsageError, match="leaf first"):
        build_envelope(MEDIA_TYPE, DIGEST, SIZE, key, tuple(reversed(chain)))
    with pytest.raises(UsageError, match="certificate chain"):
        build_envelope(MEDIA_TYPE, DIGEST, SIZE, key, [])
    with pytest.raises(UsageError, match="RSA or EC"):
        build_envelope(MEDIA_TYPE, DIGEST, SIZE, ed25519.Ed25519PrivateKey.generate(), chain)
    with pytest.raises(UsageError, match="not 1024-bit"):
        signature_algorithm(rsa_key(1024))
    with pytest.raises(UsageError, match="not secp256k1"):
        signature_algorithm(ec.generate_private_key(ec.SECP256K1()))
    with pytest.raises(UsageError, match="signing time"):
        build_envelope(MEDIA_TYPE, DIGEST, SIZE, key, chain,
                       signing_time=now() + dt.timedelta(days=400))
    with pytest.raises(UsageError, match="expiry"):
        build_envelope(MEDIA_TYPE, DIGEST, SIZE, key, chain, expiry=dt.timedelta(0))
    with pytest.raises(UsageError, match="jws"):
        build_envelope(MEDIA_TYPE, DIGEST, SIZE, key, chain, envelope="pgp")  # type: ignore[arg-type]


class _FakeClient:
    """Records what sign_notation pushes; answers referrers like a tag-schema registry."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[bytes, str, str | None]] = {}

    async def push_blob(self, ref: Reference, digest: str, size: int, source: bytes,
                        **_: Any) -> str:
        assert sha256_digest(source) == digest and len(source) == size
        self.blobs[digest] = source
        return "uploaded"

    async def push_referrer(self, ref: Reference, data: bytes, subject: str,
                            artifact_type: str | None,
                            annotations: dict[str, str] | None) -> str:
        d = sha256_digest(data)
        self.manifests[d] = (data, subject, artifact_type)
        self.annotations = annotations
        return d

    async def referrers(self, ref: Reference, subject: str,
                        artifact_type: str | None = None) -> Referrers:
        return Referrers([Descriptor(MEDIA_TYPE, d, len(m), artifact_type=t)
                          for d, (m, s, t) in self.manifests.items() if s == subject], "tag")


@pytest.mark.parametrize("envelope", ["jws", "cose"])
def test_sign_notation_stores_a_referrer(envelope: Any) -> None:
    key, chain, root = _pki("rsa2048")
    client: Any = _FakeClient()
    repo = Reference("registry.example.com", "team/app", tag="v1")
    res = asyncio.run(sign_notation(client, repo, DIGEST, MEDIA_TYPE, SIZE, key, chain,
                                    envelope=envelope, user_metadata={"env": "prod"}))
    assert res.kind == "notation" and res.subject == DIGEST and res.stored_via == "tag"
    (sig_digest, (data, subject, atype)), = client.manifests.items()
    assert res.location == f"registry.example.com/team/app@{sig_digest}"
    assert res.signer == chain[0].subject.rfc4514_string()
    assert subject == DIGEST and atype == ARTIFACT_TYPE
    doc = json.loads(data)
    assert list(doc) == ["schemaVersion", "mediaType", "artifactType", "config", "layers",
                         "subject", "annotations"]
    assert doc["artifactType"] == ARTIFACT_TYPE
    assert doc["config"] == {"mediaType": "application/vnd.oci.empty.v1+json",
                             "digest": sha256_digest(b"{}"), "size": 2}
    assert client.blobs[doc["config"]["digest"]] == b"{}"
    assert doc["subject"] == {"mediaType": MEDIA_TYPE, "digest": DIGEST, "size": SIZE}
    (layer,) = doc["layers"]
    assert layer["mediaType"] == (JWS_MEDIA_TYPE if envelope == "jws" else COSE_MEDIA_TYPE)
    blob = client.blobs[layer["digest"]]
    assert layer["size"] == len(blob)
    ann = doc["annotations"]
    assert ann == client.annotations
    assert json.loads(ann[ANN_THUMBPRINT]) == [
        hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest() for c in chain]
    created = dt.datetime.fromisoformat(ann["org.opencontainers.image.created"])
    assert abs((created - now()).total_seconds()) < 60
    v = _verify(blob, layer["mediaType"], root)
    assert v.signed_at == created
