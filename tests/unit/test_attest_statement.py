"""in-toto statements as cosign v3 attests them: predicate types, predicates, strict reading.

The expected predicate type URIs and predicate shapes are cosign 3.0.2's
(``options.PredicateTypeMap``, ``attestation.GenerateStatement``); the statement produced by
the real ``cosign attest`` binary is read in tests/integration/test_attest_interop.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from ocigitops.artifact import go_json
from ocigitops.errors import UsageError
from ocigitops.verifier.errors import (
    DigestMismatchError,
    MalformedStatementError,
    OversizedPredicateError,
    PayloadTypeError,
)
from ocigitops.verifier.intoto import (
    INTOTO_PAYLOAD_TYPE,
    MAX_PREDICATE_BYTES,
    STATEMENT_V1,
    build_predicate,
    build_statement,
    parse_statement,
    parse_time,
    predicate_time,
    predicate_type_uri,
)

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("name", "uri"), [
    ("custom", "https://cosign.sigstore.dev/attestation/v1"),
    ("slsaprovenance", "https://slsa.dev/provenance/v0.2"),
    ("slsaprovenance02", "https://slsa.dev/provenance/v0.2"),
    ("slsaprovenance1", "https://slsa.dev/provenance/v1"),
    ("spdx", "https://spdx.dev/Document"),
    ("spdxjson", "https://spdx.dev/Document"),
    ("cyclonedx", "https://cyclonedx.org/bom"),
    ("link", "https://in-toto.io/Link/v1"),
    ("vuln", "https://cosign.sigstore.dev/attestation/vuln/v1"),
    ("openvex", "https://openvex.dev/ns"),
    ("https://ocigitops.dev/attestations/trivy-config/v1",
     "https://ocigitops.dev/attestations/trivy-config/v1"),
    ("urn:example:thing", "urn:example:thing"),
])
def test_predicate_types_as_cosign_maps_them(name: str, uri: str) -> None:
    assert predicate_type_uri(name) == uri


@pytest.mark.parametrize("bad", ["", "slsa", "Custom", "not a uri", "/relative/path"])
def test_unknown_predicate_type_is_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="invalid predicate type"):
        predicate_type_uri(bad)


def test_custom_predicate_wraps_the_file_as_cosign_does() -> None:
    raw = b'{"hello": "world"}\n'
    assert build_predicate("custom", raw, now=NOW) == {
        "Data": '{"hello": "world"}\n', "Timestamp": "2026-03-01T12:00:00Z"}


def test_json_predicates_are_objects() -> None:
    doc = {"builder": {"id": "https://ci"}, "buildType": "https://t"}
    assert build_predicate("slsaprovenance", json.dumps(doc).encode()) == doc
    assert build_predicate("https://example.com/p", b'{"a": 1}') == {"a": 1}
    with pytest.raises(UsageError, match="must be a JSON object"):
        build_predicate("cyclonedx", b"[1, 2]")
    with pytest.raises(UsageError, match="twice"):
        build_predicate("openvex", b'{"a": 1, "a": 2}')


def test_slsa02_requires_builder_and_build_type_as_cosign() -> None:
    with pytest.raises(UsageError, match="required field builder missing"):
        build_predicate("slsaprovenance", b'{"buildType": "x"}')


def test_slsa1_renames_invocation_id_as_cosign() -> None:
    raw = b'{"runDetails": {"metadata": {"invocationID": "42"}}}'
    assert build_predicate("slsaprovenance1", raw) == {
        "runDetails": {"metadata": {"invocationId": "42"}}}


def test_statement_is_in_toto_v1_with_named_subject() -> None:
    raw = build_statement("reg.example/team/app", DIGEST, "https://p", {"k": "<v>"})
    doc = json.loads(raw)
    assert doc == {"_type": STATEMENT_V1,
                   "subject": [{"name": "reg.example/team/app", "digest": {"sha256": "ab" * 32}}],
                   "predicateType": "https://p", "predicate": {"k": "<v>"}}
    assert b"\\u003cv\\u003e" in raw  # Go's escaping, as cosign's marshaller writes it


def test_statement_refuses_a_predicate_over_the_cap() -> None:
    with pytest.raises(OversizedPredicateError):
        build_statement("r", DIGEST, "https://p", {"x": "a" * MAX_PREDICATE_BYTES})


def _payload(doc: object) -> bytes:
    return go_json(doc)


def _stmt(**over: object) -> dict[str, object]:
    doc: dict[str, object] = {"_type": STATEMENT_V1,
                              "subject": [{"name": "r", "digest": {"sha256": "ab" * 32}}],
                              "predicateType": "https://p", "predicate": {"a": 1}}
    doc.update(over)
    return doc


def test_parse_reads_v1_and_cosigns_v01() -> None:
    st = parse_statement(INTOTO_PAYLOAD_TYPE, _payload(_stmt()), digest=DIGEST)
    assert st.predicate_type == "https://p" and st.predicate == {"a": 1}
    old = _stmt(_type="https://in-toto.io/Statement/v0.1")
    assert parse_statement(INTOTO_PAYLOAD_TYPE, _payload(old), digest=DIGEST).predicate == {"a": 1}


def test_parse_refuses_another_payload_type() -> None:
    with pytest.raises(PayloadTypeError, match=r"is not application/vnd\.in-toto"):
        parse_statement("application/vnd.dev.cosign.simplesigning.v1+json", _payload(_stmt()))


@pytest.mark.parametrize("payload", [
    b"not json", b"[]", b'{"_type": "x"}',
    go_json(_stmt(_type="https://in-toto.io/Statement/v2")),
    go_json(_stmt(subject=[])), go_json(_stmt(subject=[{"name": "r"}])),
    go_json(_stmt(predicateType="")),
    go_json({k: v for k, v in _stmt().items() if k != "predicate"}),
    b'{"_type": "https://in-toto.io/Statement/v1", "_type": "https://in-toto.io/Statement/v1"}',
    b"[" * 100 + b"]" * 100,
])
def test_malformed_statements_are_refused(payload: bytes) -> None:
    with pytest.raises(MalformedStatementError):
        parse_statement(INTOTO_PAYLOAD_TYPE, payload)


def test_subject_digest_must_match() -> None:
    with pytest.raises(DigestMismatchError, match=OTHER):
        parse_statement(INTOTO_PAYLOAD_TYPE, _payload(_stmt()), digest=OTHER)


def test_predicate_over_the_cap_is_refused() -> None:
    big = _payload(_stmt(predicate={"x": "a" * 2000}))
    with pytest.raises(OversizedPredicateError, match="over the 1000-byte cap"):
        parse_statement(INTOTO_PAYLOAD_TYPE, big, max_predicate=1000)
    huge = b" " * (200 << 10) + _payload(_stmt())
    with pytest.raises(OversizedPredicateError, match="in-toto statement is"):
        parse_statement(INTOTO_PAYLOAD_TYPE, huge, max_predicate=1000)


@pytest.mark.parametrize(("ptype", "predicate", "field"), [
    ("https://cosign.sigstore.dev/attestation/v1",
     {"Data": "x", "Timestamp": "2026-03-01T11:00:00Z"}, "predicate.Timestamp"),
    ("https://slsa.dev/provenance/v0.2",
     {"metadata": {"buildFinishedOn": "2026-03-01T11:00:00Z"}},
     "predicate.metadata.buildFinishedOn"),
    ("https://slsa.dev/provenance/v1",
     {"runDetails": {"metadata": {"finishedOn": "2026-03-01T13:00:00+02:00"}}},
     "predicate.runDetails.metadata.finishedOn"),
    ("https://ocigitops.dev/attestations/trivy-config/v1",
     {"CreatedAt": "2026-03-01T11:00:00.123456789Z"}, "predicate.CreatedAt"),
])
def test_predicate_time_by_type(ptype: str, predicate: object, field: str) -> None:
    st = parse_statement(INTOTO_PAYLOAD_TYPE,
                         _payload(_stmt(predicateType=ptype, predicate=predicate)))
    found = predicate_time(st)
    assert found is not None
    t, where = found
    assert where == field
    assert abs((NOW - t).total_seconds() - 3600) < 1


def test_predicate_time_absent_or_unreadable() -> None:
    for pred in ({}, {"Timestamp": "yesterday"}, {"Timestamp": "2026-03-01T11:00:00"}, "text"):
        st = parse_statement(INTOTO_PAYLOAD_TYPE, _payload(_stmt(
            predicateType="https://cosign.sigstore.dev/attestation/v1", predicate=pred)))
        assert predicate_time(st) is None
    with pytest.raises(ValueError):
        parse_time("2026-03-01 11:00")
