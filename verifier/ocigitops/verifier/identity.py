"""Keyless identity policy: issuer and subject, exact or regular expression, plus GitHub claims.

sigstore-python's ``Identity`` policy only compares exact strings, while cosign and Flux accept
regular expressions (``--certificate-identity-regexp``, ``matchOIDCIdentity``). This class
implements sigstore-python's ``VerificationPolicy`` protocol so it plugs into its ``Verifier``.

Regular expressions are searched, not fully matched, because that is what cosign does (Go's
``regexp.MatchString``) and what Flux users' patterns were written for; anchor with ``^...$``
to pin a whole value. Both an issuer and a subject constraint are required: a policy that
would accept any identity cannot be built.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier
from sigstore.errors import VerificationError

from ocigitops.verifier.errors import PolicyError

_FULCIO = "1.3.6.1.4.1.57264.1."
OID_ISSUER_V1 = ObjectIdentifier(_FULCIO + "1")
OID_GITHUB_TRIGGER_V1 = ObjectIdentifier(_FULCIO + "2")
OID_GITHUB_SHA_V1 = ObjectIdentifier(_FULCIO + "3")
OID_GITHUB_WORKFLOW_V1 = ObjectIdentifier(_FULCIO + "4")
OID_GITHUB_REPOSITORY_V1 = ObjectIdentifier(_FULCIO + "5")
OID_GITHUB_REF_V1 = ObjectIdentifier(_FULCIO + "6")
OID_OTHERNAME = ObjectIdentifier(_FULCIO + "7")
OID_ISSUER_V2 = ObjectIdentifier(_FULCIO + "8")
OID_SOURCE_REPOSITORY_URI = ObjectIdentifier(_FULCIO + "12")
OID_SOURCE_REPOSITORY_DIGEST = ObjectIdentifier(_FULCIO + "13")
OID_SOURCE_REPOSITORY_REF = ObjectIdentifier(_FULCIO + "14")
OID_BUILD_TRIGGER = ObjectIdentifier(_FULCIO + "20")

_MAX_REGEX_LEN = 1024


def _der_utf8(raw: bytes) -> str:
    """Decode a DER UTF8String (the v2 Fulcio extensions are encoded this way)."""
    if len(raw) < 2 or raw[0] != 0x0C:
        raise ValueError("not a DER UTF8String")
    length = raw[1]
    offset = 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or len(raw) < 2 + n:
            raise ValueError("bad DER length")
        length = int.from_bytes(raw[2 : 2 + n], "big")
        offset = 2 + n
    if len(raw) != offset + length:
        raise ValueError("DER length does not match")
    return raw[offset:].decode("utf-8")


def _ext_raw(cert: x509.Certificate, oid: ObjectIdentifier) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    value = getattr(ext, "value", None)
    return value if isinstance(value, bytes) else None


def _ext_v1(cert: x509.Certificate, oid: ObjectIdentifier) -> str | None:
    raw = _ext_raw(cert, oid)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _ext_v2(cert: x509.Certificate, oid: ObjectIdentifier) -> str | None:
    raw = _ext_raw(cert, oid)
    if raw is None:
        return None
    try:
        return _der_utf8(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def certificate_issuer(cert: x509.Certificate) -> str | None:
    """The OIDC issuer Fulcio recorded (v2 extension first, then the deprecated v1)."""
    return _ext_v2(cert, OID_ISSUER_V2) or _ext_v1(cert, OID_ISSUER_V1)


def certificate_subjects(cert: x509.Certificate) -> list[str]:
    """All SAN identities: URIs, emails and Sigstore ``OtherName`` usernames."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out: list[str] = []
    out.extend(san.get_values_for_type(x509.UniformResourceIdentifier))
    out.extend(san.get_values_for_type(x509.RFC822Name))
    for on in san.get_values_for_type(x509.OtherName):
        if on.type_id == OID_OTHERNAME:
            # cryptography hands over the DER of the inner value; accept a bare string too.
            try:
                out.append(_der_utf8(on.value))
            except (ValueError, UnicodeDecodeError):
                try:
                    out.append(on.value.decode("utf-8"))
                except UnicodeDecodeError:
                    continue
    return out


def github_claims(cert: x509.Certificate) -> dict[str, str]:
    """GitHub workflow claims from a Fulcio certificate (v1 extensions, else v2)."""
    claims: dict[str, str] = {}
    repo = _ext_v1(cert, OID_GITHUB_REPOSITORY_V1)
    if repo is None:
        uri = _ext_v2(cert, OID_SOURCE_REPOSITORY_URI)
        if uri and uri.startswith("https://github.com/"):
            repo = uri.removeprefix("https://github.com/")
    pairs = {
        "repository": repo,
        "ref": _ext_v1(cert, OID_GITHUB_REF_V1) or _ext_v2(cert, OID_SOURCE_REPOSITORY_REF),
        "trigger": _ext_v1(cert, OID_GITHUB_TRIGGER_V1) or _ext_v2(cert, OID_BUILD_TRIGGER),
        "sha": _ext_v1(cert, OID_GITHUB_SHA_V1) or _ext_v2(cert, OID_SOURCE_REPOSITORY_DIGEST),
        "workflow": _ext_v1(cert, OID_GITHUB_WORKFLOW_V1),
    }
    for k, v in pairs.items():
        if v is not None:
            claims[k] = v
    return claims


def compile_regex(pattern: str, what: str) -> re.Pattern[str]:
    """Compile a user regular expression, turning errors into :class:`PolicyError`."""
    if not isinstance(pattern, str) or not pattern:
        raise PolicyError(f"{what} regular expression is empty")
    if len(pattern) > _MAX_REGEX_LEN:
        raise PolicyError(f"{what} regular expression is longer than {_MAX_REGEX_LEN}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise PolicyError(f"{what} regular expression {pattern!r} does not compile: {exc}") from exc


class IdentityPolicy:
    """Which keyless signer identities are accepted.

    Give ``issuer`` or ``issuer_regexp`` and ``subject`` or ``subject_regexp`` (exactly one of
    each). ``github`` optionally pins workflow claims: keys ``repository`` (``owner/name``),
    ``ref``, ``trigger``, ``sha``, ``workflow``; values compared exactly.
    """

    def __init__(self, *, issuer: str | None = None, issuer_regexp: str | None = None,
                 subject: str | None = None, subject_regexp: str | None = None,
                 github: Mapping[str, str] | None = None) -> None:
        if (issuer is None) == (issuer_regexp is None):
            raise PolicyError("an identity needs exactly one of issuer or issuer regexp")
        if (subject is None) == (subject_regexp is None):
            raise PolicyError("an identity needs exactly one of subject or subject regexp")
        if issuer == "" or subject == "":
            raise PolicyError("identity issuer and subject must not be empty")
        self.issuer = issuer
        self.subject = subject
        self._issuer_re = compile_regex(issuer_regexp, "issuer") if issuer_regexp else None
        self._subject_re = compile_regex(subject_regexp, "subject") if subject_regexp else None
        allowed = {"repository", "ref", "trigger", "sha", "workflow"}
        self.github = dict(github or {})
        unknown = set(self.github) - allowed
        if unknown:
            raise PolicyError(f"unknown GitHub claim(s) {sorted(unknown)}; use {sorted(allowed)}")

    def __repr__(self) -> str:
        iss = self.issuer or f"/{self._issuer_re.pattern if self._issuer_re else ''}/"
        sub = self.subject or f"/{self._subject_re.pattern if self._subject_re else ''}/"
        return f"IdentityPolicy(issuer={iss}, subject={sub}, github={self.github})"

    def match_values(self, issuer: str | None, subjects: list[str],
                     claims: Mapping[str, str]) -> str:
        """Check already extracted values; return the matching subject or raise."""
        if issuer is None:
            raise VerificationError("certificate has no OIDC issuer extension")
        if self.issuer is not None and issuer != self.issuer:
            raise VerificationError(f"issuer {issuer!r} is not {self.issuer!r}")
        if self._issuer_re is not None and not self._issuer_re.search(issuer):
            raise VerificationError(
                f"issuer {issuer!r} does not match /{self._issuer_re.pattern}/"
            )
        matched = [
            s for s in subjects
            if (self.subject is not None and s == self.subject)
            or (self._subject_re is not None and self._subject_re.search(s))
        ]
        if not matched:
            want = self.subject if self.subject is not None else (
                f"/{self._subject_re.pattern}/" if self._subject_re else "?")
            raise VerificationError(f"certificate identities {subjects} do not match {want}")
        for k, v in self.github.items():
            got = claims.get(k)
            if got != v:
                raise VerificationError(f"GitHub claim {k} is {got!r}, required {v!r}")
        return matched[0]

    def verify(self, cert: x509.Certificate) -> None:
        """sigstore ``VerificationPolicy`` hook: raise ``VerificationError`` on mismatch."""
        self.match_values(certificate_issuer(cert), certificate_subjects(cert),
                          github_claims(cert))
