"""OCIRepository (``ocigitops.dev/v1``): Flux's source.toolkit.fluxcd.io/v1 OCIRepository,
with ``spec.verify`` extended to a signature policy.

``spec.verify`` takes one of two forms:

- Flux's: ``provider`` (``cosign``, the default, or ``notation``), ``secretRef`` (cosign
  ``*.pub`` keys, or a notation ``trustpolicy.json`` plus ``*.crt``/``*.pem``),
  ``matchOIDCIdentity`` (keyless: issuer and subject regular expressions, OR'ed), and
  ``trustedRootSecretRef``;
- the policy form: ``rule`` (``any``, ``all`` or a number) and ``authorities``, each one of
  ``cosign`` (keys in a Secret, required annotations, transparency log), ``keyless``
  (identities: exact or regexp issuer and subject, GitHub claims) or ``notation`` (a Secret
  with a trust policy and certificates); plus ``attestations``, the in-toto attestations the
  artifact must carry (the CLI policy file's ``attestations:``, field for field).

``attestations`` belong to the policy form only: each names the authorities that may sign
it, and Flux's form has no authority names to refer to (its implicit ``cosign`` /
``cosign-keyless`` / ``notation`` are an implementation detail, not API). The schema refuses
them next to ``provider``/``secretRef``/``matchOIDCIdentity``; the controller reports such
a spec Stalled, as any spec the API server should have refused.

What the schema cannot check is checked when the spec is parsed (names of authorities that
exist and are not notation: notation signs the manifest, not in-toto statements; a positive
``maxAge``) or when the policy is loaded (CEL conditions compile:
:func:`ocigitops.puller.api.verification.attestation_requirements`).

Both map onto :class:`ocigitops.verifier.policy.SignaturePolicy`
(:func:`ocigitops.verifier.policy.parse_policy` and
:func:`ocigitops.verifier.policy.from_flux_verify`); the schema admits exactly what those
accept.
"""

# prop() is this package's dataclass field specifier (it returns dataclasses.field).
# ruff: noqa: RUF009

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ocigitops.duration import DURATION_PATTERN, TIMEOUT_PATTERN, parse_duration
from ocigitops.puller.api.meta import (
    NAME_MAX,
    Condition,
    IntervalTimeoutMixin,
    LocalObjectReference,
    ObjectMeta,
    ReadyMixin,
    parse_object,
)
from ocigitops.puller.api.schema import Constraint, FieldError, prop
from ocigitops.verifier.conditions import MAX_EXPRESSION_CHARS

KIND = "OCIRepository"
PLURAL = "ocirepositories"
SINGULAR = "ocirepository"
SHORT_NAMES = ("ocirepo",)

Provider = Literal["generic", "aws", "azure", "gcp"]
VerifyProvider = Literal["cosign", "notation"]
LayerOperation = Literal["extract", "copy"]

DIGEST_PATTERN = r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$"
RULE_PATTERN = r"^(any|all|[1-9][0-9]*)$"
#: Bounds of ``attestations`` (hostile input is bounded; real policies have a handful).
MAX_ATTESTATIONS = 32
MAX_CONDITIONS = 32


def _regex(value: str | None, what: str) -> None:
    if value is None:
        return
    try:
        re.compile(value)
    except re.error as exc:
        raise FieldError(what, f"{value!r} is not a valid regular expression: {exc}") from exc


# -- spec ----------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class OCIRepositoryRef:
    """OCIRepositoryRef selects the artifact: digest wins over semver, semver over tag; with
    none of them the tag ``latest`` is used."""

    digest: str | None = prop("The image digest to pull, takes precedence over SemVer. The "
                              "value should be in the format 'sha256:<HASH>'.", default=None)
    semver: str | None = prop("The range of tags to pull selecting the latest within the "
                              "range, takes precedence over Tag.", default=None)
    semver_filter: str | None = prop("A regular expression that filters the tags before "
                                     "the semver range is applied.", default=None)
    tag: str | None = prop("The image tag to pull, defaults to latest.", default=None)

    def __post_init__(self) -> None:
        _regex(self.semver_filter, "semverFilter")
        if not (self.digest or self.semver or self.tag):
            object.__setattr__(self, "tag", "latest")

    @property
    def kind(self) -> Literal["digest", "semver", "tag"]:
        """Which selector is in force (digest > semver > tag)."""
        if self.digest:
            return "digest"
        if self.semver:
            return "semver"
        return "tag"


@dataclass(frozen=True, kw_only=True)
class LayerSelector:
    """LayerSelector specifies which layer should be extracted from the OCI Artifact."""

    media_type: str | None = prop("The first layer matching this type is selected; by "
                                  "default the first layer.", default=None)
    operation: LayerOperation | None = prop(
        "How the selected layer is handled: 'extract' (default) untars it, 'copy' stores "
        "it as is.", default=None)


@dataclass(frozen=True, kw_only=True)
class OIDCIdentityMatch:
    """OIDCIdentityMatch (Flux form): regular expressions for the issuer and the subject of
    a keyless signing certificate; entries are OR'ed."""

    issuer: str = prop("A regular expression matched against the OIDC issuer.",
                       min_length=1)
    subject: str = prop("A regular expression matched against the certificate identity.",
                        min_length=1)

    def __post_init__(self) -> None:
        _regex(self.issuer, "issuer")
        _regex(self.subject, "subject")


@dataclass(frozen=True, kw_only=True)
class GitHubClaims:
    """GitHub workflow claims a keyless certificate must carry (compared exactly)."""

    repository: str | None = prop("The repository, owner/name.", default=None)
    ref: str | None = prop("The Git ref, e.g. refs/heads/main.", default=None)
    trigger: str | None = prop("The workflow trigger event, e.g. push.", default=None)
    sha: str | None = prop("The commit SHA.", default=None)
    workflow: str | None = prop("The workflow name.", default=None)


@dataclass(frozen=True, kw_only=True)
class KeylessIdentity:
    """A keyless signer identity: exactly one of issuer and issuerRegExp, exactly one of
    subject and subjectRegExp."""

    __api_constraints__ = (
        Constraint({"oneOf": [{"required": ["issuer"]}, {"required": ["issuerRegExp"]}]},
                   "exactly one of issuer and issuerRegExp is required"),
        Constraint({"oneOf": [{"required": ["subject"]}, {"required": ["subjectRegExp"]}]},
                   "exactly one of subject and subjectRegExp is required"),
    )

    issuer: str | None = prop("The OIDC issuer, matched exactly.", default=None, min_length=1)
    issuer_reg_exp: str | None = prop("A regular expression for the OIDC issuer.",
                                      default=None, min_length=1, max_length=1024)
    subject: str | None = prop("The certificate identity (SAN), matched exactly.",
                               default=None, min_length=1)
    subject_reg_exp: str | None = prop("A regular expression for the certificate identity.",
                                       default=None, min_length=1, max_length=1024)
    github: GitHubClaims | None = prop("GitHub workflow claims the certificate must carry.",
                                       default=None)

    def __post_init__(self) -> None:
        _regex(self.issuer_reg_exp, "issuerRegExp")
        _regex(self.subject_reg_exp, "subjectRegExp")


@dataclass(frozen=True, kw_only=True)
class CosignAuthority:
    """Cosign signatures made with one of the public keys in a Secret."""

    secret_ref: LocalObjectReference = prop(
        "A Secret whose *.pub entries are the accepted cosign public keys.")
    annotations: Mapping[str, str] = prop(
        "Annotations the signature payload must carry.", default_factory=dict)
    tlog: bool = prop("Require a transparency log entry (Rekor) for the signature.",
                      default=False)


@dataclass(frozen=True, kw_only=True)
class KeylessAuthority:
    """Cosign keyless (Fulcio certificate) signatures from one of the identities."""

    identities: tuple[KeylessIdentity, ...] = prop("The accepted signer identities.",
                                                   min_items=1)
    trusted_root_secret_ref: LocalObjectReference | None = prop(
        "A Secret with a trusted_root.json for offline verification (Sigstore public-good "
        "instance by default).", default=None)


@dataclass(frozen=True, kw_only=True)
class NotationAuthority:
    """Notation signatures accepted by a trust policy."""

    secret_ref: LocalObjectReference = prop(
        "A Secret holding trustpolicy.json and the trust store certificates (*.crt, *.pem).")


@dataclass(frozen=True, kw_only=True)
class Authority:
    """An authority that may vouch for the artifact: exactly one of cosign, keyless and
    notation."""

    __api_constraints__ = (
        Constraint({"oneOf": [{"required": ["cosign"]}, {"required": ["keyless"]},
                              {"required": ["notation"]}]},
                   "exactly one of cosign, keyless and notation is required"),
    )

    name: str = prop("Name of the authority, reported in status.", min_length=1,
                     max_length=NAME_MAX)
    cosign: CosignAuthority | None = prop("Cosign public keys.", default=None)
    keyless: KeylessAuthority | None = prop("Cosign keyless identities.", default=None)
    notation: NotationAuthority | None = prop("A notation trust policy.", default=None)

    @property
    def kind(self) -> Literal["cosign", "keyless", "notation"]:
        """Which of cosign, keyless and notation this authority is (the verifier's names)."""
        if self.cosign is not None:
            return "cosign"
        if self.keyless is not None:
            return "keyless"
        return "notation"


@dataclass(frozen=True, kw_only=True)
class AttestationRequirement:
    """An attestation the artifact must carry: an in-toto statement of predicateType about
    its digest, signed by one of the authorities, no older than maxAge, whose predicate
    makes every CEL condition true."""

    name: str = prop("Name of the requirement, reported in status.", min_length=1,
                     max_length=NAME_MAX)
    predicate_type: str = prop(
        "The predicate type: a URI, or one of cosign's names (custom, slsaprovenance, "
        "slsaprovenance02, slsaprovenance1, spdx, spdxjson, cyclonedx, link, vuln, openvex).",
        min_length=1, max_length=1024)
    authorities: tuple[str, ...] = prop(
        "Names of this policy's cosign or keyless authorities; one of them must have signed "
        "the attestation.", min_items=1, max_items=MAX_ATTESTATIONS,
        extra={"items": {"type": "string", "minLength": 1, "maxLength": NAME_MAX}})
    conditions: tuple[str, ...] = prop(
        "CEL expressions over the variable predicate; each must evaluate to true (an error "
        "counts as false).", default=(), max_items=MAX_CONDITIONS,
        extra={"items": {"type": "string", "minLength": 1,
                         "maxLength": MAX_EXPRESSION_CHARS}})
    max_age: str | None = prop(
        "The oldest signed time accepted, a duration such as 168h (the transparency-log or "
        "timestamp time, else the predicate's own timestamp).", default=None,
        pattern=DURATION_PATTERN)

    def __post_init__(self) -> None:
        # The CRD's item schemas say the same; the parser checks them here because it
        # applies a list field's bounds to the list, not to its items.
        for i, a in enumerate(self.authorities):
            if not a or len(a) > NAME_MAX:
                raise FieldError(f"authorities[{i}]", "must be an authority name of 1 to "
                                 f"{NAME_MAX} characters")
        for i, c in enumerate(self.conditions):
            if not c.strip() or len(c) > MAX_EXPRESSION_CHARS:
                raise FieldError(f"conditions[{i}]", "must be a CEL expression of 1 to "
                                 f"{MAX_EXPRESSION_CHARS} characters")
        if self.max_age is not None and parse_duration(self.max_age) <= 0:
            raise FieldError("maxAge", "must be positive")


_FLUX_FORM = [{"required": ["provider"]}, {"required": ["secretRef"]},
              {"required": ["matchOIDCIdentity"]}]


@dataclass(frozen=True, kw_only=True)
class OCIRepositoryVerification:
    """Verification of the artifact's signatures, in Flux's form (provider, secretRef,
    matchOIDCIdentity) or as a policy (rule, authorities)."""

    __api_constraints__ = (
        Constraint({"not": {"allOf": [{"required": ["authorities"]},
                                      {"anyOf": _FLUX_FORM}]}},
                   "use either provider/secretRef/matchOIDCIdentity or authorities, not both"),
        Constraint({"not": {"allOf": [{"required": ["rule"]},
                                      {"not": {"required": ["authorities"]}}]}},
                   "rule applies to authorities only"),
        Constraint({"not": {"allOf": [{"required": ["provider"],
                                       "properties": {"provider": {"enum": ["notation"]}}},
                                      {"not": {"required": ["secretRef"]}}]}},
                   "provider notation needs a secretRef with trustpolicy.json and "
                   "certificates"),
        Constraint({"anyOf": [{"required": ["authorities"]}, {"required": ["secretRef"]},
                              {"required": ["matchOIDCIdentity"]}]},
                   "give secretRef (keys or a trust policy), matchOIDCIdentity (keyless) "
                   "or authorities"),
        Constraint({"not": {"allOf": [{"required": ["attestations"]},
                                      {"not": {"required": ["authorities"]}}]}},
                   "attestations need the policy form: list the authorities that sign "
                   "them (provider/secretRef/matchOIDCIdentity cannot)"),
    )

    provider: VerifyProvider | None = prop(
        "Flux form: the verification provider, cosign (the default) or notation.",
        default=None)
    secret_ref: LocalObjectReference | None = prop(
        "Flux form: a Secret with cosign *.pub keys, or with a notation trustpolicy.json "
        "and certificates.", default=None)
    match_oidc_identity: tuple[OIDCIdentityMatch, ...] = prop(
        "Flux form: keyless identities (regular expressions), OR'ed.", json="matchOIDCIdentity",
        default=(), min_items=1)
    trusted_root_secret_ref: LocalObjectReference | None = prop(
        "A Secret with a Sigstore trusted_root.json, used by cosign keys with a "
        "transparency log and by keyless identities.", default=None)
    rule: int | str | None = prop(
        "Policy form: how many authorities must pass: any (default), all, or a number.",
        default=None, pattern=RULE_PATTERN, minimum=1)
    authorities: tuple[Authority, ...] = prop(
        "Policy form: the authorities that may vouch for the artifact.", default=(),
        min_items=1, list_map_keys=("name",))
    attestations: tuple[AttestationRequirement, ...] = prop(
        "Policy form: attestations the artifact must carry; every one must pass, whatever "
        "the rule.", default=(), min_items=1, max_items=MAX_ATTESTATIONS,
        list_map_keys=("name",))

    def __post_init__(self) -> None:
        rule = self.effective_rule
        if isinstance(rule, int) and rule > len(self.authorities):
            raise FieldError("rule", f"{rule} cannot be met by {len(self.authorities)} "
                             "authorities")
        kinds = {a.name: a.kind for a in self.authorities}
        for i, req in enumerate(self.attestations):
            for name in req.authorities:
                where = f"attestations[{i}].authorities"
                if name not in kinds:
                    raise FieldError(where, f"attestation {req.name!r}: no authority named "
                                     f"{name!r}")
                if kinds[name] == "notation":
                    raise FieldError(where, f"attestation {req.name!r}: {name!r} is a "
                                     "notation authority; notation cannot sign attestations "
                                     "(cosign key and keyless authorities only)")

    @property
    def is_policy(self) -> bool:
        """True for the policy form (authorities), False for Flux's form."""
        return bool(self.authorities)

    @property
    def effective_provider(self) -> VerifyProvider:
        """The Flux-form provider with its default applied."""
        return self.provider or "cosign"

    @property
    def effective_rule(self) -> int | str:
        """``any``, ``all`` or a positive count."""
        if self.rule is None:
            return "any"
        if isinstance(self.rule, str) and self.rule.isdigit():
            return int(self.rule)
        return self.rule


@dataclass(frozen=True, kw_only=True)
class OCIRepositorySpec(IntervalTimeoutMixin):
    """OCIRepositorySpec defines the desired state of OCIRepository."""

    url: str = prop("The OCI repository address, oci://registry/repository, without a tag "
                    "or digest.", pattern=r"^oci://.*$")
    ref: OCIRepositoryRef = prop("The OCI artifact reference; defaults to the tag latest.",
                                 default_factory=OCIRepositoryRef)
    layer_selector: LayerSelector | None = prop(
        "Which layer of the artifact to extract.", default=None)
    provider: Provider = prop(
        "The provider of registry credentials: generic (the default), aws, azure, gcp.",
        default="generic", schema_default="generic")
    secret_ref: LocalObjectReference | None = prop(
        "A Secret of type kubernetes.io/dockerconfigjson with registry credentials.",
        default=None)
    service_account_name: str | None = prop(
        "A ServiceAccount in the same namespace whose imagePullSecrets give registry "
        "credentials.", default=None)
    cert_secret_ref: LocalObjectReference | None = prop(
        "A Secret with tls.crt, tls.key and ca.crt for mutual TLS and a custom CA.",
        default=None)
    proxy_secret_ref: LocalObjectReference | None = prop(
        "A Secret with the proxy address and credentials to reach the registry.",
        default=None)
    verify: OCIRepositoryVerification | None = prop(
        "Verify the artifact's signatures before it is used.", default=None)
    insecure: bool = prop("Allow plain HTTP connections to the registry.", default=False)
    ignore: str | None = prop("Paths to ignore in the artifact, in .gitignore syntax.",
                              default=None)
    interval: str = prop("How often the repository is checked for a new artifact.",
                         pattern=DURATION_PATTERN)
    timeout: str = prop("The timeout of registry operations, defaults to 60s.",
                        default="60s", schema_default="60s", pattern=TIMEOUT_PATTERN)
    suspend: bool = prop("Suspend reconciliation of this source.", default=False)

    def __post_init__(self) -> None:
        rest = self.url.removeprefix("oci://")
        host, sep, path = rest.partition("/")
        if not host or not sep or not path:
            raise FieldError("url", f"{self.url!r} must be oci://HOST/REPOSITORY")
        if ":" in path or "@" in path:
            raise FieldError("url", f"{self.url!r} must not contain a tag or digest: use "
                             "spec.ref")


# -- status --------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Artifact:
    """Artifact represents the output of a Source reconciliation."""

    digest: str | None = prop("The digest of the artifact file, <algorithm>:<checksum>.",
                              default=None, pattern=DIGEST_PATTERN)
    last_update_time: str = prop("When the artifact was last updated.", fmt="date-time")
    metadata: Mapping[str, str] = prop("The artifact's manifest annotations.",
                                       default_factory=dict)
    path: str = prop("The path of the artifact relative to the storage root.")
    revision: str = prop("The source revision, <tag>@sha256:<digest> or sha256:<digest>.")
    size: int | None = prop("The size of the artifact file in bytes.", default=None)
    url: str = prop("Where the artifact can be read (the controller's content cache).")


@dataclass(frozen=True, kw_only=True)
class AuthorityStatus:
    """The outcome of one verification authority."""

    name: str = prop("The authority's name (Flux form: cosign, cosign-keyless, notation).")
    passed: bool = prop("Whether a signature from this authority verified.")
    reason: str = prop("Why it passed or failed.", default="")
    signer: str | None = prop("Who signed: key hint, keyless identity or X.509 subject.",
                              default=None)


@dataclass(frozen=True, kw_only=True)
class AttestationStatus:
    """The outcome of one attestation requirement."""

    name: str = prop("The requirement's name.")
    predicate_type: str = prop("The predicate type required (a URI).")
    passed: bool = prop("Whether an attestation satisfied the requirement.")
    reason: str = prop("Why it passed or failed (the failed condition, the age...).",
                       default="")
    signer: str | None = prop("Who signed the attestation judged: key hint or keyless "
                              "identity.", default=None)


@dataclass(frozen=True, kw_only=True)
class VerificationStatus:
    """Which authorities verified the artifact, for which digest."""

    digest: str = prop("The manifest digest that was verified.")
    authorities: tuple[AuthorityStatus, ...] = prop("Per-authority outcome.", default=())
    attestations: tuple[AttestationStatus, ...] | None = prop(
        "Per-requirement outcome, when the policy requires attestations.", default=None)


@dataclass(frozen=True, kw_only=True)
class OCIRepositoryStatus:
    """OCIRepositoryStatus defines the observed state of OCIRepository."""

    observed_generation: int | None = prop("The last observed generation.", default=None)
    conditions: tuple[Condition, ...] = prop("Conditions holds the conditions for the "
                                             "OCIRepository.", default=())
    artifact: Artifact | None = prop("The output of the last successful reconciliation.",
                                     default=None)
    observed_ignore: str | None = prop("The spec.ignore of the last artifact.", default=None)
    observed_layer_selector: LayerSelector | None = prop(
        "The spec.layerSelector of the last artifact.", default=None)
    last_handled_reconcile_at: str | None = prop(
        "The value of the requestedAt annotation last handled.", default=None)
    verification: VerificationStatus | None = prop(
        "Which authorities verified the artifact.", default=None)


# -- object --------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class OCIRepository(ReadyMixin):
    """An OCIRepository object: metadata, spec and status."""

    metadata: ObjectMeta
    spec: OCIRepositorySpec
    status: OCIRepositoryStatus = field(default_factory=OCIRepositoryStatus)


def parse_oci_repository(obj: Mapping[str, Any]) -> OCIRepository:
    """Parse an OCIRepository custom object dict (``ValidationError`` on a bad spec).

    A status that does not parse (written by another version) is replaced by an empty one,
    so it never blocks a reconcile.
    """
    meta, spec, status = parse_object(obj, KIND, OCIRepositorySpec, OCIRepositoryStatus)
    return OCIRepository(metadata=meta, spec=spec, status=status)

