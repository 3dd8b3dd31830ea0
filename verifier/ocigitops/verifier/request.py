"""``verify artifact`` as one call: a policy from command-line-level options, then
:func:`~ocigitops.verifier.verify.verify_artifact` over a client made from registry options.

The CLI, the GitHub Action and tests describe what to trust with the same fields (keys,
keyless identities, a notation trust policy, or a policy file), so they build the same
:class:`~ocigitops.verifier.policy.SignaturePolicy` and get the same typed outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ocigitops.errors import UsageError
from ocigitops.options import Annotations, RegistryOptions, parse_annotations
from ocigitops.reference import parse_reference
from ocigitops.verifier.policy import SignaturePolicy
from ocigitops.verifier.verify import (
    VerifyOutcome,
    load_policy_file,
    policy_from_flags,
    verify_artifact,
)


@dataclass(frozen=True)
class VerifyRequest:
    """What to verify and whom to trust; every field is one ``verify artifact`` flag."""

    #: ``oci://host/repo:tag`` or ``...@sha256:...``.
    url: str
    #: cosign public keys (any of them).
    keys: Sequence[Path] = ()
    #: Keyless: signer identity and OIDC issuer, exact or as regular expressions.
    identity: str | None = None
    identity_regexp: str | None = None
    issuer: str | None = None
    issuer_regexp: str | None = None
    #: Keyless: GitHub workflow claims the certificate must carry.
    github_workflow_repository: str | None = None
    github_workflow_ref: str | None = None
    github_workflow_trigger: str | None = None
    github_workflow_sha: str | None = None
    #: notation: trustpolicy.json and the trust store directory.
    trust_policy: Path | None = None
    trust_store: Path | None = None
    #: A policy document (authorities and a rule) instead of the flags above.
    policy_file: Path | None = None
    #: With several flag authorities: ``any`` (the default), ``all`` or a number.
    rule: str | None = None
    #: sigstore ``trusted_root.json``; default: the public-good root.
    trusted_root: Path | None = None
    #: cosign: signed annotations required (a mapping or ``KEY=VALUE`` strings).
    annotations: Annotations = field(default_factory=dict)
    #: cosign keys: require a verified transparency-log entry.
    require_tlog: bool = False


def build_policy(request: VerifyRequest) -> SignaturePolicy:
    """The policy ``request`` describes: its policy file, or one authority per kind of
    trust material given.

    Raises UsageError when a rule is given with a policy file (the file holds the rule),
    PolicyError when the flags name no authority or an incomplete one.
    """
    root = None
    if request.trusted_root:
        from ocigitops.verifier.bundles import load_trusted_root  # sigstore: only when asked

        root = load_trusted_root(request.trusted_root)
    if request.policy_file:
        if request.rule is not None:
            raise UsageError("--require applies to flag authorities; with --policy, write the"
                             " rule in the policy file (rule: any, all or a number)")
        return load_policy_file(request.policy_file, trusted_root=root)
    github = {k: v for k, v in {
        "repository": request.github_workflow_repository,
        "ref": request.github_workflow_ref,
        "trigger": request.github_workflow_trigger,
        "sha": request.github_workflow_sha}.items() if v}
    return policy_from_flags(
        keys=request.keys, identity=request.identity, identity_regexp=request.identity_regexp,
        issuer=request.issuer, issuer_regexp=request.issuer_regexp, github=github or None,
        trust_policy=request.trust_policy, trust_store=request.trust_store,
        annotations=parse_annotations(request.annotations),
        require_tlog=request.require_tlog, trusted_root=root,
        rule="any" if request.rule is None else request.rule)


async def verify(request: VerifyRequest, registry: RegistryOptions) -> VerifyOutcome:
    """Verify the artifact at ``request.url`` against the policy it describes.

    The outcome names the digest verified (callers fetch by it, never by the tag again);
    ``outcome.passed`` is True only when the policy passed.
    """
    ref = parse_reference(request.url, require_scheme=True)
    policy = build_policy(request)
    async with registry.client() as client:
        return await verify_artifact(client, ref, policy)
