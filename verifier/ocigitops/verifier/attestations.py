"""Attestation requirements of a signature policy (``attestations:``) and their evaluation.

A requirement says: an in-toto attestation of ``predicateType`` about the digest, signed by
one of the named ``authorities`` (cosign keys or keyless identities of the same policy),
no older than ``maxAge``, whose predicate satisfies every CEL ``condition``. It passes when
at least one attestation found for the digest does all of that (sigstore policy-controller's
reading: another, failing attestation of the same type does not veto it; a new scan of the
same bytes is a new digest's business only when the content changes). Every requirement
must pass, whatever the policy's signature ``rule``.

Each candidate bundle is first read without cryptography (payload type, size, statement
shape, predicate type, subject digest; :func:`ocigitops.verifier.intoto.parse_statement`), so
bad input is refused with a typed one-line reason; then its signature is checked against
each allowed authority; then its time; then the conditions. Any exception in any step is a
failure of that candidate with its reason, never a pass.

**Time for ``maxAge``.** The signed time is the bundle's verified transparency-log
integrated time or RFC 3161 timestamp when it has one. A key-signed bundle without either
(``--tlog-upload=false``, all ours: there is no Rekor here) has no time a third party
vouches for, so the predicate's own timestamp is used: a field the signer put inside the
signed statement (cosign's ``custom`` predicate ``Timestamp``, SLSA ``buildFinishedOn`` /
``finishedOn``, trivy's ``CreatedAt``...; :data:`ocigitops.verifier.intoto.PREDICATE_TIME_FIELDS`).
It is as trustworthy as the key that signed it. An attestation with neither fails a
requirement that has ``maxAge``; a time more than five minutes in the future fails too.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ocigitops import jsonsafe
from ocigitops.duration import format_duration, parse_duration
from ocigitops.errors import MalformedDocumentError
from ocigitops.verifier.conditions import Condition, ConditionResult, compile_condition
from ocigitops.verifier.errors import (
    AttestationTooOldError,
    MalformedSignatureError,
    PolicyError,
)
from ocigitops.verifier.intoto import (
    MAX_ATTESTATION_BUNDLE_BYTES,
    MAX_PREDICATE_BYTES,
    Statement,
    parse_statement,
    predicate_time,
    predicate_type_uri,
)
from ocigitops.verifier.results import SignatureVerification, Signer

if TYPE_CHECKING:
    from ocigitops.verifier.policy import Authority

#: Allowed clock skew for a signed time in the future.
FUTURE_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class AttestationRequirement:
    """One ``attestations:`` entry of a policy, with its conditions compiled."""

    name: str
    predicate_type: str
    authorities: tuple[str, ...]
    conditions: tuple[Condition, ...] = ()
    #: Seconds; None: any age.
    max_age: float | None = None
    max_predicate_bytes: int = MAX_PREDICATE_BYTES


@dataclass(frozen=True)
class AttestationResult:
    """Outcome of one requirement: found, signed by whom, when, which condition failed."""

    name: str
    predicate_type: str
    passed: bool
    reason: str
    #: Attestations of the predicate type that name the digest (before signature checks).
    found: int = 0
    #: Of those, how many an allowed authority signed.
    verified: int = 0
    authority: str | None = None
    signer: Signer | None = None
    signed_at: datetime | None = None
    #: ``transparency log or timestamp``, or the predicate field the time was read from.
    time_source: str | None = None
    failed_condition: str | None = None
    conditions: tuple[ConditionResult, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The ``-o json`` form."""
        return {
            "name": self.name, "predicateType": self.predicate_type, "passed": self.passed,
            "reason": self.reason, "found": self.found, "verified": self.verified,
            "authority": self.authority, "signer": str(self.signer) if self.signer else None,
            "signedAt": self.signed_at.isoformat() if self.signed_at else None,
            "timeSource": self.time_source, "failedCondition": self.failed_condition,
            "conditions": [{"expression": c.expression, "passed": c.passed,
                            "reason": c.reason} for c in self.conditions],
        }

    def line(self) -> str:
        """One line for the text report."""
        return (f"  {'ok ' if self.passed else 'FAIL'} attestation {self.name} "
                f"[{self.predicate_type}]: {self.reason}")


# -- the policy document ---------------------------------------------------------------------

_FIELDS = {"name", "predicateType", "authorities", "conditions", "maxAge"}


def parse_requirements(raw: Any, authority_kinds: Mapping[str, str]) \
        -> tuple[AttestationRequirement, ...]:
    """Parse ``attestations:``; ``authority_kinds`` maps each policy authority name to its
    kind (``cosign``, ``keyless``, ``notation``). Every problem is a :class:`PolicyError`
    (a CEL condition that does not compile: its subclass with the position)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise PolicyError("attestations must be a list")
    out: list[AttestationRequirement] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            raise PolicyError(f"attestation {i} is not an object")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise PolicyError(f"attestation {i} has no name")
        unknown = set(entry) - _FIELDS
        if unknown:
            raise PolicyError(f"attestation {name!r}: unknown field(s) {sorted(unknown)}")
        ptype = entry.get("predicateType")
        if not isinstance(ptype, str) or not ptype:
            raise PolicyError(f"attestation {name!r} has no predicateType")
        try:
            uri = predicate_type_uri(ptype)
        except Exception as e:
            raise PolicyError(f"attestation {name!r}: {e}") from e
        auths = entry.get("authorities")
        if not isinstance(auths, list) or not auths or \
                not all(isinstance(a, str) for a in auths):
            raise PolicyError(f"attestation {name!r}: authorities must list names of the "
                              "policy's authorities")
        for a in auths:
            kind = authority_kinds.get(a)
            if kind is None:
                raise PolicyError(f"attestation {name!r}: no authority named {a!r}")
            if kind == "notation":
                raise PolicyError(f"attestation {name!r}: authority {a!r} is notation; "
                                  "attestations are verified for cosign key and keyless "
                                  "authorities")
        conds = entry.get("conditions") or []
        if not isinstance(conds, list):
            raise PolicyError(f"attestation {name!r}: conditions must be a list")
        compiled = tuple(compile_condition(c, f"attestation {name!r} condition {j + 1}")
                         for j, c in enumerate(conds))
        max_age = entry.get("maxAge")
        seconds: float | None = None
        if max_age is not None:
            try:
                seconds = parse_duration(str(max_age))
            except ValueError as e:
                raise PolicyError(f"attestation {name!r}: maxAge: {e}") from e
            if seconds <= 0:
                raise PolicyError(f"attestation {name!r}: maxAge must be positive")
        out.append(AttestationRequirement(name, uri, tuple(auths), compiled, seconds))
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise PolicyError("attestation names must be unique")
    return tuple(out)


# -- evaluation ------------------------------------------------------------------------------

def _fmt(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_statement(raw: bytes, *, digest: str,
                   max_predicate: int = MAX_PREDICATE_BYTES) -> Statement | None:
    """The in-toto statement inside a bundle's DSSE envelope, read strictly but not yet
    trusted (no signature check); None for a bundle without an envelope (a message
    signature). Raises the typed errors of :func:`parse_statement`, and
    :class:`MalformedSignatureError` for an unreadable bundle."""
    if len(raw) > MAX_ATTESTATION_BUNDLE_BYTES:
        from ocigitops.verifier.errors import OversizedInputError

        raise OversizedInputError(f"bundle is {len(raw)} bytes, over the "
                                  f"{MAX_ATTESTATION_BUNDLE_BYTES}-byte cap")
    try:
        doc = jsonsafe.loads_object(raw, "sigstore bundle")
    except MalformedDocumentError as e:
        raise MalformedSignatureError(str(e)) from e
    env = doc.get("dsseEnvelope")
    if env is None:
        return None
    if not isinstance(env, dict):
        raise MalformedSignatureError("bundle dsseEnvelope is not an object")
    ptype, payload = env.get("payloadType"), env.get("payload")
    if not isinstance(ptype, str) or not isinstance(payload, str):
        raise MalformedSignatureError("bundle DSSE envelope has no payload or payload type")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MalformedSignatureError("bundle DSSE payload is not base64") from e
    return parse_statement(ptype, data, digest=digest, max_predicate=max_predicate)


def _verify(authority: Authority, raw: bytes, digest: str, predicate_type: str) \
        -> SignatureVerification:
    """Verify ``raw`` with one authority: any of its keys, or any of its identities."""
    from ocigitops.verifier.bundles import (
        is_key_bundle,
        verify_bundle_keyless,
        verify_bundle_with_key,
    )
    from ocigitops.verifier.policy import CosignKeyAuthority, CosignKeylessAuthority

    key_bundle = is_key_bundle(jsonsafe.loads_object(raw, "sigstore bundle"))
    errors: list[str] = []
    if isinstance(authority, CosignKeyAuthority):
        if not key_bundle:
            raise MalformedSignatureError("keyless bundle, not signed with a key")
        for key in authority.keys:
            try:
                return verify_bundle_with_key(
                    raw, key, digest=digest, trusted_root=authority.trusted_root,
                    require_tlog=authority.require_tlog, predicate_type=predicate_type,
                    max_bytes=MAX_ATTESTATION_BUNDLE_BYTES)
            except Exception as exc:
                errors.append(_fmt(exc))
    elif isinstance(authority, CosignKeylessAuthority):
        if key_bundle:
            raise MalformedSignatureError("key-signed bundle, not keyless")
        for ident in authority.identities:
            try:
                return verify_bundle_keyless(
                    raw, ident, digest=digest, trusted_root=authority.trusted_root,
                    predicate_type=predicate_type, max_bytes=MAX_ATTESTATION_BUNDLE_BYTES)
            except Exception as exc:
                errors.append(_fmt(exc))
    else:
        raise PolicyError(f"authority {authority.name!r} cannot verify attestations")
    raise MalformedSignatureError("; ".join(errors) or "no key or identity to verify with")


def _signed_time(v: SignatureVerification, st: Statement) -> tuple[datetime, str] | None:
    if v.signed_at is not None:
        return v.signed_at, "transparency log or timestamp"
    return predicate_time(st)


def evaluate_requirement(req: AttestationRequirement, authorities: Mapping[str, Authority],
                         digest: str, bundles: Sequence[bytes], *,
                         now: datetime | None = None) -> AttestationResult:
    """Evaluate ``req`` over the candidate bundles (newest first) for ``digest``."""
    now = now or datetime.now(UTC)
    reasons: list[str] = []
    other_types: set[str] = set()
    found = verified = 0
    first_failure: AttestationResult | None = None
    for i, raw in enumerate(bundles):
        try:
            st = read_statement(raw, digest=digest, max_predicate=req.max_predicate_bytes)
        except Exception as exc:
            reasons.append(f"bundle {i}: {_fmt(exc)}")
            continue
        if st is None:
            continue
        if st.predicate_type != req.predicate_type:
            other_types.add(st.predicate_type)
            continue
        found += 1
        v: SignatureVerification | None = None
        by: str | None = None
        for name in req.authorities:
            try:
                v = _verify(authorities[name], raw, digest, req.predicate_type)
            except Exception as exc:
                reasons.append(f"attestation {i} vs {name}: {_fmt(exc)}")
                continue
            if v.digest != digest:  # defensive: only the very digest counts
                reasons.append(f"attestation {i} vs {name}: verified a different digest")
                v = None
                continue
            by = name
            break
        if v is None:
            continue
        verified += 1
        result = _judge(req, st, v, by, now, i)
        if result.passed:
            return replace(result, found=found, verified=verified)
        first_failure = first_failure or result
    if first_failure is not None:
        return replace(first_failure, found=found, verified=verified)
    if found == 0:
        head = f"no attestation of type {req.predicate_type} found"
        if other_types:
            head += f" (found types: {', '.join(sorted(other_types)[:5])})"
    else:
        head = (f"{found} attestation(s) of this type found, none signed by "
                f"{', '.join(req.authorities)}")
    reason = "; ".join([head, *reasons[:8]])
    return AttestationResult(req.name, req.predicate_type, False, reason, found, verified)


def _judge(req: AttestationRequirement, st: Statement, v: SignatureVerification,
           authority: str | None, now: datetime, index: int) -> AttestationResult:
    """Time and conditions of one verified attestation."""
    t = _signed_time(v, st)
    signed_at, source = (t if t is not None else (None, None))
    base = AttestationResult(req.name, req.predicate_type, False, "", authority=authority,
                             signer=v.signer, signed_at=signed_at, time_source=source)
    who = f"attestation {index} signed by {v.signer}"
    if req.max_age is not None:
        try:
            _check_age(req.max_age, signed_at, now)
        except AttestationTooOldError as exc:
            return replace(base, reason=f"{who}: {exc}")
    results: list[ConditionResult] = []
    for cond in req.conditions:
        r = cond.check(st.predicate)
        results.append(r)
        if not r.passed:
            what = "is false" if r.reason == "false" else r.reason
            return replace(base, reason=f"{who}: condition {cond.expression!r} {what}",
                           failed_condition=cond.expression, conditions=tuple(results))
    when = f", signed {signed_at.isoformat()} ({source})" if signed_at else ""
    n = len(req.conditions)
    return replace(base, passed=True, conditions=tuple(results),
                   reason=f"signed by {v.signer}{when}; "
                          f"{n} condition{'s' if n != 1 else ''} passed")


def _check_age(max_age: float, signed_at: datetime | None, now: datetime) -> None:
    """Raise :class:`AttestationTooOldError` unless ``signed_at`` is within ``max_age``."""
    if signed_at is None:
        raise AttestationTooOldError(
            "maxAge needs a signed time: the bundle has no transparency-log entry or RFC 3161 "
            "timestamp, and the predicate carries no timestamp")
    age = now - signed_at
    if age < -FUTURE_SKEW:
        raise AttestationTooOldError(f"signed time {signed_at.isoformat()} is in the future")
    if age.total_seconds() > max_age:
        raise AttestationTooOldError(
            f"attestation is {format_duration(round(age.total_seconds()))} old, older than "
            f"maxAge {format_duration(max_age)} (signed {signed_at.isoformat()})")
