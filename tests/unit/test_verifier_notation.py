"""notation envelopes (JWS and COSE) and trust policies, against notation-go's test data."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

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
from ocigitops.verifier.notation import (
    COSE_MEDIA_TYPE,
    JWS_MEDIA_TYPE,
    media_type_for,
    parse_envelope,
    parse_payload,
    verify_notation,
)
from ocigitops.verifier.trustpolicy import TrustStore, parse_dn, parse_trust_policy
from tests.helpers.vectors import (
    NOTATION,
    NOTATION_TRUSTSTORE,
    b64url,
    der,
    make_ca,
    make_leaf,
    name,
    now,
    pem,
    rsa_key,
    trust_policy,
    vectors,
)

pytestmark = pytest.mark.unit

MOCK = NOTATION / "internal" / "mock" / "testdata"
TS_ENV = NOTATION / "verifier" / "testdata" / "timestamp" / "sigEnv"
REPO = "registry.example.com/net-monitor"
ALL_STORES = ("ca:valid-trust-store", "signingAuthority:valid-trust-store")
TSA_STORE = "tsa:test-timestamp"


def _store() -> TrustStore:
    return TrustStore.from_directory(vectors(NOTATION_TRUSTSTORE))


def _verify(path: Path, *, level: str = "strict", stores: tuple[str, ...] = ALL_STORES,
            store: TrustStore | None = None, digest: str | None = None,
            identities: tuple[str, ...] = ("*",), **sv: Any) -> Any:
    raw = path.read_bytes()
    mt = media_type_for(raw)
    if digest is None:
        digest = parse_payload(parse_envelope(raw, mt).payload)["digest"]
    policy = parse_trust_policy(trust_policy(level, stores, identities, **sv))
    return verify_notation(raw, mt, digest, repository=REPO, policy=policy,
                           trust_store=store or _store())


def _self_store(tmp_path: Path, envelope: Path) -> TrustStore:
    """A ca store named ``leaf`` holding the envelope's own (self-signed) certificate."""
    raw = envelope.read_bytes()
    env = parse_envelope(raw, media_type_for(raw))
    d = tmp_path / "x509" / "ca" / "leaf"
    d.mkdir(parents=True)
    (d / "leaf.pem").write_bytes(pem(env.chain[-1]))
    tsa = tmp_path / "x509" / "tsa" / "test-timestamp"
    tsa.mkdir(parents=True)
    src = vectors(NOTATION_TRUSTSTORE) / "x509" / "tsa" / "test-timestamp" / "globalsignRoot.cer"
    (tsa / "root.cer").write_bytes(src.read_bytes())
    return TrustStore.from_directory(tmp_path)


# -- the mock envelopes: every one verifies or fails for the reason in its name -----------

@pytest.mark.parametrize("fname", ["ca_valid_sig_env.json", "sa_valid_sig_env.json"])
def test_valid_envelopes(fname: str) -> None:
    r = _verify(vectors(MOCK) / fname)
    assert r.signer.subject == "CN=Notation Test Root,O=Notary,L=Seattle,ST=WA,C=US"
    assert r.kind == "notation-jws"
    # The chain ends in NotationTestRoot.pem, the root the README names.
    root = x509.load_pem_x509_certificate(
        (NOTATION_TRUSTSTORE / "x509/ca/valid-trust-store/NotationTestRoot.pem").read_bytes())
    env = parse_envelope((MOCK / fname).read_bytes(), JWS_MEDIA_TYPE)
    assert env.chain[-1] == root


def test_valid_envelope_identity_rules() -> None:
    ok = ("x509.subject: C=US, ST=WA, O=Notary",)
    _verify(vectors(MOCK) / "ca_valid_sig_env.json", identities=ok)
    with pytest.raises(IdentityMismatchError, match="not a trusted identity"):
        _verify(MOCK / "ca_valid_sig_env.json",
                identities=("x509.subject: C=US, ST=WA, O=Someone Else",))
    # The signature scheme picks the store type: a CA signature is not trusted by an
    # signing-authority store alone, and the reverse.
    with pytest.raises(TrustStoreError, match="no ca trust store"):
        _verify(MOCK / "ca_valid_sig_env.json", stores=("signingAuthority:valid-trust-store",))
    with pytest.raises(TrustStoreError, match="no signingAuthority trust store"):
        _verify(MOCK / "sa_valid_sig_env.json", stores=("ca:valid-trust-store",))
    with pytest.raises(CertificateError, match="not produced by a trusted signer"):
        _verify(MOCK / "ca_valid_sig_env.json", stores=("ca:valid-trust-store-2",))


@pytest.mark.parametrize("fname", ["ca_invalid_sig_env.json", "sa_invalid_sig_env.json"])
def test_invalid_signature(fname: str) -> None:
    for level in ("strict", "permissive", "audit"):
        with pytest.raises(SignatureVerificationError, match="does not verify"):
            _verify(vectors(MOCK) / fname, level=level)


@pytest.mark.parametrize("fname", ["ca_expired_sig_env.json", "sa_expired_sig_env.json"])
def test_expired_signature(fname: str) -> None:
    with pytest.raises(SignatureVerificationError, match="signature expired at 2022-07-29"):
        _verify(vectors(MOCK) / fname)
    # permissive logs expiry instead of enforcing it, and says so.
    r = _verify(MOCK / fname, level="permissive")
    assert any("expiry (logged" in d for d in r.details)
    with pytest.raises(SignatureVerificationError, match="expired"):
        _verify(MOCK / fname, level="permissive", override={"expiry": "enforce"})


PLUGIN_ENVELOPES = sorted(p.name for p in MOCK.glob("*plugin*")) if MOCK.is_dir() else []


@pytest.mark.parametrize("fname", PLUGIN_ENVELOPES)
def test_plugin_envelopes_fail_closed(fname: str) -> None:
    with pytest.raises(SignatureVerificationError, match="verification plugin"):
        _verify(vectors(MOCK) / fname, level="audit")


def test_envelope_with_metadata_has_an_expired_certificate(tmp_path: Path) -> None:
    path = vectors(MOCK) / "sig_env_with_metadata.json"
    store = _self_store(tmp_path, path)
    with pytest.raises(CertificateError, match=r"verification time .* expired"):
        _verify(path, stores=("ca:leaf",), store=store)
    r = _verify(path, stores=("ca:leaf",), store=store, level="permissive")
    assert any("authenticTimestamp (logged" in d for d in r.details)
    target = parse_payload(parse_envelope(path.read_bytes(), JWS_MEDIA_TYPE).payload)
    assert target["annotations"]["io.wabbit-networks.buildId"] == "123"


@pytest.mark.parametrize("fname", ["jws_signature.sig", "cose_signature.sig"])
def test_oci_layout_signatures(tmp_path: Path, fname: str) -> None:
    path = vectors(NOTATION) / "internal" / "testdata" / fname
    layout = NOTATION / "internal" / "testdata" / "oci-layout"
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    blob = (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == digest
    store = _self_store(tmp_path, path)
    r = _verify(path, stores=("ca:leaf",), store=store, digest=digest)
    assert r.signer.subject.startswith("CN=alpine")
    assert r.kind == ("notation-jws" if fname.startswith("jws") else "notation-cose")
    with pytest.raises(DigestMismatchError, match="signature is for"):
        _verify(path, stores=("ca:leaf",), store=store, digest="sha256:" + "0" * 64)


# -- timestamps ------------------------------------------------------------------------------

@pytest.mark.parametrize("fname", ["jwsWithTimestamp.sig", "coseWithTimestamp.sig",
                                   "withoutTimestamp.sig"])
def test_timestamped_envelopes(fname: str) -> None:
    r = _verify(vectors(TS_ENV) / fname, stores=("ca:valid-trust-store", TSA_STORE))
    assert r.signer.subject.startswith("CN=alpine")


def test_timestamp_before_not_before() -> None:
    with pytest.raises(CertificateError, match=r"timestamp .* is before"):
        _verify(vectors(TS_ENV) / "timestampBeforeNotBefore.sig",
                stores=("ca:valid-trust-store", TSA_STORE))


def test_timestamp_after_not_after(tmp_path: Path) -> None:
    path = vectors(TS_ENV) / "timestampAfterNotAfter.sig"
    with pytest.raises(CertificateError, match=r"timestamp .* is after"):
        _verify(path, stores=("ca:leaf", TSA_STORE), store=_self_store(tmp_path, path))


@pytest.mark.parametrize("fname", ["jwsExpiredWithTimestamp.sig", "coseExpiredWithTimestamp.sig"])
def test_expired_certificate_saved_by_timestamp(tmp_path: Path, fname: str) -> None:
    path = vectors(TS_ENV) / fname
    store = _self_store(tmp_path, path)
    # The signing certificate lived ten minutes in 2024; the TSA vouches it signed then.
    r = _verify(path, stores=("ca:leaf", TSA_STORE), store=store)
    assert r.signer.subject.startswith("CN=testTSA")
    r = _verify(path, stores=("ca:leaf", TSA_STORE), store=store,
                verifyTimestamp="afterCertExpiry")
    assert r.signer.subject.startswith("CN=testTSA")
    # Without a TSA store the timestamp cannot be trusted: the certificate is expired now.
    with pytest.raises(TimestampError, match="no trusted TSA"):
        _verify(path, stores=("ca:leaf",), store=store)


def test_timestamp_from_untrusted_tsa(tmp_path: Path) -> None:
    with pytest.raises(TimestampError, match="did not verify"):
        _verify(vectors(TS_ENV) / "jwsWithTimestamp.sig",
                stores=("ca:valid-trust-store", "tsa:test-mismatch"))


def test_timestamp_over_another_signature(tmp_path: Path) -> None:
    # Graft the countersignature of one envelope onto another: its imprint no longer matches.
    src = json.loads((vectors(TS_ENV) / "jwsWithTimestamp.sig").read_bytes())
    dst = json.loads((TS_ENV / "withoutTimestamp.sig").read_bytes())
    dst["header"]["io.cncf.notary.timestampSignature"] = \
        src["header"]["io.cncf.notary.timestampSignature"]
    path = tmp_path / "grafted.sig"
    path.write_text(json.dumps(dst))
    with pytest.raises(TimestampError, match="did not verify"):
        _verify(path, stores=("ca:valid-trust-store", TSA_STORE))


@pytest.mark.parametrize("token", ["TimeStampTokenWithInvalideContentType.p7s",
                                   "TimeStampTokenWithInvalidTSTInfo.p7s",
                                   "TimeStampTokenWithoutCertificate.p7s",
                                   "TimeStampToken.p7s"])
def test_bad_countersignatures(tmp_path: Path, token: str) -> None:
    cs = vectors(NOTATION) / "verifier" / "testdata" / "timestamp" / "countersignature" / token
    dst = json.loads((TS_ENV / "withoutTimestamp.sig").read_bytes())
    dst["header"]["io.cncf.notary.timestampSignature"] = \
        base64.b64encode(cs.read_bytes()).decode()
    path = tmp_path / "env.sig"
    path.write_text(json.dumps(dst))
    with pytest.raises(TimestampError):
        _verify(path, stores=("ca:valid-trust-store", TSA_STORE))


# -- envelopes we build: algorithms, chains, malformed input -------------------------------

def _chain(key: Any, *, eku: bool = True, days: int = 30) -> tuple[list[x509.Certificate], Any]:
    root, root_key = make_ca("Test Root", C="US", ST="WA", O="Acme")
    leaf = make_leaf(root, root_key, name("signer", C="US", ST="WA", O="Acme"), key,
                     not_before=now() - dt.timedelta(days=1),
                     not_after=now() + dt.timedelta(days=days), eku=eku)
    return [leaf, root], root


def _jws(key: Any, chain: list[x509.Certificate], digest: str, *, alg: str,
         extra: dict[str, Any] | None = None, crit: list[str] | None = None) -> bytes:
    prot = {"alg": alg, "cty": "application/vnd.cncf.notary.payload.v1+json",
            "crit": crit or ["io.cncf.notary.signingScheme"],
            "io.cncf.notary.signingScheme": "notary.x509",
            "io.cncf.notary.signingTime": now().isoformat(), **(extra or {})}
    payload = json.dumps({"targetArtifact": {"mediaType": "application/vnd.oci.image.manifest"
                                             ".v1+json", "digest": digest, "size": 10}}).encode()
    p, pl = b64url(json.dumps(prot).encode()), b64url(payload)
    signing_input = f"{p}.{pl}".encode()
    h = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[2:]]
    if alg.startswith("PS"):
        sig = key.sign(signing_input, padding.PSS(padding.MGF1(h), h.digest_size), h)
    else:
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(h)))
        n = (key.curve.key_size + 7) // 8
        sig = r.to_bytes(n, "big") + s.to_bytes(n, "big")
    return json.dumps({"payload": pl, "protected": p, "signature": b64url(sig),
                       "header": {"x5c": [base64.b64encode(der(c)).decode()
                                          for c in chain]}}).encode()


def _mem_store(root: x509.Certificate) -> TrustStore:
    return TrustStore({("ca", "acme"): [root]})


def _policy(**kw: Any) -> Any:
    return parse_trust_policy(trust_policy("strict", ("ca:acme",), **kw))


DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("alg, make", [
    ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
    ("ES384", lambda: ec.generate_private_key(ec.SECP384R1())),
    ("ES512", lambda: ec.generate_private_key(ec.SECP521R1())),
    ("PS256", lambda: rsa_key(2048)),
    ("PS384", lambda: rsa_key(3072)),
])
def test_built_jws_algorithms(alg: str, make: Any) -> None:
    key = make()
    chain, root = _chain(key)
    env = _jws(key, chain, DIGEST, alg=alg)
    r = verify_notation(env, JWS_MEDIA_TYPE, DIGEST, repository=REPO, policy=_policy(),
                        trust_store=_mem_store(root))
    assert r.signer.subject == "O=Acme,ST=WA,C=US,CN=signer"


def test_alg_must_match_key() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    chain, root = _chain(key)
    # Signed correctly with SHA-256, but a P-384 key means ES384.
    env = _jws(key, chain, DIGEST, alg="ES256")
    with pytest.raises(UnsupportedAlgorithmError, match="does not match the signing key"):
        verify_notation(env, JWS_MEDIA_TYPE, DIGEST, repository=REPO, policy=_policy(),
                        trust_store=_mem_store(root))


def test_unknown_algorithm_and_crit() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    chain, root = _chain(key)
    env = json.loads(_jws(key, chain, DIGEST, alg="ES256"))
    prot = json.loads(base64.urlsafe_b64decode(env["protected"] + "=="))
    prot["alg"] = "HS256"
    env["protected"] = b64url(json.dumps(prot).encode())
    with pytest.raises(UnsupportedAlgorithmError, match="HS256"):
        parse_envelope(json.dumps(env).encode(), JWS_MEDIA_TYPE)
    ext = _jws(key, chain, DIGEST, alg="ES256", extra={"acme.custom": "x"},
               crit=["io.cncf.notary.signingScheme", "acme.custom"])
    with pytest.raises(SignatureVerificationError, match="critical headers"):
        verify_notation(ext, JWS_MEDIA_TYPE, DIGEST, repository=REPO, policy=_policy(),
                        trust_store=_mem_store(root))
    missing = _jws(key, chain, DIGEST, alg="ES256", crit=["io.cncf.notary.signingScheme",
                                                          "io.cncf.notary.expiry"])
    with pytest.raises(MalformedSignatureError, match="not present"):
        parse_envelope(missing, JWS_MEDIA_TYPE)
    not_crit = _jws(key, chain, DIGEST, alg="ES256",
                    extra={"io.cncf.notary.expiry": now().isoformat()})
    with pytest.raises(MalformedSignatureError, match="expiry header is not marked critical"):
        parse_envelope(not_crit, JWS_MEDIA_TYPE)


def test_chain_rules() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    chain, root = _chain(key, eku=False)  # no EKU at all is allowed (notation rule)
    verify_notation(_jws(key, chain, DIGEST, alg="ES256"), JWS_MEDIA_TYPE, DIGEST,
                    repository=REPO, policy=_policy(), trust_store=_mem_store(root))
    # Missing root in x5c: the chain must end in a self-signed root.
    with pytest.raises(CertificateError, match="self-signed"):
        verify_notation(_jws(key, chain[:1], DIGEST, alg="ES256"), JWS_MEDIA_TYPE, DIGEST,
                        repository=REPO, policy=_policy(), trust_store=_mem_store(root))
    # Wrong order: the first certificate is not the signer.
    with pytest.raises(SignatureVerificationError):
        verify_notation(_jws(key, chain[::-1], DIGEST, alg="ES256"), JWS_MEDIA_TYPE, DIGEST,
                        repository=REPO, policy=_policy(), trust_store=_mem_store(root))
    # A TLS-server-only leaf is not a code signing certificate.
    from cryptography.x509.oid import ExtendedKeyUsageOID

    other_root, rk = make_ca("R2", C="US", ST="WA", O="Acme")
    leaf = (x509.CertificateBuilder().subject_name(name("tls")).issuer_name(other_root.subject)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now() - dt.timedelta(days=1))
            .not_valid_after(now() + dt.timedelta(days=1))
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                         False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .sign(rk, hashes.SHA256()))
    with pytest.raises(CertificateError, match="codeSigning"):
        verify_notation(_jws(key, [leaf, other_root], DIGEST, alg="ES256"), JWS_MEDIA_TYPE,
                        DIGEST, repository=REPO, policy=_policy(),
                        trust_store=_mem_store(other_root))


def test_malformed_and_oversized_envelopes() -> None:
    with pytest.raises(OversizedInputError, match="1 MiB"):
        parse_envelope(b"{" + b" " * (1 << 20) + b"}", JWS_MEDIA_TYPE)
    for bad in (b"", b"{", b"[]", b'{"payload": "!!", "protected": "e30", "signature": ""}'):
        with pytest.raises(MalformedSignatureError):
            parse_envelope(bad, JWS_MEDIA_TYPE)
    raw = (vectors(NOTATION) / "internal" / "testdata" / "cose_signature.sig").read_bytes()
    for bad in (raw[: len(raw) // 2], cbor2.dumps([1, 2, 3]), cbor2.dumps(cbor2.CBORTag(18, [])),
                b"\xff\xff"):
        with pytest.raises(MalformedSignatureError):
            parse_envelope(bad, COSE_MEDIA_TYPE)
    good = (MOCK / "ca_valid_sig_env.json").read_bytes()
    doc = json.loads(good)
    doc["signature"] = doc["signature"][:20]
    with pytest.raises(SignatureVerificationError):
        _verify_bytes(json.dumps(doc).encode())
    with pytest.raises(UnsupportedAlgorithmError, match="media type"):
        parse_envelope(good, "application/octet-stream")


def _verify_bytes(raw: bytes) -> Any:
    policy = parse_trust_policy(trust_policy("strict", ALL_STORES))
    return verify_notation(raw, JWS_MEDIA_TYPE, "sha256:" + "60043cf45eaebc4c0867fea485a039b5"
                           "98f52fd09fd5b07b0b2d2f88fad9d74e", repository=REPO, policy=policy,
                           trust_store=_store())


def test_skip_level_never_counts_as_verified() -> None:
    policy = parse_trust_policy({"version": "1.0", "trustPolicies": [{
        "name": "skip-all", "registryScopes": ["*"],
        "signatureVerification": {"level": "skip"}}]})
    with pytest.raises(SignatureVerificationError, match="skips verification"):
        verify_notation((vectors(MOCK) / "ca_valid_sig_env.json").read_bytes(), JWS_MEDIA_TYPE,
                        DIGEST, repository=REPO, policy=policy, trust_store=_store())


# -- trust stores ----------------------------------------------------------------------------

@pytest.mark.parametrize("store, reason", [
    ("ca:trust-store-with-invalid-certs", "valid certificates"),
    ("ca:trust-store-with-leaf-certs", "neither a CA nor self-signed"),
    ("ca:does-not-exist", "does not exist"),
])
def test_bad_trust_stores(store: str, reason: str) -> None:
    with pytest.raises(TrustStoreError, match=reason):
        _verify(vectors(MOCK) / "ca_valid_sig_env.json", stores=(store,))


def test_tsa_store_must_hold_ca_roots() -> None:
    with pytest.raises(TrustStoreError, match="self-issued CAs"):
        _verify(vectors(TS_ENV) / "jwsWithTimestamp.sig",
                stores=("ca:valid-trust-store", "tsa:test-nonCA"))


# -- trust policy documents ------------------------------------------------------------------

def _doc(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"version": "1.0", "trustPolicies": list(statements)}


def _st(name_: str, scopes: list[str], level: str = "strict", **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": name_, "registryScopes": scopes,
                            "signatureVerification": {"level": level}}
    if level != "skip":
        base |= {"trustStores": ["ca:acme"], "trustedIdentities": ["*"]}
    base.update(kw)
    return base


def test_scope_selection() -> None:
    doc = parse_trust_policy(_doc(_st("exact", ["registry.example.com/app"]),
                                  _st("rest", ["*"], level="skip")))
    assert doc.statement_for("registry.example.com/app").name == "exact"
    assert doc.statement_for("registry.example.com/other").name == "rest"
    only = parse_trust_policy(_doc(_st("exact", ["registry.example.com/app"])))
    with pytest.raises(PolicyError, match="no trust policy statement"):
        only.statement_for("registry.example.com/other")


@pytest.mark.parametrize("doc, reason", [
    (_doc(_st("a", ["*"]), _st("b", ["*"])), "more than one"),
    (_doc(_st("a", ["*", "r.example.com/x"])), "cannot be combined"),
    (_doc(_st("a", ["r.example.com/x"]), _st("a", ["r.example.com/y"])), "used twice"),
    (_doc(_st("a", ["r.example.com/x"]), _st("b", ["r.example.com/x"])), "more than one"),
    (_doc(_st("a", ["no-repository"])), "not valid"),
    (_doc(_st("a", [])), "no registry scopes"),
    ({"version": "2.0", "trustPolicies": [_st("a", ["*"])]}, "not supported"),
    ({"trustPolicies": [_st("a", ["*"])]}, "no version"),
    (_doc(), "no trust policy statements"),
    (_doc(_st("a", ["*"], level="skip", trustStores=["ca:x"])), "skips verification"),
    (_doc(_st("a", ["*"], trustedIdentities=[])), "needs both"),
    (_doc(_st("a", ["*"], level="lenient")), "invalid level"),
    (_doc(_st("a", ["*"], signatureVerification={"level": "skip",
                                                 "override": {"expiry": "log"}})),
     "cannot be overridden"),
    (_doc(_st("a", ["*"], signatureVerification={"level": "strict",
                                                 "override": {"integrity": "log"}})),
     "integrity cannot be overridden"),
    (_doc(_st("a", ["*"], signatureVerification={"level": "strict",
                                                 "override": {"authenticity": "skip"}})),
     "cannot be skipped"),
    (_doc(_st("a", ["*"], trustStores=["ca"])), "lacks ':'"),
    (_doc(_st("a", ["*"], trustStores=["x509:acme"])), "unknown trust store type"),
    (_doc(_st("a", ["*"], trustStores=["ca:bad/name"])), "bad trust store name"),
    (_doc(_st("a", ["*"], trustedIdentities=["*", "x509.subject: C=US, ST=WA, O=A"])),
     "cannot be combined"),
    (_doc(_st("a", ["*"], trustedIdentities=["x509.subject: C=US, O=A"])), "lacks required"),
    (_doc(_st("a", ["*"], trustedIdentities=["x509.subject: C=US, ST=WA, O=A",
                                             "x509.subject: C=US, ST=WA, O=A, CN=x"])),
     "overlapping"),
    (_doc(_st("a", ["*"], trustedIdentities=["email: a@b.c"])), "not supported"),
    ("not json", "not valid JSON"),
])
def test_invalid_trust_policies(doc: Any, reason: str) -> None:
    with pytest.raises(PolicyError, match=reason):
        parse_trust_policy(doc)


def test_skip_on_wildcard_is_valid_per_notation_spec() -> None:
    # notation-go accepts a skip statement for '*'; so do we (it just never verifies).
    doc = parse_trust_policy(_doc(_st("rest", ["*"], level="skip")))
    assert doc.statements[0].level == "skip"


def test_override_and_revocation_skip() -> None:
    doc = parse_trust_policy(_doc(_st("a", ["*"], signatureVerification={
        "level": "strict", "override": {"revocation": "skip", "expiry": "log"}})))
    acts = doc.statements[0].actions
    assert acts["revocation"] == "skip" and acts["expiry"] == "log"
    assert acts["integrity"] == "enforce"


def test_dn_parsing() -> None:
    assert parse_dn(r"C=US, ST=WA, O=Acme\, Inc., CN=x") == {
        "C": "US", "ST": "WA", "O": "Acme, Inc.", "CN": "x"}
    with pytest.raises(PolicyError, match="repeats"):
        parse_dn("C=US, ST=WA, O=A, O=B")
    with pytest.raises(PolicyError, match="multi-valued"):
        parse_dn("C=US+ST=WA, O=A")


# -- security: logged failures, the whole target descriptor, strict parsing -----------------

def _jws_raw(key: Any, chain: list[x509.Certificate], protected: bytes, payload: bytes) -> bytes:
    """A JWS over exactly these protected-header and payload bytes (ES256)."""
    p, pl = b64url(protected), b64url(payload)
    r, s = decode_dss_signature(key.sign(f"{p}.{pl}".encode(), ec.ECDSA(hashes.SHA256())))
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return json.dumps({"payload": pl, "protected": p, "signature": b64url(sig),
                       "header": {"x5c": [base64.b64encode(der(c)).decode()
                                          for c in chain]}}).encode()


_PROTECTED = (b'{"alg":"ES256","crit":["io.cncf.notary.signingScheme"],'
              b'"cty":"application/vnd.cncf.notary.payload.v1+json",'
              b'"io.cncf.notary.signingScheme":"notary.x509",'
              b'"io.cncf.notary.signingTime":"2025-01-01T00:00:00Z"}')
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.mark.parametrize("level, sv, logged", [
    ("audit", {}, "authenticity failed"),
    ("permissive", {"override": {"authenticity": "log"}}, "authenticity failed"),
])
def test_logged_authenticity_failure_is_reported_not_passed(level: str, sv: dict[str, Any],
                                                            logged: str) -> None:
    from ocigitops.verifier.policy import (
        Candidates,
        NotationAuthority,
        NotationCandidate,
        SignaturePolicy,
        evaluate,
    )

    path = vectors(MOCK) / "ca_valid_sig_env.json"
    # A store that does not hold the envelope's root: notation-go logs this and says "ok".
    r = _verify(path, level=level, stores=("ca:valid-trust-store-2",), **sv)
    assert any(logged in f for f in r.logged_failures), r.logged_failures
    raw = path.read_bytes()
    digest = parse_payload(parse_envelope(raw, JWS_MEDIA_TYPE).payload)["digest"]
    tp = parse_trust_policy(trust_policy(level, ("ca:valid-trust-store-2",), **sv))
    pol = SignaturePolicy((NotationAuthority("corp", tp, _store()),))
    res = evaluate(pol, digest, Candidates(notation=[NotationCandidate(raw, JWS_MEDIA_TYPE)]),
                   repository=REPO)
    (auth,) = res.authorities
    assert not res.passed and not auth.passed
    assert "audit/log level" in auth.reason and "never satisfy the policy" in auth.reason
    assert auth.signer is not None  # what it saw is still reported


def test_logged_expiry_failure_is_not_a_pass() -> None:
    from ocigitops.verifier.policy import (
        Candidates,
        NotationAuthority,
        NotationCandidate,
        SignaturePolicy,
        evaluate,
    )

    raw = (vectors(MOCK) / "ca_expired_sig_env.json").read_bytes()
    digest = parse_payload(parse_envelope(raw, JWS_MEDIA_TYPE).payload)["digest"]
    tp = parse_trust_policy(trust_policy("permissive", ALL_STORES))
    pol = SignaturePolicy((NotationAuthority("corp", tp, _store()),))
    res = evaluate(pol, digest, Candidates(notation=[NotationCandidate(raw, JWS_MEDIA_TYPE)]),
                   repository=REPO)
    assert not res.passed and "expiry failed" in res.authorities[0].reason


def test_target_descriptor_is_compared_whole() -> None:
    from ocigitops.publisher.sign_notation import build_envelope

    key = ec.generate_private_key(ec.SECP256R1())
    chain, root = _chain(key)
    signed = build_envelope(INDEX, DIGEST, 123, key, chain, envelope="jws")
    kw: dict[str, Any] = {"repository": REPO, "policy": _policy(),
                          "trust_store": _mem_store(root)}
    ok = verify_notation(signed.data, JWS_MEDIA_TYPE, DIGEST, expected_size=123,
                         expected_media_type=INDEX, **kw)
    assert ok.digest == DIGEST and not ok.logged_failures
    with pytest.raises(DigestMismatchError, match="media type"):
        verify_notation(signed.data, JWS_MEDIA_TYPE, DIGEST, expected_size=123,
                        expected_media_type=MANIFEST, **kw)
    with pytest.raises(DigestMismatchError, match="size"):
        verify_notation(signed.data, JWS_MEDIA_TYPE, DIGEST, expected_size=124,
                        expected_media_type=INDEX, **kw)
    cose = build_envelope(INDEX, DIGEST, 123, key, chain, envelope="cose")
    with pytest.raises(DigestMismatchError, match="media type"):
        verify_notation(cose.data, COSE_MEDIA_TYPE, DIGEST, expected_media_type=MANIFEST, **kw)


@pytest.mark.parametrize("size", ["123", 123.0, True, -1, None])
def test_target_size_must_be_an_integer(size: Any) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    chain, root = _chain(key)
    payload = json.dumps({"targetArtifact": {"mediaType": MANIFEST, "digest": DIGEST,
                                             "size": size}}).encode()
    env = _jws_raw(key, chain, _PROTECTED, payload)
    with pytest.raises(MalformedSignatureError, match="size"):
        verify_notation(env, JWS_MEDIA_TYPE, DIGEST, repository=REPO, policy=_policy(),
                        trust_store=_mem_store(root), now=now())


@pytest.mark.parametrize("what, protected, payload", [
    ("payload, exact duplicate", _PROTECTED,
     b'{"targetArtifact":{"mediaType":"%s","digest":"sha256:%s","digest":"%s","size":10}}'
     % (MANIFEST.encode(), b"00" * 32, DIGEST.encode())),
    ("payload, case variant", _PROTECTED,
     b'{"targetArtifact":{"mediaType":"%s","digest":"%s","Digest":"sha256:%s","size":10}}'
     % (MANIFEST.encode(), DIGEST.encode(), b"00" * 32)),
    ("payload, targetArtifact twice", _PROTECTED,
     b'{"TargetArtifact":{},"targetArtifact":{"mediaType":"%s","digest":"%s","size":10}}'
     % (MANIFEST.encode(), DIGEST.encode())),
    ("protected header", _PROTECTED[:-1] + b',"io.cncf.notary.signingScheme":"notary.x509"}',
     b'{"targetArtifact":{"mediaType":"%s","digest":"%s","size":10}}'
     % (MANIFEST.encode(), DIGEST.encode())),
])
def test_duplicate_json_keys_are_refused(what: str, protected: bytes, payload: bytes) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    chain, root = _chain(key)
    env = _jws_raw(key, chain, protected, payload)
    with pytest.raises(MalformedSignatureError, match="twice"):
        verify_notation(env, JWS_MEDIA_TYPE, DIGEST, repository=REPO, policy=_policy(),
                        trust_store=_mem_store(root), now=now())


def test_cose_duplicate_protected_header_key_is_refused() -> None:
    from ocigitops.publisher.sign_notation import build_envelope

    key = ec.generate_private_key(ec.SECP256R1())
    chain, root = _chain(key)
    good = build_envelope(MANIFEST, DIGEST, 10, key, chain, envelope="cose").data
    msg = cbor2.loads(good)
    protected, unprotected, payload, _sig = msg.value
    assert 0xA0 <= protected[0] < 0xB7  # a small map: the count is in the first byte
    dup = bytes([protected[0] + 1]) + protected[1:] + cbor2.dumps(1) + cbor2.dumps(-7)
    to_sign = cbor2.dumps(["Signature1", dup, b"", payload])
    r, s = decode_dss_signature(key.sign(to_sign, ec.ECDSA(hashes.SHA256())))
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    env = cbor2.dumps(cbor2.CBORTag(18, [dup, unprotected, payload, sig]))
    with pytest.raises(MalformedSignatureError, match="twice"):
        verify_notation(env, COSE_MEDIA_TYPE, DIGEST, repository=REPO, policy=_policy(),
                        trust_store=_mem_store(root))
    with pytest.raises(MalformedSignatureError, match="trailing"):
        parse_envelope(good + b"\x00", COSE_MEDIA_TYPE)


@pytest.mark.parametrize("header", [
    {"io.cncf.notary.signingTime": 10 ** 30},
    {"io.cncf.notary.signingTime": -(10 ** 20)},
    {"io.cncf.notary.signingTime": 1e300},
])
def test_out_of_range_times_are_typed_errors(header: dict[str, Any]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    chain, _root = _chain(key)
    prot = json.loads(_PROTECTED)
    prot.update(header)
    env = _jws_raw(key, chain, json.dumps(prot).encode(), b"{}")
    with pytest.raises(MalformedSignatureError, match="out of range"):
        parse_envelope(env, JWS_MEDIA_TYPE)


def test_deeply_nested_envelope_is_a_typed_error() -> None:
    deep = b'{"payload":' + b"[" * 100000 + b"]" * 100000 + b"}"
    with pytest.raises(MalformedSignatureError, match="nested too deeply"):
        parse_envelope(deep, JWS_MEDIA_TYPE)
    with pytest.raises(MalformedSignatureError):
        parse_envelope(b"\x81" * 100000, COSE_MEDIA_TYPE)
