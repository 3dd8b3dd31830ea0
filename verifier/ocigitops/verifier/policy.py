"""Signature policy: which authorities must vouch for a digest, and how many.

A policy lists authorities (cosign public keys, cosign keyless identities, notation trust
policies) and a rule: ``any``, ``all``, or at least N. Evaluation takes every candidate
signature found for one digest and reports, per authority, whether one of them verified, why
not, and who signed. Every check runs inside its own ``try``: an exception, whatever its type,
is a failure of that authority with the exception as the reason, never a pass.

Flux's ``spec.verify`` (``provider: cosign|notation``, a Secret of keys or of a trust policy
and certificates, ``matchOIDCIdentity``) maps onto this with :func:`from_flux_verify`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from cryptography import x509

from ocigitops import jsonsafe
from ocigitops.verifier.attestations import (
    AttestationRequirement,
    AttestationResult,
    evaluate_requirement,
    parse_requirements,
)
from ocigitops.verifier.errors import PolicyError
from ocigitops.verifier.identity import IdentityPolicy
from ocigitops.verifier.keys import PublicKey, load_public_key
from ocigitops.verifier.notation import verify_notation
from ocigitops.verifier.rekor import RekorKey
from ocigitops.verifier.results import SignatureVerification, Signer
from ocigitops.verifier.simplesigning import LegacySignature, check_digest, verify_legacy_signature
from ocigitops.verifier.trustpolicy import TrustPolicyDocument, TrustStore, parse_trust_policy

if TYPE_CHECKING:
    # sigstore-python costs ~0.4 s to import: only bundle and keyless checks load it, so
    # legacy-key and notation verification (and the CLI for them) never pay for it.
    from sigstore.models import TrustedRoot


@dataclass(frozen=True)
class CosignKeyAuthority:
    """Signatures made with one of ``keys`` (legacy ``.sig`` layers or key bundles)."""

    name: str
    keys: tuple[PublicKey, ...]
    annotations: Mapping[str, Any] = field(default_factory=dict)
    require_tlog: bool = False
    trusted_root: TrustedRoot | None = None
    rekor_keys: tuple[RekorKey, ...] = ()


@dataclass(frozen=True)
class CosignKeylessAuthority:
    """Fulcio-certificate bundles whose identity matches one of ``identities``."""

    name: str
    identities: tuple[IdentityPolicy, ...]
    trusted_root: TrustedRoot | None = None


@dataclass(frozen=True)
class NotationAuthority:
    """Notation envelopes accepted by a trust policy and trust store."""

    name: str
    trust_policy: TrustPolicyDocument
    trust_store: TrustStore


Authority = CosignKeyAuthority | CosignKeylessAuthority | NotationAuthority


@dataclass(frozen=True)
class Rule:
    """How many authorities must pass: ``any`` (1), ``all``, or ``at_least`` N."""

    kind: Literal["any", "all", "at_least"] = "any"
    count: int = 1

    def required(self, total: int) -> int:
        """The number of passing authorities needed out of ``total``."""
        if self.kind == "all":
            return total
        if self.kind == "any":
            return 1
        return self.count

    def __str__(self) -> str:
        return self.kind if self.kind != "at_least" else f"at least {self.count}"


@dataclass(frozen=True)
class SignaturePolicy:
    """Authorities plus the rule that combines them, and the attestations required (each
    must pass, whatever the rule: :mod:`ocigitops.verifier.attestations`)."""

    authorities: tuple[Authority, ...]
    rule: Rule = Rule()
    attestations: tuple[AttestationRequirement, ...] = ()

    def __post_init__(self) -> None:
        if not self.authorities:
            raise PolicyError("a signature policy needs at least one authority")
        names = [a.name for a in self.authorities]
        if len(set(names)) != len(names):
            raise PolicyError("authority names must be unique")
        for req in self.attestations:
            for n in req.authorities:
                if n not in names:
                    raise PolicyError(f"attestation {req.name!r}: no authority named {n!r}")
        if self.rule.kind == "at_least" and not 1 <= self.rule.count <= len(self.authorities):
            raise PolicyError(
                f"rule 'at least {self.rule.count}' cannot be met by "
                f"{len(self.authorities)} authorities")


@dataclass(frozen=True)
class NotationCandidate:
    """A notation envelope and its media type (``application/jose+json`` or ``cose``)."""

    envelope: bytes
    media_type: str


@dataclass(frozen=True)
class Candidates:
    """Every signature found for one digest, as fetched by the discovery layer."""

    legacy: Sequence[LegacySignature] = ()
    bundles: Sequence[bytes] = ()
    notation: Sequence[NotationCandidate] = ()


@dataclass(frozen=True)
class AuthorityResult:
    """Outcome of one authority: passed, the reason, and who signed."""

    name: str
    kind: str
    passed: bool
    reason: str
    signer: Signer | None = None
    verification: SignatureVerification | None = None


@dataclass(frozen=True)
class PolicyResult:
    """Outcome of a policy for one digest."""

    passed: bool
    digest: str
    rule: str
    authorities: tuple[AuthorityResult, ...]
    #: One per attestation requirement; :attr:`passed` needs every one of them.
    attestations: tuple[AttestationResult, ...] = ()

    def summary(self) -> str:
        """One line per authority and per attestation requirement, for logs, events and
        the CLI."""
        head = f"{'verified' if self.passed else 'NOT verified'} {self.digest} (rule: {self.rule})"
        lines = [head] + [
            f"  {'ok ' if a.passed else 'FAIL'} {a.name} [{a.kind}]: {a.reason}"
            for a in self.authorities
        ] + [r.line() for r in self.attestations]
        return "\n".join(lines)

    def failures(self) -> list[str]:
        """``name: reason`` of every failed authority and attestation requirement."""
        return [f"{a.name}: {a.reason}" for a in self.authorities if not a.passed] + \
            [f"attestation {r.name}: {r.reason}" for r in self.attestations if not r.passed]


def _fmt(exc: BaseException) -> str:
    """``Type: message`` on one line (some libraries raise multi-line messages)."""
    text = " ".join(str(exc).split())
    if len(text) > 500:
        text = text[:500] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


#: The in-toto predicate type of a cosign (v3) image signature. Other predicates are
#: attestations (SLSA provenance, scans...): signed statements about the artifact, not
#: approvals of it, and ``cosign verify`` does not accept them as signatures either.
#: (Also :data:`ocigitops.verifier.bundles.COSIGN_SIGN_PREDICATE`; not imported from there so that
#: loading this module does not load sigstore-python.)
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"


def _eval_key(a: CosignKeyAuthority, digest: str, c: Candidates) -> AuthorityResult:
    reasons: list[str] = []
    for i, sig in enumerate(c.legacy):
        if sig.certificate_pem is not None:
            continue  # keyless legacy signature: not for a key authority
        for key in a.keys:
            try:
                v = verify_legacy_signature(
                    sig, key, digest, required_annotations=a.annotations,
                    rekor_keys=list(a.rekor_keys) if a.rekor_keys else None,
                    require_tlog=a.require_tlog)
            except Exception as exc:
                reasons.append(f".sig layer {i}: {_fmt(exc)}")
                continue
            return AuthorityResult(a.name, "cosign-key", True,
                                   f"legacy signature by {v.signer}", v.signer, v)
    if c.bundles:
        from ocigitops.verifier.bundles import is_key_bundle, verify_bundle_with_key
    for i, raw in enumerate(c.bundles):
        try:
            if not is_key_bundle(jsonsafe.loads_object(raw, "sigstore bundle")):
                continue
        except Exception as exc:
            reasons.append(f"bundle {i}: {_fmt(exc)}")
            continue
        for key in a.keys:
            try:
                v = verify_bundle_with_key(raw, key, digest=digest, trusted_root=a.trusted_root,
                                           require_tlog=a.require_tlog,
                                           predicate_type=COSIGN_SIGN_PREDICATE)
                if a.annotations:
                    raise PolicyError("annotation requirements apply to legacy signatures only")
            except Exception as exc:
                reasons.append(f"bundle {i}: {_fmt(exc)}")
                continue
            return AuthorityResult(a.name, "cosign-key", True,
                                   f"bundle signed by {v.signer}", v.signer, v)
    return AuthorityResult(a.name, "cosign-key", False,
                           "; ".join(reasons) or "no key-signed cosign signature found")


def _eval_keyless(a: CosignKeylessAuthority, digest: str, c: Candidates) -> AuthorityResult:
    from ocigitops.verifier.bundles import is_key_bundle, verify_bundle_keyless
    from ocigitops.verifier.legacy_keyless import verify_legacy_keyless_signature

    reasons: list[str] = []
    for i, raw in enumerate(c.bundles):
        try:
            if is_key_bundle(jsonsafe.loads_object(raw, "sigstore bundle")):
                continue
        except Exception as exc:
            reasons.append(f"bundle {i}: {_fmt(exc)}")
            continue
        for ident in a.identities:
            try:
                v = verify_bundle_keyless(raw, ident, digest=digest, trusted_root=a.trusted_root,
                                          predicate_type=COSIGN_SIGN_PREDICATE)
            except Exception as exc:
                reasons.append(f"bundle {i} vs {ident!r}: {_fmt(exc)}")
                continue
            return AuthorityResult(a.name, "cosign-keyless", True,
                                   f"bundle signed by {v.signer}", v.signer, v)
    for i, sig in enumerate(c.legacy):
        if sig.certificate_pem is None:
            continue
        for ident in a.identities:
            try:
                v = verify_legacy_keyless_signature(sig, ident, digest,
                                                    trusted_root=a.trusted_root)
            except Exception as exc:
                reasons.append(f".sig layer {i} vs {ident!r}: {_fmt(exc)}")
                continue
            return AuthorityResult(a.name, "cosign-keyless", True,
                                   f"legacy signature by {v.signer}", v.signer, v)
    return AuthorityResult(a.name, "cosign-keyless", False,
                           "; ".join(reasons) or "no keyless sigstore bundle found")


def _logged_reason(v: SignatureVerification) -> str:
    return (f"signed by {v.signer}, but audit/log level: {'; '.join(v.logged_failures)}; "
            "logged failures never satisfy the policy")


def _eval_notation(a: NotationAuthority, digest: str, c: Candidates, repository: str,
                   now: datetime | None, subject_size: int | None = None,
                   subject_media_type: str | None = None) -> AuthorityResult:
    """Passes only when every enforced check passed and no logged check failed."""
    reasons: list[str] = []
    seen: SignatureVerification | None = None
    for i, cand in enumerate(c.notation):
        try:
            v = verify_notation(cand.envelope, cand.media_type, digest, repository=repository,
                                policy=a.trust_policy, trust_store=a.trust_store, now=now,
                                expected_size=subject_size,
                                expected_media_type=subject_media_type)
        except Exception as exc:
            reasons.append(f"envelope {i}: {_fmt(exc)}")
            continue
        if v.logged_failures:
            # notation-go would say "verified" here; we report what was seen, and fail.
            reasons.append(f"envelope {i}: {_logged_reason(v)}")
            seen = seen or v
            continue
        return AuthorityResult(a.name, "notation", True, f"signed by {v.signer}", v.signer, v)
    return AuthorityResult(a.name, "notation", False,
                           "; ".join(reasons) or "no notation signature found",
                           seen.signer if seen else None)


def evaluate(policy: SignaturePolicy, digest: str, candidates: Candidates, *,
             repository: str, now: datetime | None = None,
             subject_size: int | None = None,
             subject_media_type: str | None = None) -> PolicyResult:
    """Evaluate ``policy`` for ``repository@digest`` over the candidate signatures.

    ``repository`` (``registry/path``) selects the notation trust policy statement;
    ``subject_size`` and ``subject_media_type`` (the manifest's, as the registry serves
    it), when known, must match the target descriptor notation signatures name. None
    means "not known": only the digest is then compared.
    """
    check_digest(digest)
    results: list[AuthorityResult] = []
    for a in policy.authorities:
        try:
            if isinstance(a, CosignKeyAuthority):
                r = _eval_key(a, digest, candidates)
            elif isinstance(a, CosignKeylessAuthority):
                r = _eval_keyless(a, digest, candidates)
            else:
                r = _eval_notation(a, digest, candidates, repository, now, subject_size,
                                   subject_media_type)
        except Exception as exc:  # a bug in one check must not pass or abort the others
            r = AuthorityResult(a.name, type(a).__name__, False, f"internal error: {_fmt(exc)}")
        # Defensive: only a result that names the very digest counts.
        if r.passed and (r.verification is None or r.verification.digest != digest):
            r = AuthorityResult(a.name, r.kind, False, "verified a different digest")
        # Defensive too: a check that failed but was only logged is never a pass.
        if r.passed and r.verification is not None and r.verification.logged_failures:
            r = AuthorityResult(a.name, r.kind, False, _logged_reason(r.verification),
                                r.signer)
        results.append(r)
    passed_count = sum(r.passed for r in results)
    need = policy.rule.required(len(results))
    by_name = {a.name: a for a in policy.authorities}
    # Attestations are sigstore bundles too: the requirement reads their statements.
    pool = list(candidates.bundles)
    att_results: list[AttestationResult] = []
    for req in policy.attestations:
        try:
            ar = evaluate_requirement(req, by_name, digest, pool, now=now)
        except Exception as exc:  # a bug in one check must not pass or abort the others
            ar = AttestationResult(req.name, req.predicate_type, False,
                                   f"internal error: {_fmt(exc)}")
        att_results.append(ar)
    signatures_ok = need >= 1 and passed_count >= need
    return PolicyResult(passed=signatures_ok and all(r.passed for r in att_results),
                        digest=digest, rule=str(policy.rule), authorities=tuple(results),
                        attestations=tuple(att_results))


# -- documents -------------------------------------------------------------------------------

_COUNT_RE = re.compile(r"[0-9]{1,9}")


def parse_rule(raw: Any) -> Rule:
    """A rule as written by a user: exactly ``any``, ``all`` or a positive decimal integer.

    Anything else (``ALL``, ``alll``, ``0``, ``-1``, ``2.0``, ``²``, ``true``) is a
    :class:`PolicyError`, never a weaker rule. Whether N can be met is checked against the
    authorities by :class:`SignaturePolicy`.
    """
    if raw == "any" or raw == "all":
        return Rule(raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
        return Rule("at_least", raw)
    if isinstance(raw, str) and _COUNT_RE.fullmatch(raw) and int(raw) >= 1:
        return Rule("at_least", int(raw))
    shown = repr(raw) if len(repr(raw)) <= 40 else repr(raw)[:40] + "..."
    raise PolicyError(f"rule {shown} is not valid: use any, all, or a number of authorities "
                      "from 1 up to how many there are")


def _rule(raw: Any) -> Rule:
    return Rule("any") if raw is None else parse_rule(raw)


def _identity(raw: Any) -> IdentityPolicy:
    if not isinstance(raw, Mapping):
        raise PolicyError("an identity is not an object")
    allowed = {"issuer", "issuerRegExp", "subject", "subjectRegExp", "github"}
    unknown = set(raw) - allowed
    if unknown:
        raise PolicyError(f"unknown identity field(s) {sorted(unknown)}")
    return IdentityPolicy(issuer=raw.get("issuer"), issuer_regexp=raw.get("issuerRegExp"),
                          subject=raw.get("subject"), subject_regexp=raw.get("subjectRegExp"),
                          github=raw.get("github"))


def parse_policy(doc: Mapping[str, Any], *, trusted_root: TrustedRoot | None = None) \
        -> SignaturePolicy:
    """Build a policy from its document form.

    ``{"rule": "any"|"all"|N, "authorities": [{"name", one of "cosign": {"keys": [PEM],
    "annotations", "tlog"}, "keyless": {"identities": [{issuer|issuerRegExp,
    subject|subjectRegExp, github}]}, "notation": {"trustPolicy": {...}, "trustStores":
    {"ca:NAME": [PEM, ...]}}}], "attestations": [{"name", "predicateType", "authorities":
    [NAME], "conditions": [CEL], "maxAge": "168h"}]}``. File references are resolved by
    the caller. CEL conditions are compiled here: one that does not compile is a
    :class:`~ocigitops.verifier.errors.ConditionCompileError` with its position.
    """
    if not isinstance(doc, Mapping):
        raise PolicyError("signature policy is not an object")
    raw_auths = doc.get("authorities")
    if not isinstance(raw_auths, list) or not raw_auths:
        raise PolicyError("signature policy lists no authorities")
    auths: list[Authority] = []
    for i, ra in enumerate(raw_auths):
        if not isinstance(ra, Mapping):
            raise PolicyError(f"authority {i} is not an object")
        name = ra.get("name") or f"authority-{i}"
        kinds = [k for k in ("cosign", "keyless", "notation") if k in ra]
        if len(kinds) != 1:
            raise PolicyError(f"authority {name!r} must have exactly one of cosign, keyless, "
                              "notation")
        body = ra[kinds[0]]
        if not isinstance(body, Mapping):
            raise PolicyError(f"authority {name!r}: {kinds[0]} is not an object")
        if kinds[0] == "cosign":
            pems = body.get("keys")
            if not isinstance(pems, list) or not pems:
                raise PolicyError(f"authority {name!r} lists no keys")
            ann = body.get("annotations") or {}
            if not isinstance(ann, Mapping):
                raise PolicyError(f"authority {name!r}: annotations is not an object")
            auths.append(CosignKeyAuthority(
                name, tuple(load_public_key(p) for p in pems), dict(ann),
                require_tlog=bool(body.get("tlog", False)), trusted_root=trusted_root))
        elif kinds[0] == "keyless":
            ids = body.get("identities")
            if not isinstance(ids, list) or not ids:
                raise PolicyError(f"authority {name!r} lists no identities")
            auths.append(CosignKeylessAuthority(name, tuple(_identity(x) for x in ids),
                                                trusted_root))
        else:
            tp = parse_trust_policy(body.get("trustPolicy") or {})
            stores = body.get("trustStores") or {}
            if not isinstance(stores, Mapping):
                raise PolicyError(f"authority {name!r}: trustStores is not an object")
            auths.append(NotationAuthority(name, tp, _store_from_pems(stores)))
    auth_kinds = {a.name: ("cosign" if isinstance(a, CosignKeyAuthority) else
                           "keyless" if isinstance(a, CosignKeylessAuthority) else "notation")
                  for a in auths}
    return SignaturePolicy(tuple(auths), _rule(doc.get("rule")),
                           parse_requirements(doc.get("attestations"), auth_kinds))


def _store_from_pems(stores: Mapping[str, Any]) -> TrustStore:
    out: dict[tuple[str, str], list[x509.Certificate]] = {}
    for key, pems in stores.items():
        t, sep, n = str(key).partition(":")
        if not sep:
            raise PolicyError(f"trust store key {key!r} must be TYPE:NAME")
        items = pems if isinstance(pems, list) else [pems]
        certs: list[x509.Certificate] = []
        for p in items:
            try:
                certs.extend(x509.load_pem_x509_certificates(
                    p.encode() if isinstance(p, str) else p))
            except (ValueError, TypeError, x509.InvalidVersion) as exc:
                raise PolicyError(f"trust store {key!r} holds an invalid certificate") from exc
        out[(t, n)] = certs
    return TrustStore(out)


def from_flux_verify(verify: Mapping[str, Any], secret_data: Mapping[str, bytes] | None = None,
                     *, trusted_root: TrustedRoot | None = None) -> SignaturePolicy:
    """Map a Flux ``spec.verify`` block (and its Secret's data) onto a policy.

    ``provider: cosign`` with a Secret: every ``*.pub`` entry is a key, any one suffices.
    ``provider: cosign`` without one: keyless, ``matchOIDCIdentity`` entries are regular
    expressions OR'ed together. Unlike Flux, an empty ``matchOIDCIdentity`` is refused rather
    than accepting any identity: write ``{issuer: ".*", subject: ".*"}`` to mean that.
    ``provider: notation``: the Secret's ``trustpolicy.json`` plus every ``*.crt``/``*.pem``,
    which serve every trust store the policy names (as Flux does).
    """
    provider = verify.get("provider", "cosign")
    data = dict(secret_data or {})
    if provider == "cosign":
        if data:
            keys = [load_public_key(v) for k, v in sorted(data.items()) if k.endswith(".pub")]
            if not keys:
                raise PolicyError("the cosign verification Secret holds no *.pub key")
            return SignaturePolicy((CosignKeyAuthority("cosign", tuple(keys),
                                                       trusted_root=trusted_root),))
        matchers = verify.get("matchOIDCIdentity") or []
        if not matchers:
            raise PolicyError("keyless cosign verification needs matchOIDCIdentity entries")
        ids = []
        for m in matchers:
            if not isinstance(m, Mapping) or not m.get("issuer") or not m.get("subject"):
                raise PolicyError("each matchOIDCIdentity entry needs issuer and subject")
            ids.append(IdentityPolicy(issuer_regexp=m["issuer"], subject_regexp=m["subject"]))
        return SignaturePolicy((CosignKeylessAuthority("cosign-keyless", tuple(ids),
                                                       trusted_root),))
    if provider == "notation":
        raw_tp = data.get("trustpolicy.json")
        if raw_tp is None:
            raise PolicyError("the notation verification Secret has no trustpolicy.json")
        tp = parse_trust_policy(raw_tp)
        certs: list[x509.Certificate] = []
        for k, v in sorted(data.items()):
            if k.endswith((".crt", ".pem")):
                try:
                    certs.extend(x509.load_pem_x509_certificates(v))
                except (ValueError, x509.InvalidVersion):
                    try:
                        certs.append(x509.load_der_x509_certificate(v))
                    except (ValueError, x509.InvalidVersion) as exc:
                        raise PolicyError(
                            f"the notation verification Secret's {k} is not a PEM or DER "
                            "certificate") from exc
        if not certs:
            raise PolicyError("the notation verification Secret holds no certificate")
        stores: dict[tuple[str, str], list[x509.Certificate]] = {
            ts: certs for st in tp.statements for ts in st.trust_stores}
        return SignaturePolicy((NotationAuthority("notation", tp, TrustStore(stores)),))
    raise PolicyError(f"verify provider {provider!r} is not cosign or notation")
