"""Keyless attestations with a real cosign bundle: the keyless path of
:mod:`ocigitops.verifier.attestations`, offline.

The vector is ``cosign/oci-attestation.sigstore.json`` (shared/testvectors, from
sigstore/cosign): a DSSE in-toto bundle v0.3 made by ``cosign attest`` keyless against the
public-good instance, with its ``trusted_root_pgi.json``. Its certificate names
``cody@soyland.com`` issued by ``https://github.com/login/oauth``; its statement (in-toto
v0.1, cosign's ``custom`` predicate) names one subject digest; its Rekor entry dates it
2025-02-28T19:18:11Z (the certificate is valid for ten minutes from then, so the
transparency-log time is what makes it verify today).

Checked: a keyless authority with the certificate's identity passes the requirement (with the
transparency-log time, conditions over the predicate); another identity, another issuer, a
key authority fail; the digest verified is the one the statement names, another one is
refused; ``maxAge`` is measured from the log time; a payload type other than in-toto is
refused before any signature check; and the same holds through the controller's mapping
(``spec.verify`` with a keyless authority whose trusted root comes from a Secret).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ocigitops.puller.api import parse_oci_repository
from ocigitops.puller.api.verification import build_signature_policy
from ocigitops.verifier.bundles import load_trusted_root
from ocigitops.verifier.keys import generate_key_pair
from ocigitops.verifier.policy import Candidates, PolicyResult, evaluate, parse_policy
from tests.helpers.vectors import COSIGN, vectors

pytestmark = pytest.mark.unit

ISSUER = "https://github.com/login/oauth"
EMAIL = "cody@soyland.com"
CUSTOM = "https://cosign.sigstore.dev/attestation/v1"
#: The Rekor integrated time of the vector's entry.
LOGGED = datetime(2025, 2, 28, 19, 18, 11, tzinfo=UTC)


@pytest.fixture(scope="module")
def bundle() -> bytes:
    return (vectors(COSIGN) / "oci-attestation.sigstore.json").read_bytes()


@pytest.fixture(scope="module")
def statement(bundle: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(base64.b64decode(
        json.loads(bundle)["dsseEnvelope"]["payload"]))
    return doc


@pytest.fixture(scope="module")
def digest(statement: dict[str, Any]) -> str:
    return "sha256:" + str(statement["subject"][0]["digest"]["sha256"])


def _policy(identity: dict[str, Any], *, max_age: str | None = None,
            conditions: tuple[str, ...] = ("predicate.Data.contains('\"foo\"')",),
            key: bool = False) -> dict[str, Any]:
    auths: list[dict[str, Any]] = [{"name": "ci", "keyless": {"identities": [identity]}}]
    if key:
        auths.append({"name": "release-key", "cosign": {"keys": [
            generate_key_pair(b"pw", scrypt_n=1 << 12).public_pem.decode()]}})
    req: dict[str, Any] = {"name": "custom", "predicateType": "custom",
                           "authorities": ["release-key" if key else "ci"],
                           "conditions": list(conditions)}
    if max_age is not None:
        req["maxAge"] = max_age
    return {"authorities": auths, "attestations": [req]}


def _eval(doc: dict[str, Any], digest: str, *bundles: bytes,
          now: datetime = LOGGED + timedelta(minutes=10)) -> PolicyResult:
    root = load_trusted_root(vectors(COSIGN) / "trusted_root_pgi.json")
    return evaluate(parse_policy(doc, trusted_root=root), digest, Candidates(bundles=bundles),
                    repository="127.0.0.1:60943/repo", now=now)


def test_statement_is_what_the_vector_says(statement: dict[str, Any]) -> None:
    assert statement["_type"] == "https://in-toto.io/Statement/v0.1"
    assert statement["predicateType"] == CUSTOM
    assert statement["predicate"]["Timestamp"] == "2025-02-28T19:18:11Z"


def test_keyless_authority_with_the_certificate_identity_passes(bundle: bytes,
                                                                digest: str) -> None:
    result = _eval(_policy({"issuer": ISSUER, "subject": EMAIL}, max_age="1h"), digest, bundle)
    (att,) = result.attestations
    assert att.passed, att.reason
    assert (att.found, att.verified, att.authority) == (1, 1, "ci")
    assert att.signer is not None and att.signer.subject == EMAIL
    assert att.signer.issuer == ISSUER
    # The transparency log dates it, not the predicate's own Timestamp.
    assert att.signed_at == LOGGED and att.time_source == "transparency log or timestamp"
    assert [c.passed for c in att.conditions] == [True]
    # An attestation is never a signature: the signature rule fails on its own.
    assert not result.passed and not result.authorities[0].passed
    assert "attestation" in result.authorities[0].reason


def test_regular_expressions_match_too(bundle: bytes, digest: str) -> None:
    result = _eval(_policy({"issuerRegExp": r"^https://github\.com/login/",
                            "subjectRegExp": r"@soyland\.com$"}), digest, bundle)
    assert result.attestations[0].passed, result.attestations[0].reason


@pytest.mark.parametrize(("identity", "why"), [
    ({"issuer": ISSUER, "subject": "mallory@soyland.com"},
     "certificate identities ['cody@soyland.com'] do not match"),
    ({"issuer": "https://token.actions.githubusercontent.com", "subject": EMAIL},
     f"issuer '{ISSUER}' is not 'https://token.actions.githubusercontent.com'"),
    ({"issuer": ISSUER, "subjectRegExp": "^someone-else@"},
     "certificate identities ['cody@soyland.com'] do not match"),
])
def test_another_identity_fails(bundle: bytes, digest: str, identity: dict[str, Any],
                                why: str) -> None:
    (att,) = _eval(_policy(identity), digest, bundle).attestations
    assert not att.passed and att.found == 1 and att.verified == 0
    assert "none signed by ci" in att.reason and "IdentityMismatchError" in att.reason
    assert why in att.reason, att.reason


def test_a_key_authority_does_not_accept_a_keyless_attestation(bundle: bytes,
                                                               digest: str) -> None:
    doc = _policy({"issuer": ISSUER, "subject": EMAIL}, key=True)
    (att,) = _eval(doc, digest, bundle).attestations
    assert not att.passed and "keyless bundle, not signed with a key" in att.reason


def test_the_subject_digest_is_the_statement_s(bundle: bytes, digest: str) -> None:
    other = "sha256:" + "1" * 64
    (att,) = _eval(_policy({"issuer": ISSUER, "subject": EMAIL}), other, bundle).attestations
    assert not att.passed and att.found == 0
    assert att.reason.startswith(f"no attestation of type {CUSTOM} found; bundle 0: "
                                 "DigestMismatchError: in-toto statement has no subject "
                                 f"with digest {other}"), att.reason
    assert digest != other


def test_max_age_counts_from_the_log_time(bundle: bytes, digest: str) -> None:
    doc = _policy({"issuer": ISSUER, "subject": EMAIL}, max_age="24h")
    assert _eval(doc, digest, bundle, now=LOGGED + timedelta(hours=23)).attestations[0].passed
    (att,) = _eval(doc, digest, bundle, now=LOGGED + timedelta(hours=25)).attestations
    assert not att.passed and "older than maxAge 24h" in att.reason
    assert "2025-02-28T19:18:11+00:00" in att.reason


def test_a_failing_or_erroring_condition_fails(bundle: bytes, digest: str) -> None:
    ident = {"issuer": ISSUER, "subject": EMAIL}
    (att,) = _eval(_policy(ident, conditions=("predicate.Data == 'other'",)), digest,
                   bundle).attestations
    assert not att.passed and att.failed_condition == "predicate.Data == 'other'"
    (att,) = _eval(_policy(ident, conditions=("predicate.missing.field == 1",)), digest,
                   bundle).attestations
    assert not att.passed and "error" in att.reason


def test_another_payload_type_is_refused_before_the_signature(bundle: bytes,
                                                              digest: str) -> None:
    doc = json.loads(bundle)
    doc["dsseEnvelope"]["payloadType"] = "application/vnd.dev.cosign.simplesigning.v1+json"
    (att,) = _eval(_policy({"issuer": ISSUER, "subject": EMAIL}), digest,
                   json.dumps(doc).encode()).attestations
    assert not att.passed and att.found == 0
    assert "PayloadTypeError" in att.reason


def test_through_the_controller_mapping(bundle: bytes, digest: str) -> None:
    """``spec.verify`` (policy form) with a keyless authority whose trusted root is in a
    Secret, and an attestation requirement: the controller's policy verifies the vector."""
    obj = {"apiVersion": "ocigitops.dev/v1", "kind": "OCIRepository",
           "metadata": {"name": "app", "namespace": "apps"},
           "spec": {"url": "oci://127.0.0.1:60943/repo", "interval": "5m", "verify": {
               "authorities": [{"name": "ci", "keyless": {
                   "identities": [{"issuer": ISSUER, "subject": EMAIL}],
                   "trustedRootSecretRef": {"name": "pgi-root"}}}],
               "attestations": [{"name": "custom", "predicateType": "custom",
                                 "authorities": ["ci"], "maxAge": "1h",
                                 "conditions": ["predicate.Data.contains('foo')"]}]}}}
    verify = parse_oci_repository(obj).spec.verify
    assert verify is not None
    root = (vectors(COSIGN) / "trusted_root_pgi.json").read_bytes()
    policy = build_signature_policy(verify, {"pgi-root": {"trusted_root.json": root}})
    result = evaluate(policy, digest, Candidates(bundles=[bundle]),
                      repository="127.0.0.1:60943/repo", now=LOGGED + timedelta(minutes=30))
    (att,) = result.attestations
    assert att.passed and att.signer is not None and att.signer.subject == EMAIL
    late = evaluate(policy, digest, Candidates(bundles=[bundle]),
                    repository="127.0.0.1:60943/repo", now=LOGGED + timedelta(hours=2))
    assert not late.attestations[0].passed
    assert "older than maxAge 1h" in late.attestations[0].reason
