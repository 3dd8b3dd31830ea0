"""Signature policies: authorities, any/all/N rules, Flux's verify block, fail-closed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ocigitops.verifier import keys, policy
from ocigitops.verifier.bundles import load_trusted_root
from ocigitops.verifier.errors import KeyLoadError, PolicyError
from ocigitops.verifier.identity import IdentityPolicy
from ocigitops.verifier.notation import JWS_MEDIA_TYPE
from ocigitops.verifier.policy import (
    Candidates,
    CosignKeyAuthority,
    CosignKeylessAuthority,
    NotationAuthority,
    NotationCandidate,
    Rule,
    SignaturePolicy,
    evaluate,
    from_flux_verify,
    parse_policy,
)
from ocigitops.verifier.simplesigning import sign_legacy
from ocigitops.verifier.trustpolicy import TrustStore, parse_trust_policy
from tests.helpers.vectors import (
    CONFORMANCE,
    DEFAULT_IDENTITY,
    DEFAULT_ISSUER,
    NOTATION,
    NOTATION_TRUSTSTORE,
    FakeSigstore,
    hashedrekord_body,
    message_bundle,
    pem,
    trust_policy,
    vectors,
)

pytestmark = pytest.mark.unit

REPO = "registry.example.com/team/app"
NOTATION_DIGEST = "sha256:60043cf45eaebc4c0867fea485a039b598f52fd09fd5b07b0b2d2f88fad9d74e"


def _notation_authority() -> NotationAuthority:
    tp = parse_trust_policy(trust_policy("strict", ("ca:valid-trust-store",)))
    return NotationAuthority("corp", tp, TrustStore.from_directory(vectors(NOTATION_TRUSTSTORE)))


def _notation_candidate() -> NotationCandidate:
    env = (NOTATION / "internal" / "mock" / "testdata" / "ca_valid_sig_env.json").read_bytes()
    return NotationCandidate(env, JWS_MEDIA_TYPE)


def test_rules_over_key_and_notation() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    legacy = sign_legacy(key, REPO, NOTATION_DIGEST)
    cands = Candidates(legacy=[legacy], notation=[_notation_candidate()])
    ka = CosignKeyAuthority("ci", (key.public_key(),))
    other = CosignKeyAuthority("release", (ec.generate_private_key(ec.SECP256R1()).public_key(),))
    na = _notation_authority()

    r = evaluate(SignaturePolicy((ka, na), Rule("all")), NOTATION_DIGEST, cands, repository=REPO)
    assert r.passed and [a.passed for a in r.authorities] == [True, True]
    assert r.authorities[0].signer is not None and r.authorities[0].signer.kind == "key"
    assert r.authorities[1].signer is not None and "Notation Test Root" in str(
        r.authorities[1].signer)

    r = evaluate(SignaturePolicy((ka, other, na), Rule("all")), NOTATION_DIGEST, cands,
                 repository=REPO)
    assert not r.passed and "does not verify" in r.authorities[1].reason
    r = evaluate(SignaturePolicy((ka, other, na), Rule("at_least", 2)), NOTATION_DIGEST, cands,
                 repository=REPO)
    assert r.passed
    r = evaluate(SignaturePolicy((other,), Rule("any")), NOTATION_DIGEST, cands, repository=REPO)
    assert not r.passed
    assert "NOT verified" in r.summary() and "FAIL release" in r.summary()


def test_nothing_passes_by_default() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    empty = Candidates()
    pol = SignaturePolicy((CosignKeyAuthority("ci", (key.public_key(),)),
                           CosignKeylessAuthority("gha", (IdentityPolicy(
                               issuer_regexp=".*", subject_regexp=".*"),)),
                           _notation_authority()), Rule("any"))
    r = evaluate(pol, NOTATION_DIGEST, empty, repository=REPO)
    assert not r.passed
    assert [a.reason for a in r.authorities] == [
        "no key-signed cosign signature found", "no keyless sigstore bundle found",
        "no notation signature found"]
    with pytest.raises(PolicyError):
        SignaturePolicy(())


def test_a_crash_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cands = Candidates(legacy=[sign_legacy(key, REPO, NOTATION_DIGEST)],
                       notation=[_notation_candidate()])

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(policy, "verify_legacy_signature", boom)
    monkeypatch.setattr(policy, "_eval_notation", boom)
    pol = SignaturePolicy((CosignKeyAuthority("ci", (key.public_key(),)),
                           _notation_authority()), Rule("any"))
    r = evaluate(pol, NOTATION_DIGEST, cands, repository=REPO)
    assert not r.passed
    assert "RuntimeError: kaboom" in r.authorities[0].reason
    assert r.authorities[1].reason == "internal error: RuntimeError: kaboom"


def test_signature_for_another_digest_does_not_count() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cands = Candidates(legacy=[sign_legacy(key, REPO, "sha256:" + "1" * 64)],
                       notation=[_notation_candidate()])
    pol = SignaturePolicy((CosignKeyAuthority("ci", (key.public_key(),)), _notation_authority()))
    r = evaluate(pol, "sha256:" + "2" * 64, cands, repository=REPO)
    assert not r.passed
    assert "DigestMismatchError" in r.authorities[0].reason
    assert "DigestMismatchError" in r.authorities[1].reason


def test_keyless_bundles_and_legacy_layers() -> None:
    fs = FakeSigstore()
    root = load_trusted_root(fs.trusted_root())
    key = ec.generate_private_key(ec.SECP256R1())
    issuer, subject = "https://token.actions.githubusercontent.com", \
        "https://github.com/acme/app/.github/workflows/ci.yml@refs/heads/main"
    cert = fs.issue(key, subject=subject, issuer=issuer)
    manifest = b'{"schemaVersion":2}'
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    sig = key.sign(manifest, ec.ECDSA(hashes.SHA256()))
    raw_digest = hashlib.sha256(manifest).digest()
    bundle = message_bundle(signature=sig, digest=raw_digest, certificate=cert,
                            entry=fs.log_entry(hashedrekord_body(sig, pem(cert), raw_digest)))
    good = IdentityPolicy(issuer=issuer, subject_regexp=r"^https://github\.com/acme/")
    bad = IdentityPolicy(issuer=issuer, subject_regexp=r"^https://github\.com/evil/")
    r = evaluate(SignaturePolicy((CosignKeylessAuthority("gha", (bad, good), root),)), digest,
                 Candidates(bundles=[bundle]), repository=REPO)
    assert r.passed and r.authorities[0].signer is not None
    assert r.authorities[0].signer.subject == subject
    r = evaluate(SignaturePolicy((CosignKeylessAuthority("gha", (bad,), root),)), digest,
                 Candidates(bundles=[bundle]), repository=REPO)
    assert not r.passed and "IdentityMismatchError" in r.authorities[0].reason
    # A key authority ignores keyless bundles and the reverse.
    r = evaluate(SignaturePolicy((CosignKeyAuthority("k", (key.public_key(),)),)), digest,
                 Candidates(bundles=[bundle]), repository=REPO)
    assert not r.passed


def test_conformance_managed_key_through_policy() -> None:
    d = vectors(CONFORMANCE)
    data = (d / "a.txt").read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    bundle = (d / "managed-key-happy-path" / "bundle.sigstore.json").read_bytes()
    pub = (d / "managed-key-happy-path" / "key.pub").read_bytes()
    pol = parse_policy({"rule": "any", "authorities": [
        {"name": "ci", "cosign": {"keys": [pub.decode()], "tlog": True}}]})
    r = evaluate(pol, digest, Candidates(bundles=[bundle]), repository=REPO)
    assert r.passed, r.summary()
    keyless = parse_policy({"authorities": [{"name": "beacon", "keyless": {"identities": [
        {"issuer": DEFAULT_ISSUER, "subject": DEFAULT_IDENTITY}]}}]})
    v3 = (d / "happy-path-v0.3" / "bundle.sigstore.json").read_bytes()
    assert evaluate(keyless, digest, Candidates(bundles=[v3, bundle]), repository=REPO).passed


def test_policy_documents() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pub = keys.public_key_pem(key).decode()
    tp = trust_policy("strict", ("ca:corp",))
    root_pem = (NOTATION_TRUSTSTORE / "x509/ca/valid-trust-store/NotationTestRoot.pem").read_text()
    pol = parse_policy({"rule": 2, "authorities": [
        {"name": "ci", "cosign": {"keys": [pub], "annotations": {"env": "prod"}}},
        {"name": "corp", "notation": {"trustPolicy": tp, "trustStores": {"ca:corp": [root_pem]}}},
    ]})
    cands = Candidates(legacy=[sign_legacy(key, REPO, NOTATION_DIGEST, {"env": "prod"})],
                       notation=[_notation_candidate()])
    assert evaluate(pol, NOTATION_DIGEST, cands, repository=REPO).passed
    wrong = Candidates(legacy=[sign_legacy(key, REPO, NOTATION_DIGEST, {"env": "dev"})],
                       notation=[_notation_candidate()])
    r = evaluate(pol, NOTATION_DIGEST, wrong, repository=REPO)
    assert not r.passed and "annotation 'env'" in r.authorities[0].reason


@pytest.mark.parametrize("doc, error, reason", [
    ({}, PolicyError, "no authorities"),
    ({"authorities": [{"name": "x"}]}, PolicyError, "exactly one of"),
    ({"rule": "most", "authorities": [{"keyless": {"identities": [
        {"issuer": "a", "subject": "b"}]}}]}, PolicyError, "rule"),
    ({"rule": 3, "authorities": [{"keyless": {"identities": [
        {"issuer": "a", "subject": "b"}]}}]}, PolicyError, "cannot be met"),
    ({"authorities": [{"keyless": {"identities": [
        {"issuer": "a", "subjectRegExp": "[unclosed"}]}}]}, PolicyError, "does not compile"),
    ({"authorities": [{"keyless": {"identities": []}}]}, PolicyError, "no identities"),
    ({"authorities": [{"cosign": {"keys": ["not a key"]}}]}, KeyLoadError, "no PEM block"),
    ({"authorities": [{"name": "a", "keyless": {"identities": [{"issuer": "a", "subject": "b"}]}},
                      {"name": "a", "keyless": {"identities": [{"issuer": "a", "subject": "b"}]}}]},
     PolicyError, "unique"),
])
def test_bad_policy_documents(doc: dict[str, Any], error: type[Exception], reason: str) -> None:
    with pytest.raises(error, match=reason):
        parse_policy(doc)


# -- Flux ------------------------------------------------------------------------------------

def test_flux_cosign_keys() -> None:
    k1, k2 = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    pol = from_flux_verify({"provider": "cosign", "secretRef": {"name": "keys"}},
                           {"a.pub": keys.public_key_pem(k1), "b.pub": keys.public_key_pem(k2),
                            "README": b"ignored"})
    assert isinstance(pol.authorities[0], CosignKeyAuthority)
    cands = Candidates(legacy=[sign_legacy(k2, REPO, NOTATION_DIGEST)])
    assert evaluate(pol, NOTATION_DIGEST, cands, repository=REPO).passed
    with pytest.raises(PolicyError, match=r"no \*\.pub"):
        from_flux_verify({"provider": "cosign"}, {"cosign.key": b"x"})


def test_flux_keyless_match_oidc_identity() -> None:
    d = vectors(CONFORMANCE)
    data = (d / "a.txt").read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    v3 = (d / "happy-path-v0.3" / "bundle.sigstore.json").read_bytes()
    pol = from_flux_verify({"provider": "cosign", "matchOIDCIdentity": [
        {"issuer": "^https://accounts\\.google\\.com$", "subject": ".*"},
        {"issuer": "^https://token\\.actions\\.githubusercontent\\.com$",
         "subject": "^https://github\\.com/sigstore-conformance/"}]})
    assert evaluate(pol, digest, Candidates(bundles=[v3]), repository=REPO).passed
    only_google = from_flux_verify({"provider": "cosign", "matchOIDCIdentity": [
        {"issuer": "^https://accounts\\.google\\.com$", "subject": ".*"}]})
    assert not evaluate(only_google, digest, Candidates(bundles=[v3]), repository=REPO).passed
    with pytest.raises(PolicyError, match="matchOIDCIdentity"):
        from_flux_verify({"provider": "cosign"})
    with pytest.raises(PolicyError, match="does not compile"):
        from_flux_verify({"provider": "cosign", "matchOIDCIdentity": [
            {"issuer": "(", "subject": ".*"}]})


def test_flux_notation_secret() -> None:
    root = (NOTATION_TRUSTSTORE / "x509/ca/valid-trust-store/NotationTestRoot.pem").read_bytes()
    tp = json.dumps(trust_policy("strict", ("ca:flux",))).encode()
    pol = from_flux_verify({"provider": "notation", "secretRef": {"name": "n"}},
                           {"trustpolicy.json": tp, "root.crt": root})
    cands = Candidates(notation=[_notation_candidate()])
    assert evaluate(pol, NOTATION_DIGEST, cands, repository=REPO).passed
    with pytest.raises(PolicyError, match=r"trustpolicy\.json"):
        from_flux_verify({"provider": "notation"}, {"root.crt": root})
    with pytest.raises(PolicyError, match="provider"):
        from_flux_verify({"provider": "gpg"})


# -- security: strict rules, attestations, one-line reasons ---------------------------------

@pytest.mark.parametrize("raw, want", [
    ("any", Rule("any")), ("all", Rule("all")), ("1", Rule("at_least", 1)),
    ("2", Rule("at_least", 2)), (3, Rule("at_least", 3)),
])
def test_parse_rule_accepts_exactly(raw: Any, want: Rule) -> None:
    assert policy.parse_rule(raw) == want


@pytest.mark.parametrize("raw", ["ALL", "All", "alll", "Any", "ANY", " any", "all ", "²", "\u0661",
                                 "0", "00", "-1", "+1", "1.0", "1e3", "", " 1", "1\n",
                                 "9" * 5000, 0, -1, True, False, 1.0, [], {}])
def test_parse_rule_refuses_everything_else(raw: Any) -> None:
    with pytest.raises(PolicyError, match="use any, all, or a number") as info:
        policy.parse_rule(raw)
    assert "\n" not in str(info.value) and len(str(info.value)) < 200


@pytest.mark.parametrize("rule, match", [("ALL", "use any, all"), ("²", "use any, all"),
                                         ("2", "cannot be met")])
def test_policy_from_flags_rule_is_strict(tmp_path: Any, rule: str, match: str) -> None:
    from ocigitops.verifier.verify import policy_from_flags

    pub = tmp_path / "cosign.pub"
    pub.write_bytes(keys.public_key_pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(PolicyError, match=match):
        policy_from_flags(keys=[pub], rule=rule)
    assert policy_from_flags(keys=[pub], rule="1").rule == Rule("at_least", 1)


@pytest.mark.parametrize("rule", ["²", "ALL", "0", True, 1.5])
def test_policy_document_rule_is_strict(rule: Any) -> None:
    with pytest.raises(PolicyError, match="rule"):
        parse_policy({"rule": rule, "authorities": [
            {"keyless": {"identities": [{"issuer": "a", "subject": "b"}]}}]})


def _statement(digest: str, predicate_type: str) -> bytes:
    return json.dumps({"_type": "https://in-toto.io/Statement/v1",
                       "subject": [{"digest": {"sha256": digest[7:]}}],
                       "predicateType": predicate_type, "predicate": {}}).encode()


@pytest.mark.parametrize("predicate", ["https://slsa.dev/provenance/v1",
                                       "https://cosign.sigstore.dev/attestation/vuln/v1",
                                       "https://sigstore.dev/cosign/sign/v1 "])
def test_key_signed_attestation_is_not_a_signature(predicate: str) -> None:
    from ocigitops.publisher.sign_cosign import build_key_bundle

    key = ec.generate_private_key(ec.SECP256R1())
    pol = SignaturePolicy((CosignKeyAuthority("ci", (key.public_key(),)),))
    att = build_key_bundle(key, _statement(NOTATION_DIGEST, predicate))
    r = evaluate(pol, NOTATION_DIGEST, Candidates(bundles=[att]), repository=REPO)
    assert not r.passed and "is an attestation" in r.authorities[0].reason
    sig = build_key_bundle(key, _statement(NOTATION_DIGEST, policy.COSIGN_SIGN_PREDICATE))
    assert evaluate(pol, NOTATION_DIGEST, Candidates(bundles=[att, sig]),
                    repository=REPO).passed


def test_duplicate_keys_in_a_bundle_fail_the_authority() -> None:
    from ocigitops.publisher.sign_cosign import build_key_bundle

    key = ec.generate_private_key(ec.SECP256R1())
    pol = SignaturePolicy((CosignKeyAuthority("ci", (key.public_key(),)),))
    good = build_key_bundle(key, _statement(NOTATION_DIGEST, policy.COSIGN_SIGN_PREDICATE))
    dup = good.replace(b'"mediaType":', b'"MediaType":"x","mediaType":', 1)
    r = evaluate(pol, NOTATION_DIGEST, Candidates(bundles=[dup]), repository=REPO)
    assert not r.passed and "twice" in r.authorities[0].reason
    assert "MalformedDocumentError" in r.authorities[0].reason


def test_reasons_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: Any, **_k: Any) -> Any:
        raise ValueError("line one\nline two\n\tline three")

    monkeypatch.setattr(policy, "verify_legacy_signature", boom)
    key = ec.generate_private_key(ec.SECP256R1())
    pol = SignaturePolicy((CosignKeyAuthority("ci", (key.public_key(),)),))
    r = evaluate(pol, NOTATION_DIGEST, Candidates(legacy=[sign_legacy(key, REPO,
                                                                      NOTATION_DIGEST)]),
                 repository=REPO)
    assert not r.passed and "\n" not in r.authorities[0].reason
    assert "line one line two line three" in r.authorities[0].reason


def test_logged_failures_never_pass_whatever_produced_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Defensive check in evaluate: a 'passing' result carrying logged failures fails."""
    from ocigitops.verifier.results import SignatureVerification, Signer

    def fake(*_a: Any, **_k: Any) -> SignatureVerification:
        return SignatureVerification(digest=NOTATION_DIGEST, signer=Signer(kind="key"),
                                     kind="cosign-legacy",
                                     logged_failures=("authenticity failed: untrusted",))

    monkeypatch.setattr(policy, "verify_legacy_signature", fake)
    key = ec.generate_private_key(ec.SECP256R1())
    pol = SignaturePolicy((CosignKeyAuthority("ci", (key.public_key(),)),))
    r = evaluate(pol, NOTATION_DIGEST, Candidates(legacy=[sign_legacy(key, REPO,
                                                                      NOTATION_DIGEST)]),
                 repository=REPO)
    assert not r.passed and "logged failures never satisfy" in r.authorities[0].reason


def test_hostile_policy_inputs_are_typed_errors() -> None:
    with pytest.raises(PolicyError, match="invalid level"):
        parse_trust_policy({"version": "1.0", "trustPolicies": [{
            "name": "x", "registryScopes": ["*"], "signatureVerification": {"level": []}}]})
    with pytest.raises(PolicyError, match="twice"):
        parse_trust_policy(b'{"version":"1.0","Version":"1.0","trustPolicies":[]}')
    with pytest.raises(PolicyError, match="not a PEM or DER"):
        from_flux_verify({"provider": "notation"}, {
            "trustpolicy.json": json.dumps(trust_policy("strict", ("ca:flux",))).encode(),
            "root.crt": b"garbage"})


def test_policy_file_with_a_repeated_key_is_refused(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys; a policy file that says ``rule`` twice
    (or lists ``authorities`` twice) means different things to different readers."""
    from ocigitops.verifier.verify import load_policy_file

    p = tmp_path / "policy.yaml"
    p.write_text("rule: all\nrule: any\nauthorities: []\n")
    with pytest.raises(PolicyError, match="duplicate key 'rule'"):
        load_policy_file(p)
