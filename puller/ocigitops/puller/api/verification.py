"""Turn ``spec.verify`` plus the Secrets it names into a :class:`SignaturePolicy`.

The controller reads the Secrets listed by :func:`referenced_secrets` (in the
OCIRepository's namespace) and passes their data to :func:`build_signature_policy`:

- Flux form: :func:`ocigitops.verifier.policy.from_flux_verify` with the ``secretRef`` data;
- policy form: one verifier authority per entry. ``cosign``: every ``*.pub`` entry of its
  Secret is a key; ``keyless``: the identities; ``notation``: the Secret's
  ``trustpolicy.json`` and ``*.crt``/``*.pem`` certificates, serving every trust store the
  policy names (as Flux does).

A ``trusted_root.json`` entry of ``trustedRootSecretRef`` (per keyless authority, else the
one of ``verify``) replaces the Sigstore public-good trusted root.

``attestations`` (policy form) become the policy's attestation requirements through
:func:`ocigitops.verifier.attestations.parse_requirements`, the CLI policy file's own parser,
so a requirement means the same in both places. They need no Secret:
:func:`attestation_requirements` checks them (CEL conditions compiled) before any I/O, and a
:class:`PolicyError` from it is a spec only an edit can fix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ocigitops.puller.api.ocirepository import Authority, OCIRepositoryVerification
from ocigitops.puller.api.schema import to_dict
from ocigitops.verifier.attestations import AttestationRequirement, parse_requirements
from ocigitops.verifier.errors import PolicyError
from ocigitops.verifier.policy import (
    Authority as VerifierAuthority,
)
from ocigitops.verifier.policy import (
    CosignKeyAuthority,
    Rule,
    SignaturePolicy,
    from_flux_verify,
    parse_policy,
)

if TYPE_CHECKING:
    from sigstore.models import TrustedRoot

SecretData = Mapping[str, bytes]
TRUSTED_ROOT_KEY = "trusted_root.json"


def referenced_secrets(verify: OCIRepositoryVerification) -> list[str]:
    """Names of every Secret ``verify`` refers to, sorted, without duplicates."""
    names: set[str] = set()
    for ref in (verify.secret_ref, verify.trusted_root_secret_ref):
        if ref is not None:
            names.add(ref.name)
    for a in verify.authorities:
        if a.cosign is not None:
            names.add(a.cosign.secret_ref.name)
        if a.notation is not None:
            names.add(a.notation.secret_ref.name)
        if a.keyless is not None and a.keyless.trusted_root_secret_ref is not None:
            names.add(a.keyless.trusted_root_secret_ref.name)
    return sorted(names)


def _secret(secrets: Mapping[str, SecretData], name: str) -> SecretData:
    data = secrets.get(name)
    if data is None:
        raise PolicyError(f"verification Secret {name!r} was not found")
    return data


def _trusted_root(secrets: Mapping[str, SecretData], name: str | None) -> TrustedRoot | None:
    if name is None:
        return None
    raw = _secret(secrets, name).get(TRUSTED_ROOT_KEY)
    if raw is None:
        raise PolicyError(f"Secret {name!r} has no {TRUSTED_ROOT_KEY}")
    from ocigitops.verifier.bundles import load_trusted_root

    return load_trusted_root(raw)


def _authority(a: Authority, secrets: Mapping[str, SecretData],
               default_root: str | None) -> VerifierAuthority:
    if a.cosign is not None:
        data = _secret(secrets, a.cosign.secret_ref.name)
        pems = [v.decode() for k, v in sorted(data.items()) if k.endswith(".pub")]
        if not pems:
            raise PolicyError(f"authority {a.name!r}: Secret {a.cosign.secret_ref.name!r} "
                              "holds no *.pub key")
        root = _trusted_root(secrets, default_root)
        doc = {"name": a.name, "cosign": {"keys": pems, "annotations":
                                          dict(a.cosign.annotations), "tlog": a.cosign.tlog}}
        auth = parse_policy({"authorities": [doc]}, trusted_root=root).authorities[0]
        if a.cosign.tlog and default_root is not None and isinstance(auth, CosignKeyAuthority):
            from ocigitops.verifier.rekor import rekor_keys_from_trusted_root

            raw = _secret(secrets, default_root)[TRUSTED_ROOT_KEY]
            auth = dataclasses.replace(auth, rekor_keys=tuple(
                rekor_keys_from_trusted_root(raw)))
        return auth
    if a.keyless is not None:
        ref = a.keyless.trusted_root_secret_ref
        root = _trusted_root(secrets, ref.name if ref is not None else default_root)
        ids: list[Any] = [to_dict(i) for i in a.keyless.identities]
        doc = {"name": a.name, "keyless": {"identities": ids}}
        return parse_policy({"authorities": [doc]}, trusted_root=root).authorities[0]
    if a.notation is not None:
        data = _secret(secrets, a.notation.secret_ref.name)
        auth = from_flux_verify({"provider": "notation"}, data).authorities[0]
        return dataclasses.replace(auth, name=a.name)
    raise PolicyError(f"authority {a.name!r} has none of cosign, keyless, notation")


def attestation_requirements(verify: OCIRepositoryVerification) \
        -> tuple[AttestationRequirement, ...]:
    """The attestation requirements of ``verify``, CEL conditions compiled (no Secret is
    read: this is the spec alone).

    Raises :class:`PolicyError`: a condition that does not compile is its subclass
    :class:`~ocigitops.verifier.errors.ConditionCompileError`, naming the requirement, the
    condition's number and the line and column; an unknown or notation authority too
    (parsing the spec already refuses those).
    """
    if not verify.attestations:
        return ()
    raw = [{"name": r.name, "predicateType": r.predicate_type,
            "authorities": list(r.authorities), "conditions": list(r.conditions),
            **({"maxAge": r.max_age} if r.max_age is not None else {})}
           for r in verify.attestations]
    return parse_requirements(raw, {a.name: a.kind for a in verify.authorities})


def build_signature_policy(verify: OCIRepositoryVerification,
                           secrets: Mapping[str, SecretData]) -> SignaturePolicy:
    """The verifier policy for ``verify``; ``secrets`` maps Secret name -> data (decoded).

    Raises :class:`ocigitops.verifier.errors.PolicyError` (a missing Secret or key, an invalid trust
    policy or identity, an attestation condition that does not compile) with a message fit
    for a condition.
    """
    root_name = (verify.trusted_root_secret_ref.name
                 if verify.trusted_root_secret_ref is not None else None)
    if not verify.is_policy:
        data = _secret(secrets, verify.secret_ref.name) if verify.secret_ref else None
        if verify.secret_ref is not None and not data:
            raise PolicyError(f"verification Secret {verify.secret_ref.name!r} is empty")
        flux: dict[str, Any] = {"provider": verify.effective_provider,
                                "matchOIDCIdentity": [to_dict(m)
                                                      for m in verify.match_oidc_identity]}
        return from_flux_verify(flux, data, trusted_root=_trusted_root(secrets, root_name))
    requirements = attestation_requirements(verify)
    auths = tuple(_authority(a, secrets, root_name) for a in verify.authorities)
    rule = verify.effective_rule
    if rule == "all":
        return SignaturePolicy(auths, Rule("all"), requirements)
    if isinstance(rule, int):
        return SignaturePolicy(auths, Rule("at_least", rule), requirements)
    return SignaturePolicy(auths, Rule("any"), requirements)
