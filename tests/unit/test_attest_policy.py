"""Attestation requirements of a signature policy: parsing (CEL compiled at load), and
evaluation over key-signed DSSE bundles built in memory (ours; cosign's are exercised in
tests/integration/test_attest_interop.py).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ocigitops.artifact import go_json
from ocigitops.publisher.sign_cosign import build_key_bundle
from ocigitops.publisher.sign_cosign import build_statement as build_sign_statement
from ocigitops.verifier.conditions import KNOWN_FUNCTIONS, compile_condition
from ocigitops.verifier.errors import ConditionCompileError, PolicyError
from ocigitops.verifier.intoto import build_statement
from ocigitops.verifier.keys import public_key_pem
from ocigitops.verifier.policy import Candidates, PolicyResult, evaluate, parse_policy
from ocigitops.verifier.verify import load_policy_file

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
TRIVY = "https://ocigitops.dev/attestations/trivy-config/v1"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NO_HIGH = ("!predicate.Results.exists(r, has(r.Misconfigurations) && "
           "r.Misconfigurations.exists(m, m.Severity in ['HIGH', 'CRITICAL']))")


@pytest.fixture(scope="module")
def ci_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def other_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _doc(key: Any, *attestations: dict[str, Any], keyless: bool = False) -> dict[str, Any]:
    auths: list[dict[str, Any]] = [
        {"name": "release-key", "cosign": {"keys": [public_key_pem(key).decode()]}}]
    if keyless:
        auths.append({"name": "ci", "keyless": {"identities": [
            {"issuer": "https://token.actions.githubusercontent.com",
             "subjectRegExp": "^https://github.com/acme/"}]}})
    return {"rule": "any", "authorities": auths, "attestations": list(attestations)}


def _req(**over: Any) -> dict[str, Any]:
    req: dict[str, Any] = {"name": "no-high-misconfig", "predicateType": TRIVY,
                           "authorities": ["release-key"], "maxAge": "168h",
                           "conditions": [NO_HIGH]}
    req.update(over)
    return req


def _report(*severities: str, created: datetime = NOW - timedelta(hours=1)) -> dict[str, Any]:
    return {"CreatedAt": created.isoformat().replace("+00:00", "Z"), "Results": [
        {"Target": "deploy/a.yaml"},
        {"Target": "deploy/b.yaml",
         "Misconfigurations": [{"ID": f"KSV{i}", "Severity": s}
                               for i, s in enumerate(severities)]}]}


def _attestation(key: Any, predicate: Any, *, digest: str = DIGEST,
                 ptype: str = TRIVY) -> bytes:
    return build_key_bundle(key, build_statement("reg.example/app", digest, ptype, predicate))


def _signature(key: Any) -> bytes:
    return build_key_bundle(key, build_sign_statement(None, DIGEST))


def _eval(doc: dict[str, Any], *bundles: bytes, now: datetime = NOW) -> PolicyResult:
    return evaluate(parse_policy(doc), DIGEST, Candidates(bundles=list(bundles)),
                    repository="reg.example/app", now=now)


# -- loading ---------------------------------------------------------------------------------

def test_policy_loads_the_issue_example(ci_key: Any, tmp_path: Path) -> None:
    (tmp_path / "cosign.pub").write_bytes(public_key_pem(ci_key))
    (tmp_path / "policy.yaml").write_text(f"""
rule: any
authorities:
  - name: release-key
    cosign: {{keys: [cosign.pub]}}
attestations:
  - name: no-high-misconfig
    predicateType: {TRIVY}
    authorities: [release-key]
    maxAge: 168h
    conditions:
      - "{NO_HIGH}"
  - name: provenance
    predicateType: slsaprovenance1
    authorities: [release-key]
""")
    p = load_policy_file(tmp_path / "policy.yaml")
    assert [a.name for a in p.attestations] == ["no-high-misconfig", "provenance"]
    assert p.attestations[0].max_age == 168 * 3600
    assert p.attestations[1].predicate_type == "https://slsa.dev/provenance/v1"
    assert p.attestations[1].conditions == () and p.attestations[1].max_age is None


@pytest.mark.parametrize(("expr", "where"), [
    ("predicate.Results.exists(r, r.x ==)", "line 1, column 35"),
    ("predicate.a &&\n  predicate.b ==", "line 2, column 17"),
    ("predicate.builder.id.startWith('x')", "unknown function 'startWith' at line 1, column 22"),
    ("now > predicate.t", "unknown variable 'now' at line 1, column 1"),
    ("predicate.a == 'unterminated", "line 1, column 16"),
])
def test_a_condition_that_does_not_compile_is_refused_at_load(ci_key: Any, expr: str,
                                                              where: str) -> None:
    with pytest.raises(ConditionCompileError) as info:
        parse_policy(_doc(ci_key, _req(conditions=["true", expr])))
    msg = str(info.value)
    assert "attestation 'no-high-misconfig' condition 2" in msg and where in msg, msg
    assert "\n" not in msg


@pytest.mark.parametrize(("req", "match"), [
    (_req(authorities=["nobody"]), "no authority named 'nobody'"),
    (_req(authorities=[]), "authorities must list"),
    (_req(predicateType="not a type"), "invalid predicate type"),
    (_req(maxAge="a week"), "maxAge: invalid duration"),
    (_req(maxAge="-1h"), "maxAge must be positive"),
    (_req(conditions="true"), "conditions must be a list"),
    (_req(conditions=[""]), "non-empty string"),
    (_req(conditions=["x" * 10_001]), "over the 10000 cap"),
    (_req(severity="HIGH"), "unknown field"),
    ({"predicateType": TRIVY, "authorities": ["release-key"]}, "has no name"),
])
def test_bad_requirements_are_refused(ci_key: Any, req: dict[str, Any], match: str) -> None:
    with pytest.raises(PolicyError, match=match):
        parse_policy(_doc(ci_key, req))


def test_duplicate_names_and_notation_authorities_are_refused(ci_key: Any) -> None:
    with pytest.raises(PolicyError, match="unique"):
        parse_policy(_doc(ci_key, _req(), _req()))
    doc = _doc(ci_key, _req(authorities=["n"]))
    doc["authorities"].append({"name": "n", "notation": {"trustPolicy": {
        "version": "1.0", "trustPolicies": [{
            "name": "p", "registryScopes": ["*"],
            "signatureVerification": {"level": "strict"},
            "trustStores": ["ca:x"], "trustedIdentities": ["*"]}]},
        "trustStores": {}}})
    with pytest.raises(PolicyError, match="is notation"):
        parse_policy(doc)


def test_known_functions_exist_in_the_cel_library() -> None:
    """Every function we accept at load time is one the library evaluates."""
    import cel

    for fn in sorted(KNOWN_FUNCTIONS):
        prog = cel.compile(f"{fn}")  # a bare name compiles; evaluation says if it exists
        assert prog is not None
    samples = {"size": "size('ab') == 2", "contains": "'abc'.contains('b')",
               "startsWith": "'abc'.startsWith('a')", "endsWith": "'abc'.endsWith('c')",
               "matches": "'abc'.matches('^a')", "int": "int('1') == 1",
               "uint": "uint(1) == 1u", "double": "double(1) == 1.0",
               "string": "string(1) == '1'", "bytes": "bytes('a') == b'a'",
               "timestamp": "timestamp('2020-01-01T00:00:00Z').getFullYear() == 2020",
               "duration": "duration('1h') > duration('1m')", "type": "type(1) == int",
               "dyn": "dyn(1) == 1"}
    for fn, expr in samples.items():
        assert compile_condition(expr, fn).check({}).passed, fn
    t = "timestamp('2020-01-01T00:00:00Z')"
    for fn in KNOWN_FUNCTIONS - set(samples) - {"getFullYear"}:
        r = compile_condition(f"{t}.{fn}() >= 0", fn).check({})
        assert r.passed, (fn, r.reason)


# -- evaluation ------------------------------------------------------------------------------

def test_clean_report_passes(ci_key: Any) -> None:
    r = _eval(_doc(ci_key, _req()), _signature(ci_key),
              _attestation(ci_key, _report("LOW", "MEDIUM")))
    assert r.passed, r.summary()
    a = r.attestations[0]
    assert a.passed and a.found == 1 and a.verified == 1 and a.authority == "release-key"
    assert a.signer is not None and a.signer.kind == "key"
    assert a.time_source == "predicate.CreatedAt" and a.signed_at == NOW - timedelta(hours=1)
    assert "ok  attestation no-high-misconfig" in r.summary()


def test_failing_condition_fails_the_policy_and_names_it(ci_key: Any) -> None:
    r = _eval(_doc(ci_key, _req()), _signature(ci_key),
              _attestation(ci_key, _report("LOW", "CRITICAL")))
    assert not r.passed and r.authorities[0].passed
    a = r.attestations[0]
    assert a.failed_condition == NO_HIGH and "is false" in a.reason
    assert a.to_json()["failedCondition"] == NO_HIGH
    assert "FAIL attestation no-high-misconfig" in r.summary()
    assert any(f.startswith("attestation no-high-misconfig:") for f in r.failures())


@pytest.mark.parametrize("expr", [
    "predicate.Nope == 1",              # missing field
    "predicate.Results.size() / 0 == 1",  # division by zero
    "predicate.Results[0].Target + 1 == 2",  # type error
    "predicate.Results.size()",          # not a bool
])
def test_a_condition_that_errors_counts_as_failed(ci_key: Any, expr: str) -> None:
    r = _eval(_doc(ci_key, _req(conditions=[expr])), _signature(ci_key),
              _attestation(ci_key, _report()))
    a = r.attestations[0]
    assert not r.passed and not a.passed and a.failed_condition == expr, a.reason


def test_negated_error_is_not_a_pass(ci_key: Any) -> None:
    """``!`` over an expression that errors must not turn the error into true."""
    r = _eval(_doc(ci_key, _req(conditions=["!(predicate.Nope == 1)"])), _signature(ci_key),
              _attestation(ci_key, _report()))
    assert not r.passed


def test_any_passing_attestation_of_the_type_suffices(ci_key: Any) -> None:
    bad = _attestation(ci_key, _report("HIGH"))
    good = _attestation(ci_key, _report())
    assert _eval(_doc(ci_key, _req()), _signature(ci_key), bad, good).passed
    r = _eval(_doc(ci_key, _req()), _signature(ci_key), bad)
    assert not r.passed


def test_too_old_and_future_attestations_fail(ci_key: Any) -> None:
    old = _attestation(ci_key, _report(created=NOW - timedelta(days=8)))
    r = _eval(_doc(ci_key, _req()), _signature(ci_key), old)
    assert not r.passed and "older than maxAge 168h0m0s" in r.attestations[0].reason
    future = _attestation(ci_key, _report(created=NOW + timedelta(hours=1)))
    r = _eval(_doc(ci_key, _req()), _signature(ci_key), future)
    assert not r.passed and "in the future" in r.attestations[0].reason
    # without maxAge, age does not matter
    assert _eval(_doc(ci_key, _req(maxAge=None)), _signature(ci_key), old).passed


def test_max_age_without_any_signed_time_fails(ci_key: Any) -> None:
    pred = {"Results": []}
    r = _eval(_doc(ci_key, _req()), _signature(ci_key), _attestation(ci_key, pred))
    assert not r.passed and "maxAge needs a signed time" in r.attestations[0].reason
    assert _eval(_doc(ci_key, _req(maxAge=None)), _signature(ci_key),
                 _attestation(ci_key, pred)).passed


def test_wrong_key_is_not_an_authority(ci_key: Any, other_key: Any) -> None:
    r = _eval(_doc(ci_key, _req()), _signature(ci_key), _attestation(other_key, _report()))
    a = r.attestations[0]
    assert not r.passed and a.found == 1 and a.verified == 0
    assert "none signed by release-key" in a.reason


def test_wrong_subject_is_refused(ci_key: Any) -> None:
    r = _eval(_doc(ci_key, _req()), _signature(ci_key),
              _attestation(ci_key, _report(), digest=OTHER))
    a = r.attestations[0]
    assert not r.passed and a.found == 0 and "DigestMismatchError" in a.reason


def test_other_predicate_type_is_not_found(ci_key: Any) -> None:
    r = _eval(_doc(ci_key, _req()), _signature(ci_key),
              _attestation(ci_key, _report(), ptype="https://slsa.dev/provenance/v1"))
    a = r.attestations[0]
    assert not r.passed and "no attestation of type" in a.reason
    assert "https://slsa.dev/provenance/v1" in a.reason


def _envelope(raw: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(raw)
    return doc


def test_tampered_attestation_is_refused(ci_key: Any) -> None:
    doc = _envelope(_attestation(ci_key, _report("CRITICAL")))
    stmt = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    stmt["predicate"]["Results"] = []  # hide the finding, keep the signature
    doc["dsseEnvelope"]["payload"] = base64.b64encode(go_json(stmt)).decode()
    r = _eval(_doc(ci_key, _req()), _signature(ci_key), json.dumps(doc).encode())
    a = r.attestations[0]
    assert not r.passed and a.found == 1 and a.verified == 0, a.reason


def test_payload_type_other_than_in_toto_is_refused(ci_key: Any) -> None:
    doc = _envelope(_attestation(ci_key, _report()))
    doc["dsseEnvelope"]["payloadType"] = "application/json"
    r = _eval(_doc(ci_key, _req()), _signature(ci_key), json.dumps(doc).encode())
    assert not r.passed and "PayloadTypeError" in r.attestations[0].reason


def test_malformed_statement_and_oversized_predicate_are_refused(ci_key: Any) -> None:
    doc = _envelope(_attestation(ci_key, _report()))
    doc["dsseEnvelope"]["payload"] = base64.b64encode(b'{"_type": 1}').decode()
    r = _eval(_doc(ci_key, _req()), _signature(ci_key), json.dumps(doc).encode())
    assert not r.passed and "MalformedStatementError" in r.attestations[0].reason
    big = _report()
    big["Results"][0]["Padding"] = "x" * (1 << 20)
    stmt = go_json({"_type": "https://in-toto.io/Statement/v1",
                    "subject": [{"name": "r", "digest": {"sha256": DIGEST[7:]}}],
                    "predicateType": TRIVY, "predicate": big})
    r = _eval(_doc(ci_key, _req()), _signature(ci_key), build_key_bundle(ci_key, stmt))
    assert not r.passed and "OversizedPredicateError" in r.attestations[0].reason


def test_attestation_never_counts_as_signature_and_vice_versa(ci_key: Any) -> None:
    # Only an attestation: the signature rule fails even though the requirement passes.
    r = _eval(_doc(ci_key, _req()), _attestation(ci_key, _report()))
    assert not r.passed and r.attestations[0].passed and not r.authorities[0].passed
    # Only a signature: the requirement finds nothing.
    r = _eval(_doc(ci_key, _req()), _signature(ci_key))
    assert not r.passed and "no attestation of type" in r.attestations[0].reason


def test_keyless_authority_refuses_key_bundles(ci_key: Any) -> None:
    doc = _doc(ci_key, _req(authorities=["ci"]), keyless=True)
    r = _eval(doc, _signature(ci_key), _attestation(ci_key, _report()))
    a = r.attestations[0]
    assert not r.passed and "not keyless" in a.reason


def test_policy_without_attestations_is_unchanged(ci_key: Any) -> None:
    doc = _doc(ci_key)
    r = _eval(doc, _signature(ci_key))
    assert r.passed and r.attestations == ()
