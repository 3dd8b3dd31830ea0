"""Verify an artifact in a registry against a signature policy.

The one entry point callers need: resolve the reference to a digest once, discover the
signatures of that digest, evaluate the policy, and return the verified digest. Callers
then fetch by that digest, never by the tag again (docs/architecture.md decision 5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ocigitops import jsonsafe
from ocigitops.errors import OcigitopsError
from ocigitops.reference import Reference
from ocigitops.registry import Manifest, RegistryClient
from ocigitops.verifier.discovery import Discovered, discover
from ocigitops.verifier.errors import PolicyError
from ocigitops.verifier.identity import IdentityPolicy
from ocigitops.verifier.keys import load_public_key
from ocigitops.verifier.policy import (
    Authority,
    CosignKeyAuthority,
    CosignKeylessAuthority,
    NotationAuthority,
    PolicyResult,
    SignaturePolicy,
    evaluate,
    parse_policy,
    parse_rule,
)
from ocigitops.verifier.trustpolicy import TrustStore, parse_trust_policy


@dataclass
class VerifyOutcome:
    """Policy result for one artifact plus what discovery found."""

    reference: str
    digest: str
    result: PolicyResult
    discovered: Discovered
    #: The manifest of :attr:`digest`, as fetched and hashed during verification.
    manifest: Manifest | None = None

    @property
    def passed(self) -> bool:
        """True only when the policy passed for :attr:`digest`."""
        return self.result.passed

    def to_json(self) -> dict[str, Any]:
        """The full outcome, for ``-o json`` and for status."""
        return {
            "reference": self.reference,
            "digest": self.digest,
            "verified": self.result.passed,
            "rule": self.result.rule,
            "authorities": [
                {"name": a.name, "kind": a.kind, "passed": a.passed, "reason": a.reason,
                 "signer": str(a.signer) if a.signer else None}
                for a in self.result.authorities],
            "attestations": [r.to_json() for r in self.result.attestations],
            "signatures": [{"kind": f.kind, "location": f.location, "mediaType": f.media_type}
                           for f in self.discovered.found],
            "problems": list(self.discovered.problems),
            "referrersVia": self.discovered.referrers_via,
        }

    def human(self) -> str:
        """Multi-line report: signatures found, then one line per authority and one per
        attestation requirement (found, signed by whom, the condition that failed)."""
        lines = [f"{self.reference}@{self.digest}"]
        if self.discovered.found:
            lines.append(f"signatures found ({len(self.discovered.found)}):")
            lines += [f"  {f.kind}: {f.location}" for f in self.discovered.found]
        else:
            lines.append("no signatures found")
        lines += [f"problem: {p}" for p in self.discovered.problems]
        lines.append(self.result.summary())
        return "\n".join(lines)


async def verify_artifact(client: RegistryClient, ref: Reference,
                          policy: SignaturePolicy) -> VerifyOutcome:
    """Resolve ``ref`` to a digest, discover its signatures and evaluate ``policy``.

    The digest verified is the one in ``ref`` when it has one; a tag's digest is only
    used once the manifest fetched by it hashes to it (:meth:`RegistryClient.resolve`).
    The manifest's size and media type, checked against what signatures cover, come
    from those bytes, never from response headers. The outcome carries the manifest so
    callers use these bytes rather than fetching again.
    """
    manifest = await client.resolve(ref)
    digest = manifest.digest
    found = await discover(client, ref.repo_only(), digest)
    result = evaluate(policy, digest, found.candidates, repository=ref.name,
                      subject_size=len(manifest.data),
                      subject_media_type=manifest.media_type or None)
    shown = str(ref.repo_only()) + (f":{ref.tag}" if ref.tag else "")
    return VerifyOutcome(reference=shown, digest=digest, result=result, discovered=found,
                         manifest=manifest)


def _read(base: Path, value: str) -> bytes:
    """PEM text inline, or a path (relative to the policy file) to read."""
    if value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    p = Path(value)
    return (p if p.is_absolute() else base / p).read_bytes()


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that repeats a key (PyYAML keeps the last
    silently: a policy whose reader and writer see different authorities is refused)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_policy_file(path: Path, *, trusted_root: Any = None) -> SignaturePolicy:
    """Load a policy document (YAML or JSON) whose keys, trust policy and trust stores may
    be given inline or as paths relative to the file."""
    try:
        doc = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise PolicyError(f"{path}: not valid YAML/JSON: {e}") from e
    if not isinstance(doc, Mapping):
        raise PolicyError(f"{path}: the policy is not an object")
    base = path.resolve().parent
    resolved: dict[str, Any] = {"rule": doc.get("rule"), "authorities": [],
                                "attestations": doc.get("attestations")}
    for raw in doc.get("authorities") or []:
        if not isinstance(raw, Mapping):
            raise PolicyError(f"{path}: an authority is not an object")
        a = dict(raw)
        if isinstance(a.get("cosign"), Mapping):
            c = dict(a["cosign"])
            c["keys"] = [_read(base, str(k)).decode() for k in c.get("keys") or []]
            a["cosign"] = c
        if isinstance(a.get("notation"), Mapping):
            n = dict(a["notation"])
            tp = n.get("trustPolicy")
            if isinstance(tp, str):
                try:
                    n["trustPolicy"] = jsonsafe.loads(_read(base, tp), f"trust policy {tp}")
                except OcigitopsError as e:
                    raise PolicyError(f"{path}: {e}") from e
            stores: dict[str, list[str]] = {}
            for key, val in (n.get("trustStores") or {}).items():
                items = val if isinstance(val, list) else [val]
                pems: list[str] = []
                for item in items:
                    p = Path(str(item))
                    p = p if p.is_absolute() else base / p
                    if not str(item).lstrip().startswith("-----BEGIN") and p.is_dir():
                        pems += [f.read_text() for f in sorted(p.iterdir())
                                 if f.suffix in (".pem", ".crt", ".cer")]
                    else:
                        pems.append(_read(base, str(item)).decode())
                stores[str(key)] = pems
            n["trustStores"] = stores
            a["notation"] = n
        resolved["authorities"].append(a)
    return parse_policy(resolved, trusted_root=trusted_root)


def policy_from_flags(*, keys: Sequence[Path] = (), identity: str | None = None,
                      identity_regexp: str | None = None, issuer: str | None = None,
                      issuer_regexp: str | None = None,
                      github: Mapping[str, str] | None = None,
                      trust_policy: Path | None = None, trust_store: Path | None = None,
                      annotations: Mapping[str, str] | None = None,
                      require_tlog: bool = False, trusted_root: Any = None,
                      rule: str = "any") -> SignaturePolicy:
    """Build a policy from ``verify artifact`` flags: one authority per kind given.

    ``rule`` must be exactly ``any``, ``all`` or a number from 1 to the number of
    authorities; anything else is a :class:`PolicyError`, never a weaker rule.
    """
    parsed_rule = parse_rule(rule)
    auths: list[Authority] = []
    if keys:
        auths.append(CosignKeyAuthority(
            "cosign-key", tuple(load_public_key(p.read_bytes()) for p in keys),
            dict(annotations or {}), require_tlog=require_tlog, trusted_root=trusted_root))
    if identity or identity_regexp or issuer or issuer_regexp:
        if not (identity or identity_regexp) or not (issuer or issuer_regexp):
            raise PolicyError("keyless verification needs both --certificate-identity[-regexp]"
                              " and --certificate-oidc-issuer[-regexp]")
        auths.append(CosignKeylessAuthority("cosign-keyless", (IdentityPolicy(
            issuer=issuer, issuer_regexp=issuer_regexp, subject=identity,
            subject_regexp=identity_regexp, github=dict(github) if github else None),),
            trusted_root))
    if trust_policy or trust_store:
        if not (trust_policy and trust_store):
            raise PolicyError("notation verification needs both --trust-policy and"
                              " --trust-store")
        auths.append(NotationAuthority("notation", parse_trust_policy(trust_policy.read_bytes()),
                                       TrustStore.from_directory(trust_store)))
    if not auths:
        raise PolicyError("nothing to verify with: pass --key, --certificate-identity and"
                          " --certificate-oidc-issuer, --trust-policy and --trust-store,"
                          " or --policy")
    return SignaturePolicy(tuple(auths), parsed_rule)
