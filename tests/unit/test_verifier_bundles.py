"""Sigstore bundles: the conformance suite, upstream bundles, and a private trusted root."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import sigstore
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ocigitops.verifier import keys
from ocigitops.verifier.bundles import (
    bundle_certificate,
    load_trusted_root,
    pae,
    verify_bundle_keyless,
    verify_bundle_with_key,
)
from ocigitops.verifier.errors import (
    CertificateError,
    DigestMismatchError,
    IdentityMismatchError,
    KeyLoadError,
    MalformedSignatureError,
    OversizedInputError,
    PolicyError,
    SignatureVerificationError,
    TransparencyLogError,
)
from ocigitops.verifier.identity import IdentityPolicy, certificate_issuer, certificate_subjects
from ocigitops.verifier.results import SignatureVerification
from tests.helpers.vectors import (
    CONFORMANCE,
    COSIGN,
    DEFAULT_IDENTITY,
    DEFAULT_ISSUER,
    SIGSTORE_PY,
    FakeSigstore,
    conformance_cases,
    dumps,
    hashedrekord_body,
    message_bundle,
    now,
    pem,
    vectors,
)

pytestmark = pytest.mark.unit


STAGING_ROOT = (Path(sigstore.__file__).parent / "_store"
                / "https%3A%2F%2Ftuf-repo-cdn.sigstage.dev" / "trusted_root.json")


def _run_case(case: str, mode: str) -> SignatureVerification:
    d = vectors(CONFORMANCE) / case
    artifact = (d / "artifact") if (d / "artifact").exists() else CONFORMANCE.parent / "a.txt"
    data = artifact.read_bytes()
    kw: dict[str, Any] = (
        {"artifact": data} if mode == "bytes"
        else {"digest": "sha256:" + hashlib.sha256(data).hexdigest()}
    )
    root = load_trusted_root(d / "trusted_root.json" if (d / "trusted_root.json").exists()
                             else None)
    bundle = (d / "bundle.sigstore.json").read_bytes()
    if (d / "key.pub").exists():
        key = keys.load_public_key((d / "key.pub").read_bytes())
        return verify_bundle_with_key(bundle, key, trusted_root=root, **kw)
    identity = (d / "identity").read_text().strip() if (d / "identity").exists() \
        else DEFAULT_IDENTITY
    issuer = (d / "issuer").read_text().strip() if (d / "issuer").exists() else DEFAULT_ISSUER
    return verify_bundle_keyless(bundle, IdentityPolicy(issuer=issuer, subject=identity),
                                 trusted_root=root, **kw)


@pytest.mark.parametrize("mode", ["bytes", "digest"])
@pytest.mark.parametrize("case", conformance_cases())
def test_conformance_bundle_verify(case: str, mode: str) -> None:
    if case.endswith("_fail"):
        with pytest.raises(Exception) as info:
            _run_case(case, mode)
        assert str(info.value)
        return
    result = _run_case(case, mode)
    assert result.digest.startswith("sha256:")
    assert result.signer.kind in ("key", "keyless")


@pytest.mark.parametrize("case, reason", [
    ("intoto-log-entry-mismatch_fail", "signatures do not match"),
    ("intoto-expired-certificate_fail", "not valid at validation time"),
    ("signature-mismatch_fail", "Signature is invalid"),
    ("wrong-hashedrekord-entry_fail", "inconsistent"),
    ("set-invalid-signature_fail", "SET"),
    ("managed-key-wrong-key_fail", "DER"),
])
def test_conformance_failures_name_their_reason(case: str, reason: str) -> None:
    with pytest.raises((SignatureVerificationError, KeyLoadError), match=reason):
        _run_case(case, "bytes")


def test_conformance_managed_key_wrong_key_is_refused_for_the_key() -> None:
    d = vectors(CONFORMANCE)
    bundle = (d / "managed-key-happy-path" / "bundle.sigstore.json").read_bytes()
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(SignatureVerificationError, match="does not verify"):
        verify_bundle_with_key(bundle, other, artifact=(d / "a.txt").read_bytes())


def test_conformance_key_bundle_is_not_keyless() -> None:
    d = vectors(CONFORMANCE)
    bundle = (d / "managed-key-happy-path" / "bundle.sigstore.json").read_bytes()
    with pytest.raises(MalformedSignatureError, match="certificate"):
        verify_bundle_keyless(bundle, IdentityPolicy(issuer="x", subject="y"),
                              artifact=(d / "a.txt").read_bytes())


def test_bundle_for_another_digest_is_refused() -> None:
    d = vectors(CONFORMANCE)
    with pytest.raises(SignatureVerificationError, match="digest mismatch"):
        verify_bundle_keyless(
            (d / "happy-path-v0.3" / "bundle.sigstore.json").read_bytes(),
            IdentityPolicy(issuer=DEFAULT_ISSUER, subject=DEFAULT_IDENTITY),
            digest="sha256:" + "0" * 64)
    with pytest.raises(DigestMismatchError, match="no subject"):
        verify_bundle_keyless(
            (d / "happy-path-intoto-in-dsse-v3" / "bundle.sigstore.json").read_bytes(),
            IdentityPolicy(issuer=DEFAULT_ISSUER, subject=DEFAULT_IDENTITY),
            digest="sha256:" + "0" * 64)


def test_identity_regex_and_mismatch_on_conformance_bundle() -> None:
    d = vectors(CONFORMANCE)
    bundle = (d / "happy-path-v0.3" / "bundle.sigstore.json").read_bytes()
    data = (d / "a.txt").read_bytes()
    ok = IdentityPolicy(issuer_regexp=r"^https://token\.actions\.githubusercontent\.com$",
                        subject_regexp=r"^https://github\.com/sigstore-conformance/")
    r = verify_bundle_keyless(bundle, ok, artifact=data)
    assert r.signer.subject == DEFAULT_IDENTITY
    assert r.signer.claims.get("repository", "").startswith("sigstore-conformance/")
    bad = IdentityPolicy(issuer=DEFAULT_ISSUER, subject_regexp=r"^https://github\.com/evil/")
    with pytest.raises(IdentityMismatchError, match="do not match"):
        verify_bundle_keyless(bundle, bad, artifact=data)
    wrong_issuer = IdentityPolicy(issuer="https://accounts.google.com",
                                  subject=DEFAULT_IDENTITY)
    with pytest.raises(IdentityMismatchError, match="issuer"):
        verify_bundle_keyless(bundle, wrong_issuer, artifact=data)
    claims = IdentityPolicy(issuer=DEFAULT_ISSUER, subject=DEFAULT_IDENTITY,
                            github={"ref": "refs/heads/not-main"})
    with pytest.raises(IdentityMismatchError, match="GitHub claim ref"):
        verify_bundle_keyless(bundle, claims, artifact=data)


# -- sigstore-python and cosign vectors ----------------------------------------------------

def _identity_of(bundle: bytes) -> IdentityPolicy:
    cert = bundle_certificate(bundle)
    assert cert is not None
    return IdentityPolicy(issuer=certificate_issuer(cert), subject=certificate_subjects(cert)[0])


# (bundle, artifact, trusted root, expected to verify). Skipped on purpose:
# integration/Python-3.12.5.tgz.sigstore (the artifact is not among the vectors and its v0.2
# entry has no checkpoint, which sigstore-python refuses anyway); bundle_invalid_version and
# bundle_no_cert_v1 are covered as parse failures below.
SIGSTORE_PY_CASES = [
    ("bundle.txt.sigstore", "bundle.txt", "staging", True),
    ("bundle_v3.txt.sigstore", "bundle_v3.txt", "staging", True),
    ("bundle_v3_alt.txt.sigstore", "bundle_v3_alt.txt", "staging", True),
    ("integration/bundle_v3.txt.sigstore", "integration/bundle_v3.txt", "staging", True),
    ("staging-rekor-v2.txt.sigstore.json", "staging-rekor-v2.txt", "staging", True),
    ("tsa/bundle.txt.sigstore", "tsa/bundle.txt", "tsa", True),
    # Production root does not vouch for staging certificates.
    ("bundle.txt.sigstore", "bundle.txt", "production", False),
    ("bundle_cve_2022_36056.txt.sigstore", "bundle_cve_2022_36056.txt", "staging", False),
    ("bundle_no_checkpoint.txt.sigstore", "bundle_no_checkpoint.txt", "staging", False),
    ("bundle_no_log_entry.txt.sigstore", "bundle_no_log_entry.txt", "staging", False),
    ("bundle_v3_no_signed_time.txt.sigstore.json", "bundle_v3_no_signed_time.txt", "staging",
     False),
    ("tsa/bundle.duplicate.sigstore", "tsa/bundle.txt", "tsa", False),
    ("tsa/bundle.many_timestamp.sigstore", "tsa/bundle.txt", "tsa", False),
    ("tsa/bundle.txt.late_timestamp.sigstore", "tsa/bundle.txt", "tsa", False),
]


def _root(which: str) -> Any:
    if which == "staging":
        return load_trusted_root(STAGING_ROOT)
    if which == "tsa":
        cfg = json.loads((vectors(SIGSTORE_PY) / "tsa" / "trust_config.json").read_text())
        return load_trusted_root(dumps(cfg["trustedRoot"]))
    return load_trusted_root()


@pytest.mark.parametrize("bundle, artifact, root, ok", SIGSTORE_PY_CASES)
def test_sigstore_python_bundles(bundle: str, artifact: str, root: str, ok: bool) -> None:
    raw = (vectors(SIGSTORE_PY) / bundle).read_bytes()
    data = (SIGSTORE_PY / artifact).read_bytes()
    try:
        ident = _identity_of(raw)
    except MalformedSignatureError:
        assert not ok
        return
    if ok:
        r = verify_bundle_keyless(raw, ident, artifact=data, trusted_root=_root(root))
        assert r.signer.kind == "keyless"
        r2 = verify_bundle_keyless(raw, ident, digest="sha256:" + hashlib.sha256(data).hexdigest(),
                                   trusted_root=_root(root))
        assert r2.digest == r.digest
    else:
        with pytest.raises(SignatureVerificationError):
            verify_bundle_keyless(raw, ident, artifact=data, trusted_root=_root(root))


def test_sigstore_python_dsse_rekor_v2() -> None:
    raw = (vectors(SIGSTORE_PY) / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_bytes()
    stmt = json.loads(base64.b64decode(json.loads(raw)["dsseEnvelope"]["payload"]))
    digest = "sha256:" + stmt["subject"][0]["digest"]["sha256"]
    r = verify_bundle_keyless(raw, _identity_of(raw), digest=digest,
                              trusted_root=load_trusted_root(STAGING_ROOT))
    assert r.statement is not None and r.payload_type == "application/vnd.in-toto+json"


@pytest.mark.parametrize("name", ["bundle_invalid_version.txt.sigstore",
                                  "bundle_no_cert_v1.txt.sigstore"])
def test_sigstore_python_unloadable(name: str) -> None:
    raw = (vectors(SIGSTORE_PY) / name).read_bytes()
    with pytest.raises(SignatureVerificationError):
        verify_bundle_keyless(raw, IdentityPolicy(issuer="x", subject="y"),
                              artifact=(SIGSTORE_PY / "bundle.txt").read_bytes(),
                              trusted_root=load_trusted_root(STAGING_ROOT))


def test_cosign_oci_attestation_bundle() -> None:
    raw = (vectors(COSIGN) / "oci-attestation.sigstore.json").read_bytes()
    stmt = json.loads(base64.b64decode(json.loads(raw)["dsseEnvelope"]["payload"]))
    digest = "sha256:" + stmt["subject"][0]["digest"]["sha256"]
    root = load_trusted_root(COSIGN / "trusted_root_pgi.json")
    r = verify_bundle_keyless(raw, _identity_of(raw), digest=digest, trusted_root=root)
    assert r.predicate_type == stmt["predicateType"]
    assert r.signer.issuer == "https://github.com/login/oauth"
    with pytest.raises(DigestMismatchError):
        verify_bundle_keyless(raw, _identity_of(raw), digest="sha256:" + "1" * 64,
                              trusted_root=root)


# -- a private trusted root ----------------------------------------------------------------

ISSUER = "https://token.actions.githubusercontent.com"
SUBJECT = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"


def _keyless_bundle(fs: FakeSigstore, data: bytes, **issue: Any) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = fs.issue(key, subject=SUBJECT, issuer=ISSUER,
                    github={"repository": "acme/app", "ref": "refs/heads/main",
                            "trigger": "push", "sha": "a" * 40}, **issue)
    sig = key.sign(data, ec.ECDSA(hashes.SHA256()))
    digest = hashlib.sha256(data).digest()
    entry = fs.log_entry(hashedrekord_body(sig, pem(cert), digest),
                         integrated=cert.not_valid_before_utc + dt.timedelta(seconds=30))
    return message_bundle(signature=sig, digest=digest, entry=entry, certificate=cert)


def test_private_trusted_root_accepts_its_certificates() -> None:
    fs = FakeSigstore()
    bundle = _keyless_bundle(fs, b"artifact")
    policy = IdentityPolicy(issuer=ISSUER, subject_regexp=r"^https://github\.com/acme/",
                            github={"repository": "acme/app", "ref": "refs/heads/main",
                                    "trigger": "push", "sha": "a" * 40})
    r = verify_bundle_keyless(bundle, policy, artifact=b"artifact",
                              trusted_root=load_trusted_root(fs.trusted_root()))
    assert r.signer.subject == SUBJECT and r.signer.claims["repository"] == "acme/app"


def test_certificate_outside_the_trusted_root_is_refused() -> None:
    ours, theirs = FakeSigstore(), FakeSigstore(ca_cn="other-fulcio")
    bundle = _keyless_bundle(theirs, b"artifact")
    with pytest.raises(CertificateError, match="certificate chain"):
        verify_bundle_keyless(bundle, IdentityPolicy(issuer=ISSUER, subject=SUBJECT),
                              artifact=b"artifact",
                              trusted_root=load_trusted_root(ours.trusted_root()))
    # And the public-good root does not know either of them.
    with pytest.raises(SignatureVerificationError):
        verify_bundle_keyless(bundle, IdentityPolicy(issuer=ISSUER, subject=SUBJECT),
                              artifact=b"artifact")


def test_expired_certificate_is_refused() -> None:
    fs = FakeSigstore()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = fs.issue(key, subject=SUBJECT, issuer=ISSUER,
                    not_before=now() - dt.timedelta(days=2))
    sig = key.sign(b"x", ec.ECDSA(hashes.SHA256()))
    digest = hashlib.sha256(b"x").digest()
    # Logged a day after the ten-minute certificate expired.
    entry = fs.log_entry(hashedrekord_body(sig, pem(cert), digest),
                         integrated=now() - dt.timedelta(days=1))
    bundle = message_bundle(signature=sig, digest=digest, entry=entry, certificate=cert)
    with pytest.raises(CertificateError, match="not valid at validation time"):
        verify_bundle_keyless(bundle, IdentityPolicy(issuer=ISSUER, subject=SUBJECT),
                              artifact=b"x", trusted_root=load_trusted_root(fs.trusted_root()))


def test_key_bundle_message_and_tampering() -> None:
    fs = FakeSigstore()
    root = load_trusted_root(fs.trusted_root())
    key = ec.generate_private_key(ec.SECP256R1())
    pub_pem = keys.public_key_pem(key)
    data = b"manifest bytes"
    digest = hashlib.sha256(data).digest()
    sig = key.sign(data, ec.ECDSA(hashes.SHA256()))
    entry = fs.log_entry(hashedrekord_body(sig, pub_pem, digest))
    bundle = message_bundle(signature=sig, digest=digest, entry=entry,
                            key_hint=keys.key_hint(key))
    r = verify_bundle_with_key(bundle, key.public_key(), artifact=data, trusted_root=root)
    assert r.signer.key_hint == keys.key_hint(key) and r.signed_at is not None
    # The log entry must name this signature: one about another signature is refused.
    other_sig = key.sign(b"other", ec.ECDSA(hashes.SHA256()))
    wrong = fs.log_entry(hashedrekord_body(other_sig, pub_pem, digest))
    tampered = message_bundle(signature=sig, digest=digest, entry=wrong)
    with pytest.raises(TransparencyLogError, match="inconsistent"):
        verify_bundle_with_key(tampered, key.public_key(), artifact=data, trusted_root=root)
    # No log entry: refused unless the caller opts out of the transparency log.
    bare = message_bundle(signature=sig, digest=digest, entry=None)
    with pytest.raises(TransparencyLogError, match="no transparency log entry"):
        verify_bundle_with_key(bare, key.public_key(), artifact=data, trusted_root=root)
    assert verify_bundle_with_key(bare, key.public_key(), artifact=data, trusted_root=root,
                                  require_tlog=False).signed_at is None
    # A log that is not in the trusted root.
    with pytest.raises(TransparencyLogError):
        verify_bundle_with_key(bundle, key.public_key(), artifact=data,
                               trusted_root=load_trusted_root(FakeSigstore().trusted_root()))


def test_key_bundle_dsse_statement_subject() -> None:
    fs = FakeSigstore()
    root = load_trusted_root(fs.trusted_root())
    key = ec.generate_private_key(ec.SECP256R1())
    target = "sha256:" + hashlib.sha256(b"image manifest").hexdigest()
    stmt = dumps({"_type": "https://in-toto.io/Statement/v1",
                  "subject": [{"name": "img", "digest": {"sha256": target[7:]}}],
                  "predicateType": "https://sigstore.dev/cosign/sign/v1", "predicate": {}})
    ptype = "application/vnd.in-toto+json"
    sig = key.sign(pae(ptype, stmt), ec.ECDSA(hashes.SHA256()))
    body = {"apiVersion": "0.0.1", "kind": "dsse", "spec": {
        "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(stmt).hexdigest()},
        "signatures": [{"signature": base64.b64encode(sig).decode(),
                        "verifier": base64.b64encode(keys.public_key_pem(key)).decode()}]}}
    entry = fs.log_entry(body, kind="dsse")
    bundle = dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                    "verificationMaterial": {"publicKey": {"hint": keys.key_hint(key)},
                                             "tlogEntries": [entry]},
                    "dsseEnvelope": {"payload": base64.b64encode(stmt).decode(),
                                     "payloadType": ptype,
                                     "signatures": [{"sig": base64.b64encode(sig).decode()}]}})
    r = verify_bundle_with_key(bundle, key.public_key(), digest=target, trusted_root=root)
    assert r.predicate_type == "https://sigstore.dev/cosign/sign/v1"
    with pytest.raises(DigestMismatchError, match="no subject"):
        verify_bundle_with_key(bundle, key.public_key(), digest="sha256:" + "2" * 64,
                               trusted_root=root)


def test_pae_matches_dsse_spec_example() -> None:
    # From the DSSE v1 specification's test vector.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world")


def test_bad_bundle_inputs() -> None:
    ident = IdentityPolicy(issuer=ISSUER, subject=SUBJECT)
    with pytest.raises(OversizedInputError, match="1 MiB"):
        verify_bundle_keyless(b"{" + b" " * (1 << 20) + b"}", ident, artifact=b"x")
    with pytest.raises(MalformedSignatureError):
        verify_bundle_keyless(b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"',
                              ident, artifact=b"x")
    with pytest.raises(MalformedSignatureError, match="trusted root"):
        load_trusted_root(b"[]")
    with pytest.raises(MalformedSignatureError, match="not a valid OCI digest"):
        verify_bundle_keyless(b"{}", ident, digest="sha256:short")
    ed = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(MalformedSignatureError):
        verify_bundle_with_key(b"not json", ed.public_key(), artifact=b"x")


def test_identity_policy_construction_errors() -> None:
    with pytest.raises(PolicyError, match="does not compile"):
        IdentityPolicy(issuer=ISSUER, subject_regexp="(unclosed")
    with pytest.raises(PolicyError, match="exactly one of issuer"):
        IdentityPolicy(subject=SUBJECT)
    with pytest.raises(PolicyError, match="exactly one of subject"):
        IdentityPolicy(issuer=ISSUER, subject=SUBJECT, subject_regexp=".*")
    with pytest.raises(PolicyError, match="unknown GitHub claim"):
        IdentityPolicy(issuer=ISSUER, subject=SUBJECT, github={"branch": "main"})


# -- security: signatures vs attestations, strict JSON --------------------------------------

def _key_bundle(key: Any, digest: str, predicate_type: str,
                payload_type: str = "application/vnd.in-toto+json") -> bytes:
    stmt = json.dumps({"_type": "https://in-toto.io/Statement/v1",
                       "subject": [{"digest": {"sha256": digest[7:]}}],
                       "predicateType": predicate_type, "predicate": {}}).encode()
    der_sig = key.sign(pae(payload_type, stmt), ec.ECDSA(hashes.SHA256()))
    return json.dumps({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": "x"}, "tlogEntries": []},
        "dsseEnvelope": {"payload": base64.b64encode(stmt).decode(), "payloadType": payload_type,
                         "signatures": [{"sig": base64.b64encode(der_sig).decode()}]}}).encode()


_D = "sha256:" + "cd" * 32


def test_attestation_predicate_is_refused_as_a_signature() -> None:
    from ocigitops.verifier.bundles import COSIGN_SIGN_PREDICATE

    key = ec.generate_private_key(ec.SECP256R1())
    slsa = _key_bundle(key, _D, "https://slsa.dev/provenance/v1")
    with pytest.raises(SignatureVerificationError, match="is an attestation"):
        verify_bundle_with_key(slsa, key.public_key(), digest=_D, require_tlog=False,
                               predicate_type=COSIGN_SIGN_PREDICATE)
    # Verifying it as an attestation (any predicate) is still possible, and says which.
    v = verify_bundle_with_key(slsa, key.public_key(), digest=_D, require_tlog=False)
    assert v.predicate_type == "https://slsa.dev/provenance/v1"
    sig = _key_bundle(key, _D, COSIGN_SIGN_PREDICATE)
    assert verify_bundle_with_key(sig, key.public_key(), digest=_D, require_tlog=False,
                                  predicate_type=COSIGN_SIGN_PREDICATE).digest == _D


def test_dsse_payload_type_must_be_in_toto() -> None:
    from ocigitops.verifier.bundles import COSIGN_SIGN_PREDICATE

    key = ec.generate_private_key(ec.SECP256R1())
    other = _key_bundle(key, _D, COSIGN_SIGN_PREDICATE, payload_type="application/json")
    with pytest.raises(MalformedSignatureError, match=r"is not application/vnd\.in-toto"):
        verify_bundle_with_key(other, key.public_key(), digest=_D, require_tlog=False)


@pytest.mark.parametrize("old, new", [
    (b'"predicateType"', b'"PredicateType":"x","predicateType"'),
    (b'"subject"', b'"subject":[],"subject"'),
])
def test_duplicate_keys_in_a_statement_are_refused(old: bytes, new: bytes) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    stmt = json.dumps({"_type": "https://in-toto.io/Statement/v1",
                       "subject": [{"digest": {"sha256": _D[7:]}}],
                       "predicateType": "https://sigstore.dev/cosign/sign/v1"}).encode()
    stmt = stmt.replace(old, new, 1)
    der_sig = key.sign(pae("application/vnd.in-toto+json", stmt), ec.ECDSA(hashes.SHA256()))
    bundle = json.dumps({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": "x"}, "tlogEntries": []},
        "dsseEnvelope": {"payload": base64.b64encode(stmt).decode(),
                         "payloadType": "application/vnd.in-toto+json",
                         "signatures": [{"sig": base64.b64encode(der_sig).decode()}]}}).encode()
    with pytest.raises(MalformedSignatureError, match="twice"):
        verify_bundle_with_key(bundle, key.public_key(), digest=_D, require_tlog=False)


def test_duplicate_keys_in_bundle_json_are_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    good = _key_bundle(key, _D, "https://sigstore.dev/cosign/sign/v1")
    dup = good.replace(b'"dsseEnvelope": {', b'"dsseEnvelope": {"payloadType": "x", ', 1)
    with pytest.raises(MalformedSignatureError, match="twice"):
        verify_bundle_with_key(dup, key.public_key(), digest=_D, require_tlog=False)
    with pytest.raises(MalformedSignatureError, match="twice"):
        verify_bundle_keyless(dup, IdentityPolicy(issuer="a", subject="b"), digest=_D)
    deep = b'{"a":' * 1000 + b"1" + b"}" * 1000
    with pytest.raises(MalformedSignatureError, match="nested"):
        verify_bundle_with_key(deep, key.public_key(), digest=_D, require_tlog=False)


def test_invalid_bundle_reason_is_one_line() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    bad = json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                      "verificationMaterial": {"publicKey": {"hint": "x"},
                                               "tlogEntries": [{"logIndex": "x"}, 5]},
                      "dsseEnvelope": {"payload": 5, "signatures": "x"}}).encode()
    with pytest.raises(MalformedSignatureError) as info:
        verify_bundle_with_key(bad, key.public_key(), digest=_D, require_tlog=False)
    assert "\n" not in str(info.value)
