"""Notation trust policies and trust stores.

No Python implementation of the Notary Project trust policy exists, so the validation rules of
notation-go (``verifier/trustpolicy``) are reproduced here: version ``1.0``; unique statement
names; each registry scope in one statement only (so at most one ``*``); ``*`` alone in its
statement; levels strict/permissive/audit/skip; ``override`` not allowed on skip, never on
integrity, and ``skip`` only for revocation; skip statements carry no trust stores or
identities, other statements need both; ``*`` identity alone; ``x509.subject`` identities must
name C, ST and O and must not overlap. A ``skip`` level on ``*`` is valid in notation, so it is
accepted here too (it means "no verification for unmatched repositories").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.x509.oid import NameOID

from ocigitops import jsonsafe
from ocigitops.errors import MalformedDocumentError
from ocigitops.verifier.errors import PolicyError, TrustStoreError

Check = Literal["integrity", "authenticity", "authenticTimestamp", "expiry", "revocation"]
Action = Literal["enforce", "log", "skip"]
CHECKS: tuple[Check, ...] = (
    "integrity", "authenticity", "authenticTimestamp", "expiry", "revocation",
)
LEVELS: dict[str, dict[Check, Action]] = {
    "strict": dict.fromkeys(CHECKS, "enforce"),
    "permissive": {"integrity": "enforce", "authenticity": "enforce",
                   "authenticTimestamp": "log", "expiry": "log", "revocation": "log"},
    "audit": {"integrity": "enforce", "authenticity": "log",
              "authenticTimestamp": "log", "expiry": "log", "revocation": "log"},
    "skip": dict.fromkeys(CHECKS, "skip"),
}
STORE_TYPES = ("ca", "signingAuthority", "tsa")
StoreType = Literal["ca", "signingAuthority", "tsa"]

_STORE_NAME_RE = re.compile(r"^[a-zA-Z0-9_.-]+$")
_DOMAIN_RE = re.compile(
    r"^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    r"(?:(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))+)?(?::[0-9]+)?$"
)
_REPO_RE = re.compile(
    r"^[a-z0-9]+(?:(?:(?:[._]|__|[-]*)[a-z0-9]+)+)?"
    r"(?:(?:/[a-z0-9]+(?:(?:(?:[._]|__|[-]*)[a-z0-9]+)+)?)+)?$"
)
_MAX_POLICY_BYTES = 1 << 20

# Short names notation (and RFC 4514) use for subject attributes.
_DN_NAMES = {
    NameOID.COUNTRY_NAME: "C", NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L", NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU", NameOID.COMMON_NAME: "CN",
    NameOID.EMAIL_ADDRESS: "E", NameOID.SERIAL_NUMBER: "SERIALNUMBER",
    NameOID.STREET_ADDRESS: "STREET", NameOID.POSTAL_CODE: "POSTALCODE",
    NameOID.DOMAIN_COMPONENT: "DC", NameOID.USER_ID: "UID",
}


def parse_dn(value: str) -> dict[str, str]:
    """Parse an ``x509.subject`` value (``C=US, ST=WA, O=Notary``) into attribute -> value.

    Commas and plus signs may be escaped with a backslash. Repeated or multi-valued
    attributes are refused, as notation does. C, ST and O are required.
    """
    parts: list[str] = []
    cur = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            cur.append(value[i + 1])
            i += 2
            continue
        if ch == "+":
            raise PolicyError(f"distinguished name {value!r} has a multi-valued RDN")
        if ch == ",":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    out: dict[str, str] = {}
    for part in parts:
        k, sep, v = part.partition("=")
        k, v = k.strip().upper(), v.strip()
        if not sep or not k or not v:
            raise PolicyError(f"distinguished name {value!r} is malformed at {part!r}")
        if k == "S":
            k = "ST"
        if k in out:
            raise PolicyError(f"distinguished name {value!r} repeats attribute {k}")
        out[k] = v
    missing = [a for a in ("C", "ST", "O") if a not in out]
    if missing:
        raise PolicyError(
            f"distinguished name {value!r} lacks required attribute(s) {', '.join(missing)}"
        )
    return out


def certificate_dn(cert: x509.Certificate) -> dict[str, str]:
    """A certificate subject as attribute -> value (multi-valued RDNs keep the last)."""
    out: dict[str, str] = {}
    for attr in cert.subject:
        name = _DN_NAMES.get(attr.oid, attr.oid.dotted_string)
        val = attr.value if isinstance(attr.value, str) else attr.value.decode("utf-8", "replace")
        out[name] = val
    return out


def _validate_scope(scope: str) -> None:
    domain, sep, repo = scope.partition("/")
    if not sep or not domain or not repo or not _DOMAIN_RE.match(domain) \
            or not _REPO_RE.match(repo):
        raise PolicyError(
            f"registry scope {scope!r} is not valid: use a fully qualified repository such as "
            "registry.example.com/team/app, or '*'"
        )


@dataclass(frozen=True)
class TrustPolicyStatement:
    """One validated statement of a notation trust policy document."""

    name: str
    registry_scopes: tuple[str, ...]
    level: str
    actions: Mapping[Check, Action]
    trust_stores: tuple[tuple[StoreType, str], ...]
    trusted_identities: tuple[str, ...]
    identity_dns: tuple[Mapping[str, str], ...] = field(default=())
    verify_timestamp: str = "always"

    def identity_matches(self, cert: x509.Certificate) -> bool:
        """True when the leaf's subject satisfies the trusted identities."""
        if "*" in self.trusted_identities:
            return True
        subject = certificate_dn(cert)
        return any(all(subject.get(k) == v for k, v in dn.items()) for dn in self.identity_dns)


def _statement(raw: Any) -> TrustPolicyStatement:
    if not isinstance(raw, dict):
        raise PolicyError("a trust policy statement is not a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise PolicyError("a trust policy statement is missing a name")
    sv = raw.get("signatureVerification")
    if not isinstance(sv, dict):
        raise PolicyError(f"trust policy statement {name!r} has no signatureVerification")
    level = sv.get("level")
    if not isinstance(level, str) or level not in LEVELS:
        raise PolicyError(f"trust policy statement {name!r} has invalid level {level!r}")
    actions: dict[Check, Action] = dict(LEVELS[level])
    override = sv.get("override") or {}
    if not isinstance(override, dict):
        raise PolicyError(f"trust policy statement {name!r}: override is not an object")
    if override and level == "skip":
        raise PolicyError(f"trust policy statement {name!r}: level skip cannot be overridden")
    for k, v in override.items():
        if k not in CHECKS:
            raise PolicyError(f"trust policy statement {name!r}: unknown check {k!r} in override")
        if v not in ("enforce", "log", "skip"):
            raise PolicyError(f"trust policy statement {name!r}: unknown action {v!r}")
        if k == "integrity":
            raise PolicyError(f"trust policy statement {name!r}: integrity cannot be overridden")
        if v == "skip" and k != "revocation":
            raise PolicyError(f"trust policy statement {name!r}: {k} cannot be skipped")
        actions[k] = v
    verify_ts = sv.get("verifyTimestamp", "always")
    if verify_ts not in ("always", "afterCertExpiry"):
        raise PolicyError(f"trust policy statement {name!r}: invalid verifyTimestamp")
    scopes = raw.get("registryScopes")
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        raise PolicyError(f"trust policy statement {name!r} has no registry scopes")
    if len(scopes) > 1 and "*" in scopes:
        raise PolicyError(
            f"trust policy statement {name!r}: wildcard scope '*' cannot be combined with others"
        )
    for s in scopes:
        if s != "*":
            _validate_scope(s)
    stores_raw = raw.get("trustStores") or []
    idents_raw = raw.get("trustedIdentities") or []
    if not isinstance(stores_raw, list) or not isinstance(idents_raw, list):
        raise PolicyError(f"trust policy statement {name!r}: trustStores/trustedIdentities")
    if level == "skip":
        if stores_raw or idents_raw:
            raise PolicyError(
                f"trust policy statement {name!r} skips verification but lists trust stores "
                "or identities"
            )
    elif not stores_raw or not idents_raw:
        raise PolicyError(
            f"trust policy statement {name!r} needs both trustStores and trustedIdentities"
        )
    stores: list[tuple[StoreType, str]] = []
    for st in stores_raw:
        if not isinstance(st, str) or ":" not in st:
            raise PolicyError(f"trust policy statement {name!r}: trust store {st!r} lacks ':'")
        t, _, n = st.partition(":")
        if t not in STORE_TYPES:
            raise PolicyError(f"trust policy statement {name!r}: unknown trust store type {t!r}")
        if not _STORE_NAME_RE.match(n):
            raise PolicyError(f"trust policy statement {name!r}: bad trust store name {n!r}")
        stores.append((t, n))  # type: ignore[arg-type]
    if len(idents_raw) > 1 and "*" in idents_raw:
        raise PolicyError(
            f"trust policy statement {name!r}: identity '*' cannot be combined with others"
        )
    dns: list[dict[str, str]] = []
    for ident in idents_raw:
        if not isinstance(ident, str) or not ident:
            raise PolicyError(f"trust policy statement {name!r} has an empty trusted identity")
        if ident == "*":
            continue
        prefix, sep, value = ident.partition(":")
        if not sep:
            raise PolicyError(f"trust policy statement {name!r}: identity {ident!r} lacks ':'")
        if prefix.strip() != "x509.subject":
            raise PolicyError(
                f"trust policy statement {name!r}: identity type {prefix!r} is not supported"
            )
        if not value.strip():
            raise PolicyError(f"trust policy statement {name!r}: identity {ident!r} is empty")
        dns.append(parse_dn(value))
    for i, a in enumerate(dns):
        for j, b in enumerate(dns):
            if i != j and all(b.get(k) == v for k, v in a.items()):
                raise PolicyError(
                    f"trust policy statement {name!r} has overlapping trusted identities"
                )
    return TrustPolicyStatement(
        name=name, registry_scopes=tuple(scopes), level=level, actions=actions,
        trust_stores=tuple(stores), trusted_identities=tuple(idents_raw),
        identity_dns=tuple(dns), verify_timestamp=verify_ts,
    )


@dataclass(frozen=True)
class TrustPolicyDocument:
    """A validated notation ``trustpolicy.json`` (OCI form)."""

    statements: tuple[TrustPolicyStatement, ...]

    def statement_for(self, repository: str) -> TrustPolicyStatement:
        """The statement for ``registry/repository``: an exact scope beats ``*``."""
        wildcard = None
        for st in self.statements:
            if repository in st.registry_scopes:
                return st
            if "*" in st.registry_scopes:
                wildcard = st
        if wildcard is None:
            raise PolicyError(f"no trust policy statement applies to {repository!r}")
        return wildcard


def parse_trust_policy(data: bytes | str | Mapping[str, Any]) -> TrustPolicyDocument:
    """Parse and validate a notation trust policy document.

    Raises :class:`PolicyError` with the first rule the document breaks.
    """
    doc: Any = data
    if isinstance(data, bytes | str):
        if len(data) > _MAX_POLICY_BYTES:
            raise PolicyError("trust policy document is larger than 1 MiB")
        try:
            doc = jsonsafe.loads(data, "trust policy")
        except MalformedDocumentError as exc:
            raise PolicyError(str(exc)) from exc
    if not isinstance(doc, Mapping):
        raise PolicyError("trust policy is not a JSON object")
    version = doc.get("version")
    if not version:
        raise PolicyError("trust policy document has no version")
    if version != "1.0":
        raise PolicyError(f"trust policy version {version!r} is not supported (1.0)")
    raw_statements = doc.get("trustPolicies")
    if not isinstance(raw_statements, list) or not raw_statements:
        raise PolicyError("trust policy document has no trust policy statements")
    statements = [_statement(s) for s in raw_statements]
    names: set[str] = set()
    scopes: set[str] = set()
    for st in statements:
        if st.name in names:
            raise PolicyError(f"trust policy statement name {st.name!r} is used twice")
        names.add(st.name)
        for s in st.registry_scopes:
            if s in scopes:
                raise PolicyError(
                    f"registry scope {s!r} appears in more than one trust policy statement"
                )
            scopes.add(s)
    return TrustPolicyDocument(tuple(statements))


# -- trust stores ---------------------------------------------------------------------------

def _load_certs(raw: bytes, source: str) -> list[x509.Certificate]:
    try:
        if b"-----BEGIN" in raw:
            certs = x509.load_pem_x509_certificates(raw)
        else:
            certs = [x509.load_der_x509_certificate(raw)]
    except (ValueError, x509.InvalidVersion) as exc:
        raise TrustStoreError(f"{source} does not hold valid certificates: {exc}") from exc
    if not certs:
        raise TrustStoreError(f"{source} holds no certificate")
    return certs


class TrustStore:
    """Named sets of trusted certificates by type (``ca``, ``signingAuthority``, ``tsa``).

    Built in memory from certificates, or read lazily from notation's directory layout so a
    broken store only fails the policies that use it (as in notation).
    """

    def __init__(self, stores: Mapping[tuple[str, str], Iterable[x509.Certificate]]
                 | None = None, *, root: Path | None = None) -> None:
        self._stores: dict[tuple[str, str], list[x509.Certificate]] = {
            k: list(v) for k, v in (stores or {}).items()
        }
        self._root = root

    @classmethod
    def from_directory(cls, root: Path | str) -> TrustStore:
        """Read ``<root>/x509/{ca|signingAuthority|tsa}/<name>/*`` (notation's layout).

        Symbolic links and sub-directories inside a named store are refused, as notation does.
        """
        base = Path(root) / "x509"
        if not base.is_dir():
            raise TrustStoreError(f"{base} is not a directory")
        names: dict[tuple[str, str], list[x509.Certificate]] = {}
        for t in STORE_TYPES:
            tdir = base / t
            if tdir.is_dir():
                for sdir in sorted(tdir.iterdir()):
                    if sdir.is_dir() and not sdir.is_symlink():
                        names[(t, sdir.name)] = []
        return cls(names, root=base)

    def certificates(self, store_type: str, name: str) -> list[x509.Certificate]:
        """The certificates of one named store; raises if missing, empty or unreadable."""
        key = (store_type, name)
        if key not in self._stores:
            raise TrustStoreError(f"trust store {store_type}:{name} does not exist")
        certs = self._stores[key]
        if not certs and self._root is not None:
            loaded: list[x509.Certificate] = []
            for f in sorted((self._root / store_type / name).iterdir()):
                if f.is_symlink() or not f.is_file():
                    raise TrustStoreError(f"{f} is not a regular file")
                if f.stat().st_size > _MAX_POLICY_BYTES:
                    raise TrustStoreError(f"{f} is larger than 1 MiB")
                loaded.extend(_load_certs(f.read_bytes(), str(f)))
            # Cache only a fully read store, so a failure repeats instead of half-passing.
            certs = self._stores[key] = loaded
        if not certs:
            raise TrustStoreError(f"trust store {store_type}:{name} holds no certificate")
        for c in certs:
            _check_trust_anchor(c, store_type, f"{store_type}:{name}")
        return certs


def _check_trust_anchor(cert: x509.Certificate, store_type: str, where: str) -> None:
    # notation accepts CA certificates and self-signed leaves in ca/signingAuthority stores;
    # TSA stores must hold self-issued CA roots.
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = bc.ca
    except x509.ExtensionNotFound:
        is_ca = False
    self_issued = cert.issuer == cert.subject
    if store_type == "tsa":
        if not is_ca or not self_issued:
            raise TrustStoreError(f"trust store {where}: TSA roots must be self-issued CAs")
        return
    if not is_ca and not self_issued:
        raise TrustStoreError(
            f"trust store {where} holds {cert.subject.rfc4514_string()}, which is neither a CA "
            "nor self-signed"
        )
