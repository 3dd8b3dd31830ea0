"""in-toto statements as cosign v3 attests them: predicate types, building, strict reading.

Building (:func:`build_statement`) follows ``cosign attest`` (sigstore/cosign
``pkg/cosign/attestation/attestation.go``, ``GenerateStatement``):

- ``--type`` names map to predicate type URIs exactly as cosign's ``PredicateTypeMap``
  (:data:`PREDICATE_TYPES`); anything else must be an absolute URI, used as is;
- ``custom`` wraps the file, unparsed, as ``{"Data": "<file text>", "Timestamp": "<RFC 3339
  now>"}``; ``spdx`` keeps the file as a JSON string; every other type parses it as a JSON
  object (``slsaprovenance`` must carry ``builder`` and ``buildType``, as cosign requires;
  ``slsaprovenance1`` gets cosign's ``invocationID`` -> ``invocationId`` rename);
- one subject, ``{"name": <repository>, "digest": {"sha256": <hex>}}``.

One deliberate difference: ``_type`` is ``https://in-toto.io/Statement/v1`` (the current
in-toto spec, and what ``cosign sign`` v3 writes), where cosign 3.0.2 ``attest`` still writes
``.../Statement/v0.1``. The two differ only in that name; cosign's verifier and ours read both.

Reading (:func:`parse_statement`) is strict and typed: a payload type other than in-toto
(:class:`PayloadTypeError`), a payload or predicate over the cap
(:class:`OversizedPredicateError`), anything that is not a statement with subjects and a
predicate type (:class:`MalformedStatementError`), a statement whose subjects do not name the
digest (:class:`DigestMismatchError`). JSON is read with :mod:`ocigitops.jsonsafe` (no duplicate
keys, at most 64 levels deep), so the predicate a CEL condition sees is the one Go would see.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from ocigitops import jsonsafe
from ocigitops.artifact import go_json
from ocigitops.errors import MalformedDocumentError, UsageError
from ocigitops.verifier.errors import (
    DigestMismatchError,
    MalformedStatementError,
    OversizedPredicateError,
    PayloadTypeError,
)
from ocigitops.verifier.simplesigning import check_digest

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
STATEMENT_V01 = "https://in-toto.io/Statement/v0.1"
STATEMENT_TYPES = frozenset({STATEMENT_V1, STATEMENT_V01})

COSIGN_CUSTOM = "https://cosign.sigstore.dev/attestation/v1"
COSIGN_VULN = "https://cosign.sigstore.dev/attestation/vuln/v1"
SLSA_PROVENANCE_02 = "https://slsa.dev/provenance/v0.2"
SLSA_PROVENANCE_1 = "https://slsa.dev/provenance/v1"

#: cosign's ``--type`` names (``options.PredicateTypeMap``, cosign 3.0.2).
PREDICATE_TYPES: Mapping[str, str] = {
    "custom": COSIGN_CUSTOM,
    "slsaprovenance": SLSA_PROVENANCE_02,
    "slsaprovenance02": SLSA_PROVENANCE_02,
    "slsaprovenance1": SLSA_PROVENANCE_1,
    "spdx": "https://spdx.dev/Document",
    "spdxjson": "https://spdx.dev/Document",
    "cyclonedx": "https://cyclonedx.org/bom",
    "link": "https://in-toto.io/Link/v1",
    "vuln": COSIGN_VULN,
    "openvex": "https://openvex.dev/ns",
}

#: The largest predicate we write or read (its compact JSON). A trivy report of a large
#: tree is some hundreds of KiB; a bigger predicate is refused before it is parsed further.
MAX_PREDICATE_BYTES = 1 << 20
#: The DSSE payload (statement) cap: the predicate plus room for subjects and names.
MAX_STATEMENT_BYTES = MAX_PREDICATE_BYTES + (64 << 10)
#: The bundle cap for attestations: base64 of the statement plus verification material.
MAX_ATTESTATION_BUNDLE_BYTES = MAX_STATEMENT_BYTES * 4 // 3 + (256 << 10)


def predicate_type_uri(type_: str) -> str:
    """The predicate type URI of a cosign ``--type`` name, or ``type_`` if it is a URI.

    As cosign's ``ParsePredicateType``: a known name, else an absolute URI (scheme and
    location, or a ``urn:``); anything else is a :class:`UsageError`.
    """
    if type_ in PREDICATE_TYPES:
        return PREDICATE_TYPES[type_]
    parts = urlsplit(type_)
    if parts.scheme and (parts.netloc or parts.scheme == "urn") and " " not in type_:
        return type_
    raise UsageError(f"invalid predicate type {type_!r}: use one of "
                     f"{', '.join(PREDICATE_TYPES)}, or a URI")


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_object(raw: bytes, type_: str) -> dict[str, Any]:
    try:
        doc = jsonsafe.loads(raw, f"{type_} predicate")
    except MalformedDocumentError as e:
        raise UsageError(str(e)) from e
    if not isinstance(doc, dict):
        raise UsageError(f"the {type_} predicate must be a JSON object")
    return doc


def build_predicate(type_: str, raw: bytes, *, now: datetime | None = None) -> Any:
    """The predicate cosign puts in the statement for ``--type type_`` and file ``raw``."""
    uri = predicate_type_uri(type_)
    if uri == COSIGN_CUSTOM:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UsageError("the custom predicate file is not UTF-8 text") from e
        return {"Data": text, "Timestamp": _rfc3339(now or datetime.now(UTC))}
    if type_ == "spdx":
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UsageError("the spdx predicate file is not UTF-8 text") from e
    doc = _json_object(raw, type_)
    if uri == SLSA_PROVENANCE_02:
        missing = [f for f in ("builder", "buildType") if f not in doc]
        if missing:
            raise UsageError(f"provenance predicate: required field {missing[0]} missing")
    if uri == SLSA_PROVENANCE_1:
        meta = (doc.get("runDetails") or {}).get("metadata") \
            if isinstance(doc.get("runDetails"), dict) else None
        if isinstance(meta, dict) and "invocationID" in meta:
            meta["invocationId"] = meta.pop("invocationID")
    return doc


def build_statement(repository: str, digest: str, predicate_type: str,
                    predicate: Any) -> bytes:
    """An in-toto Statement v1 about ``repository@digest`` (compact JSON, Go escaping).

    Refuses a predicate over :data:`MAX_PREDICATE_BYTES`: we never sign what we would
    refuse to read.
    """
    check_digest(digest)
    alg, _, hexd = digest.partition(":")
    if alg != "sha256":
        raise UsageError(f"attestations are made for sha256 digests only, not {alg}")
    size = len(go_json(predicate))
    if size > MAX_PREDICATE_BYTES:
        raise OversizedPredicateError(
            f"predicate is {size} bytes, over the {MAX_PREDICATE_BYTES}-byte cap")
    doc = {"_type": STATEMENT_V1,
           "subject": [{"name": repository, "digest": {"sha256": hexd}}],
           "predicateType": predicate_type, "predicate": predicate}
    return go_json(doc)


@dataclass(frozen=True)
class Statement:
    """A parsed in-toto statement: its type, subject digests, predicate type and predicate."""

    type: str
    subjects: tuple[Mapping[str, Any], ...]
    predicate_type: str
    predicate: Any

    def names(self, digest: str) -> bool:
        """True when a subject's ``sha256`` digest is ``digest``'s."""
        alg, _, hexd = digest.partition(":")
        return any(isinstance(s.get("digest"), dict) and s["digest"].get(alg) == hexd
                   for s in self.subjects)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


def parse_statement(payload_type: str, payload: bytes, *, digest: str | None = None,
                    max_predicate: int = MAX_PREDICATE_BYTES) -> Statement:
    """Read a DSSE payload as an in-toto statement, strictly; see the module docstring.

    ``digest``, when given, must be one of the subjects' digests.
    """
    if payload_type != INTOTO_PAYLOAD_TYPE:
        raise PayloadTypeError(
            f"DSSE payload type {_short(payload_type)} is not {INTOTO_PAYLOAD_TYPE}")
    if len(payload) > max_predicate + (64 << 10):
        raise OversizedPredicateError(
            f"in-toto statement is {len(payload)} bytes, over the cap for a "
            f"{max_predicate}-byte predicate")
    try:
        doc = jsonsafe.loads(payload, "in-toto statement")
    except MalformedDocumentError as e:
        raise MalformedStatementError(str(e)) from e
    if not isinstance(doc, dict):
        raise MalformedStatementError("in-toto statement is not a JSON object")
    stype = doc.get("_type")
    if stype not in STATEMENT_TYPES:
        raise MalformedStatementError(f"in-toto statement _type {_short(stype)} is not "
                                      f"{STATEMENT_V1} (or v0.1)")
    subjects = doc.get("subject")
    if not isinstance(subjects, list) or not subjects or \
            not all(isinstance(s, dict) and isinstance(s.get("digest"), dict)
                    for s in subjects):
        raise MalformedStatementError("in-toto statement has no subjects with digests")
    ptype = doc.get("predicateType")
    if not isinstance(ptype, str) or not ptype:
        raise MalformedStatementError("in-toto statement has no predicateType")
    if "predicate" not in doc:
        raise MalformedStatementError("in-toto statement has no predicate")
    predicate = doc["predicate"]
    size = len(json.dumps(predicate, separators=(",", ":"), ensure_ascii=False).encode())
    if size > max_predicate:
        raise OversizedPredicateError(
            f"predicate is {size} bytes, over the {max_predicate}-byte cap")
    st = Statement(stype, tuple(subjects), ptype, predicate)
    if digest is not None and not st.names(digest):
        raise DigestMismatchError(f"in-toto statement has no subject with digest {digest}")
    return st


#: Where a predicate records when it was made, by predicate type: the signer's own,
#: signed, claim of time, used for ``maxAge`` when the bundle has no transparency-log
#: entry and no RFC 3161 timestamp (key-signed offline, as ours are).
PREDICATE_TIME_FIELDS: Mapping[str, tuple[tuple[str, ...], ...]] = {
    COSIGN_CUSTOM: (("Timestamp",),),
    SLSA_PROVENANCE_02: (("metadata", "buildFinishedOn"), ("metadata", "buildStartedOn")),
    SLSA_PROVENANCE_1: (("runDetails", "metadata", "finishedOn"),
                        ("runDetails", "metadata", "startedOn")),
    COSIGN_VULN: (("metadata", "scanFinishedOn"),),
    "https://openvex.dev/ns": (("timestamp",),),
    "https://cyclonedx.org/bom": (("metadata", "timestamp"),),
    "https://spdx.dev/Document": (("creationInfo", "created"),),
}
#: Tried for any other predicate type (trivy's JSON report has ``CreatedAt``).
GENERIC_TIME_FIELDS: tuple[tuple[str, ...], ...] = (
    ("CreatedAt",), ("Timestamp",), ("timestamp",), ("metadata", "timestamp"))


def parse_time(value: str) -> datetime:
    """An RFC 3339 time (``Z`` or an offset, fractional seconds allowed), timezone-aware."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python 3.11 reads at most 6 fractional digits; Go writes up to 9.
    head, dot, rest = text.partition(".")
    if dot:
        frac = re.match(r"[0-9]*", rest)
        digits = frac.group(0) if frac else ""
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        raise ValueError(f"time {value!r} has no timezone")
    return t


def predicate_time(st: Statement) -> tuple[datetime, str] | None:
    """The predicate's own timestamp and the field it came from, or None."""
    paths = PREDICATE_TIME_FIELDS.get(st.predicate_type, GENERIC_TIME_FIELDS)
    for path in paths:
        node: Any = st.predicate
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str):
            try:
                return parse_time(node), "predicate." + ".".join(path)
            except ValueError:
                continue
    return None
