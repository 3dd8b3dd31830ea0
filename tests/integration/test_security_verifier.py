"""Security: the verifier against an attacker who controls the registry.

The attacker can push any manifest, tag, referrer and blob (here: to the embedded registry,
a real registry in this process, with :class:`RegistryClient`), but holds none of the
trusted keys, CAs or trust stores. Every case is end to end: the attacker's content is
pushed, and the real ``verify artifact`` CLI (or discovery plus policy evaluation) reads it.

1. notation ``audit`` level (and ``log`` overrides): a signature by the attacker's own CA
   was reported "ok" and counted; logged failures must never satisfy a policy.
2. ``--require``: a mistyped rule (``ALL``, ``alll``, ``²``) silently became ``any`` or
   crashed; it must be a one-line usage error.
3. attestations: a DSSE bundle with another predicate than cosign's signature predicate,
   made with the trusted CI key (SLSA provenance, a scan), approved a deploy.
4. notation: the whole target descriptor (media type too) must match the manifest.
5. JSON parser differentials: a signed simple-signing payload naming the digest twice.
6. hostile envelopes: failures are typed, one-line reasons, never raw exceptions.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ocigitops import mediatypes as mt
from ocigitops.artifact import go_json
from ocigitops.publisher.sign_cosign import (
    BUNDLE_MEDIA_TYPE,
    _store_legacy,
    build_bundle_manifest,
    build_key_bundle,
    bundle_annotations,
    sign_cosign_key,
)
from ocigitops.publisher.sign_notation import (
    ARTIFACT_TYPE as NOTATION_ARTIFACT_TYPE,
)
from ocigitops.publisher.sign_notation import (
    build_signature_manifest,
    sign_notation,
    signature_annotations,
)
from ocigitops.reference import Reference
from ocigitops.registry import Descriptor, RegistryClient, sha256_digest
from ocigitops.verifier import keys
from ocigitops.verifier.discovery import discover
from ocigitops.verifier.policy import NotationAuthority, SignaturePolicy, evaluate
from ocigitops.verifier.sigalg import sign
from ocigitops.verifier.simplesigning import LegacySignature
from ocigitops.verifier.trustpolicy import TrustStore, parse_trust_policy
from tests.helpers.cli import ocigitops
from tests.helpers.registries import Registry
from tests.helpers.vectors import b64url

pytestmark = pytest.mark.integration

T = TypeVar("T")
REV = "main@sha1:0123456789abcdef0123456789abcdef01234567"
GOOD_SIGNER = "x509.subject: C=US, ST=WA, O=Acme, CN=Release signer"
INDEX = "application/vnd.oci.image.index.v1+json"
SLSA = "https://slsa.dev/provenance/v1"
VULN = "https://cosign.sigstore.dev/attestation/vuln/v1"


# -- helpers ---------------------------------------------------------------------------------

def _run(reg: Registry, fn: Callable[[RegistryClient], Awaitable[T]]) -> T:
    async def go() -> T:
        async with RegistryClient(insecure=True) as client:
            return await fn(client)
    return asyncio.run(go())


def _push(reg: Registry, repo: str, tmp: Path) -> Descriptor:
    """Push a small artifact with the real CLI; its manifest descriptor."""
    src = tmp / f"src-{repo.replace('/', '-')}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "cm.yaml").write_text(f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"
                                 f"data:\n  repo: {repo}\n")
    out = ocigitops("push", "artifact", reg.url(repo) + ":v1", "--path", str(src),
                    "--source", "https://github.com/acme/app", "--revision", REV, "-o", "json",
                    *reg.cli_flags())
    digest = json.loads(out.stdout)["digest"]

    async def head(c: RegistryClient) -> Descriptor:
        return await c.head_manifest(Reference(reg.host, repo, digest=digest))
    desc = _run(reg, head)
    assert desc.digest == digest
    return desc


def _verify(reg: Registry, repo: str, *args: str) -> tuple[int, dict[str, Any], str]:
    res = ocigitops("verify", "artifact", reg.url(repo) + ":v1", "-o", "json",
                    *reg.cli_flags(), *args, check=False)
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode in (0, 1), (res.returncode, res.stderr)
    return res.returncode, json.loads(res.stdout), res.stderr


def _name(cn: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str, org: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn, org)).issuer_name(_name(cn, org))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, cn: str, org: str,
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn, org)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                         False), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


class Pki:
    """The trusted CA and signer (ours) and the attacker's own CA and signer."""

    def __init__(self) -> None:
        self.ca, ca_key = _ca("Acme Root", "Acme")
        self.good, self.good_key = _leaf(self.ca, ca_key, "Release signer", "Acme")
        self.evil_ca, evil_ca_key = _ca("Evil Root", "Evil")
        self.evil, self.evil_key = _leaf(self.evil_ca, evil_ca_key, "Evil signer", "Evil")


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def _trust(tmp: Path, pki: Pki, signature_verification: dict[str, Any],
           identity: str = GOOD_SIGNER) -> tuple[Path, Path]:
    """A trust policy file and a trust store directory that trust only the Acme root."""
    store = tmp / "truststore"
    (store / "x509" / "ca" / "corp").mkdir(parents=True, exist_ok=True)
    (store / "x509" / "ca" / "corp" / "root.pem").write_bytes(
        pki.ca.public_bytes(serialization.Encoding.PEM))
    policy = tmp / "trustpolicy.json"
    policy.write_text(json.dumps({"version": "1.0", "trustPolicies": [{
        "name": "corp", "registryScopes": ["*"],
        "signatureVerification": signature_verification,
        "trustStores": ["ca:corp"], "trustedIdentities": [identity]}]}))
    return policy, store


def _notation_sign(reg: Registry, repo: str, desc: Descriptor, cert: x509.Certificate,
                   key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, *,
                   media_type: str | None = None) -> None:
    async def go(c: RegistryClient) -> None:
        await sign_notation(c, Reference(reg.host, repo), desc.digest,
                            media_type or desc.media_type, desc.size, key, [cert, ca])
    _run(reg, go)


def _push_referrer(reg: Registry, repo: str, subject: Descriptor, blob: bytes,
                   manifest: Callable[[str], bytes], artifact_type: str,
                   annotations: dict[str, str]) -> None:
    async def go(c: RegistryClient) -> None:
        target = Reference(reg.host, repo)
        await c.push_blob(target, mt.EMPTY_JSON_DIGEST, len(mt.EMPTY_JSON), mt.EMPTY_JSON)
        blob_digest = sha256_digest(blob)
        await c.push_blob(target, blob_digest, len(blob), blob)
        await c.push_referrer(target, manifest(blob_digest), subject.digest, artifact_type,
                              annotations)
    _run(reg, go)


def _push_notation_envelope(reg: Registry, repo: str, subject: Descriptor, envelope: bytes,
                            chain: list[x509.Certificate]) -> None:
    """What the attacker can always do: store any bytes as a notation signature."""
    annotations = signature_annotations(chain, dt.datetime.now(dt.UTC))
    subj = {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size}
    _push_referrer(reg, repo, subject, envelope,
                   lambda d: build_signature_manifest("application/jose+json", d,
                                                      len(envelope), subj, annotations),
                   NOTATION_ARTIFACT_TYPE, annotations)


def _push_bundle(reg: Registry, repo: str, subject: Descriptor, bundle: bytes,
                 predicate_type: str) -> None:
    annotations = bundle_annotations(predicate_type=predicate_type)
    _push_referrer(reg, repo, subject, bundle,
                   lambda _d: build_bundle_manifest(bundle, subject, predicate_type=predicate_type,
                                                    created=annotations[mt.ANN_CREATED]),
                   BUNDLE_MEDIA_TYPE, annotations)


@pytest.fixture(scope="module")
def ci_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    """The trusted CI key (the attacker does not hold it) and its public key file."""
    key = ec.generate_private_key(ec.SECP256R1())
    pub = tmp_path_factory.mktemp("ci-key") / "cosign.pub"
    pub.write_bytes(keys.public_key_pem(key))
    return key, pub


def _one_authority(doc: dict[str, Any]) -> dict[str, Any]:
    (auth,) = doc["authorities"]
    assert isinstance(auth, dict)
    return auth


# -- 1. notation audit / log levels ------------------------------------------------------------

LOGGED_AUTHENTICITY = [
    pytest.param({"level": "audit"}, id="audit"),
    pytest.param({"level": "permissive", "override": {"authenticity": "log"}},
                 id="permissive-authenticity-log"),
    pytest.param({"level": "strict", "override": {"authenticity": "log"}},
                 id="strict-authenticity-log"),
]


@pytest.mark.parametrize("sv", LOGGED_AUTHENTICITY)
def test_attacker_ca_at_audit_level_is_not_a_pass(embedded_registry: Registry, pki: Pki,
                                                  tmp_path: Path, sv: dict[str, Any]) -> None:
    reg = embedded_registry
    repo = f"sec/notation-audit-{sv['level']}"
    desc = _push(reg, repo, tmp_path)
    # The attacker signs with a CA of their own, through our own signer.
    _notation_sign(reg, repo, desc, pki.evil, pki.evil_key, pki.evil_ca)
    policy, store = _trust(tmp_path, pki, sv)
    code, doc, _ = _verify(reg, repo, "--trust-policy", str(policy),
                           "--trust-store", str(store))
    auth = _one_authority(doc)
    assert code == 1 and doc["verified"] is False, doc
    assert auth["passed"] is False
    assert "audit/log level" in auth["reason"], auth["reason"]
    assert "logged failures never satisfy the policy" in auth["reason"]
    assert "authenticity failed" in auth["reason"]
    # It may say what it saw: the attacker's signer.
    assert "Evil signer" in auth["reason"]


def test_untrusted_identity_at_audit_level_is_not_a_pass(embedded_registry: Registry, pki: Pki,
                                                        tmp_path: Path) -> None:
    """The trusted-identity check was skipped the same way: a trusted CA, another signer."""
    reg = embedded_registry
    repo = "sec/notation-audit-identity"
    desc = _push(reg, repo, tmp_path)
    _notation_sign(reg, repo, desc, pki.good, pki.good_key, pki.ca)
    policy, store = _trust(tmp_path, pki, {"level": "audit"},
                           identity="x509.subject: C=US, ST=WA, O=Acme, CN=Security team")
    code, doc, _ = _verify(reg, repo, "--trust-policy", str(policy),
                           "--trust-store", str(store))
    auth = _one_authority(doc)
    assert code == 1 and not auth["passed"]
    assert "not a trusted identity" in auth["reason"]
    assert "logged failures never satisfy the policy" in auth["reason"]


def test_audit_level_with_every_check_passing_still_passes(embedded_registry: Registry,
                                                          pki: Pki, tmp_path: Path) -> None:
    reg = embedded_registry
    repo = "sec/notation-audit-good"
    desc = _push(reg, repo, tmp_path)
    _notation_sign(reg, repo, desc, pki.good, pki.good_key, pki.ca)
    policy, store = _trust(tmp_path, pki, {"level": "audit"})
    code, doc, _ = _verify(reg, repo, "--trust-policy", str(policy),
                           "--trust-store", str(store))
    assert code == 0 and _one_authority(doc)["passed"], doc


def test_audit_authority_never_counts_towards_any(embedded_registry: Registry, pki: Pki,
                                                  ci_key: tuple[Any, Path],
                                                  tmp_path: Path) -> None:
    """rule any over a cosign key (not signed) and an audit notation authority (attacker)."""
    reg = embedded_registry
    repo = "sec/notation-audit-any"
    desc = _push(reg, repo, tmp_path)
    _notation_sign(reg, repo, desc, pki.evil, pki.evil_key, pki.evil_ca)
    tp, store = _trust(tmp_path, pki, {"level": "audit"})
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "rule: any\nauthorities:\n"
        f"  - name: ci\n    cosign: {{keys: [{ci_key[1]}]}}\n"
        f"  - name: corp\n    notation: {{trustPolicy: {tp}, trustStores: "
        f"{{'ca:corp': {store / 'x509' / 'ca' / 'corp'}}}}}\n")
    code, doc, _ = _verify(reg, repo, "--policy", str(policy))
    assert code == 1 and doc["verified"] is False, doc
    assert [a["passed"] for a in doc["authorities"]] == [False, False]


# -- 2. --require ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def legacy_signed(embedded_registry: Registry, ci_key: tuple[Any, Path],
                  tmp_path_factory: pytest.TempPathFactory) -> str:
    """A repository whose artifact the CI key signed (legacy .sig)."""
    reg = embedded_registry
    repo = "sec/require"
    desc = _push(reg, repo, tmp_path_factory.mktemp("require"))

    async def go(c: RegistryClient) -> None:
        await sign_cosign_key(c, Reference(reg.host, repo), desc.digest, ci_key[0],
                              fmt="legacy")
    _run(reg, go)
    return repo


@pytest.mark.parametrize("rule", ["any", "1"])
def test_require_valid_values(embedded_registry: Registry, legacy_signed: str,
                              ci_key: tuple[Any, Path], rule: str) -> None:
    code, doc, _ = _verify(embedded_registry, legacy_signed, "--key", str(ci_key[1]),
                           "--require", rule)
    assert code == 0 and doc["verified"], doc


@pytest.mark.parametrize("rule", ["ALL", "All", "alll", "Any", "²", "0", "-1", "2", " 1",
                                  "1 ", "1.0", "", "\u0661"])
def test_require_mistyped_is_a_usage_error(embedded_registry: Registry, legacy_signed: str,
                                           ci_key: tuple[Any, Path], rule: str) -> None:
    res = ocigitops("verify", "artifact", embedded_registry.url(legacy_signed) + ":v1",
                    "--key", str(ci_key[1]), "--require", rule, *embedded_registry.cli_flags(),
                    check=False)
    assert res.returncode == 2, (rule, res.returncode, res.stdout, res.stderr)
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert "Traceback" not in res.stderr and not res.stdout
    assert ("any, all" in res.stderr) or ("cannot be met" in res.stderr), res.stderr


@pytest.mark.parametrize("rule", ["ALL", "'²'", "'0'", "'2'", "1.0", "true"])
def test_policy_document_rule_is_as_strict(embedded_registry: Registry, legacy_signed: str,
                                           ci_key: tuple[Any, Path], tmp_path: Path,
                                           rule: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"rule: {rule}\nauthorities:\n"
                      f"  - name: ci\n    cosign: {{keys: [{ci_key[1]}]}}\n")
    res = ocigitops("verify", "artifact", embedded_registry.url(legacy_signed) + ":v1",
                    "--policy", str(policy), *embedded_registry.cli_flags(), check=False)
    assert res.returncode == 2, (rule, res.stdout, res.stderr)
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr


def test_require_with_policy_file_is_refused(embedded_registry: Registry, legacy_signed: str,
                                             ci_key: tuple[Any, Path], tmp_path: Path) -> None:
    """--require next to --policy was silently ignored; say so instead."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"authorities:\n  - name: ci\n    cosign: {{keys: [{ci_key[1]}]}}\n")
    res = ocigitops("verify", "artifact", embedded_registry.url(legacy_signed) + ":v1",
                    "--policy", str(policy), "--require", "all",
                    *embedded_registry.cli_flags(), check=False)
    assert res.returncode == 2 and res.stderr.startswith("error: --require"), res.stderr


# -- 3. attestations are not signatures --------------------------------------------------------

def _statement(repo: str, digest: str, predicate_type: str | None) -> bytes:
    doc: dict[str, Any] = {"_type": "https://in-toto.io/Statement/v1",
                           "subject": [{"name": repo, "digest": {"sha256": digest[7:]}}]}
    if predicate_type is not None:
        doc["predicateType"] = predicate_type
        doc["predicate"] = {"buildDefinition": {"buildType": "https://example.com/ci"},
                            "runDetails": {"builder": {"id": "https://ci.example.com"}}}
    return go_json(doc)


@pytest.mark.parametrize("predicate", [SLSA, VULN, "https://sigstore.dev/cosign/sign/v2", None])
def test_trusted_key_attestation_does_not_approve(embedded_registry: Registry,
                                                  ci_key: tuple[Any, Path], tmp_path: Path,
                                                  predicate: str | None) -> None:
    reg = embedded_registry
    # A repository of its own: the same tree pushed within the same second has the same
    # digest, so an earlier parameter's bundle would still be a referrer of it.
    repo = f"sec/attestation-{uuid.uuid4().hex[:8]}"
    desc = _push(reg, repo, tmp_path)
    # The trusted CI key signed a provenance/scan statement about the digest (a genuine,
    # valid DSSE bundle); the registry serves it as a bundle referrer.
    bundle = build_key_bundle(ci_key[0], _statement(repo, desc.digest, predicate))
    _push_bundle(reg, repo, desc, bundle, predicate or "")
    code, doc, _ = _verify(reg, repo, "--key", str(ci_key[1]))
    assert [s["kind"] for s in doc["signatures"]] == ["cosign-bundle"]
    auth = _one_authority(doc)
    assert code == 1 and not auth["passed"], doc
    assert "is an attestation" in auth["reason"], auth["reason"]
    assert "https://sigstore.dev/cosign/sign/v1" in auth["reason"]


def test_signature_predicate_bundle_still_verifies(embedded_registry: Registry,
                                                   ci_key: tuple[Any, Path],
                                                   tmp_path: Path) -> None:
    reg = embedded_registry
    repo = "sec/attestation-control"
    desc = _push(reg, repo, tmp_path)

    async def go(c: RegistryClient) -> None:
        await sign_cosign_key(c, Reference(reg.host, repo), desc.digest, ci_key[0])
    _run(reg, go)
    code, doc, _ = _verify(reg, repo, "--key", str(ci_key[1]))
    assert code == 0 and doc["verified"], doc


# -- 4. notation: the whole target descriptor --------------------------------------------------

def test_notation_target_media_type_must_match(embedded_registry: Registry, pki: Pki,
                                               tmp_path: Path) -> None:
    """A genuine signature of the digest, but for another media type, does not count once
    the subject media type is known (``evaluate(subject_media_type=...)``)."""
    reg = embedded_registry
    repo = "sec/notation-media-type"
    desc = _push(reg, repo, tmp_path)
    _notation_sign(reg, repo, desc, pki.good, pki.good_key, pki.ca, media_type=INDEX)

    async def found(c: RegistryClient) -> Any:
        return await discover(c, Reference(reg.host, repo), desc.digest, legacy=False)
    cands = _run(reg, found).candidates
    tp, store = _trust(tmp_path, pki, {"level": "strict"})
    pol = SignaturePolicy((NotationAuthority(
        "corp", parse_trust_policy(tp.read_bytes()), TrustStore.from_directory(store)),))
    name = f"{reg.host}/{repo}"
    r = evaluate(pol, desc.digest, cands, repository=name, subject_size=desc.size or None,
                 subject_media_type=desc.media_type)
    assert not r.passed, r.summary()
    assert f"names media type '{INDEX}'" in r.authorities[0].reason
    assert evaluate(pol, desc.digest, cands, repository=name,
                    subject_media_type=INDEX).passed


def test_notation_target_media_type_must_match_through_the_cli(embedded_registry: Registry,
                                                               pki: Pki,
                                                               tmp_path: Path) -> None:
    """The same through ``verify artifact`` (verify_artifact passes the manifest's type)."""
    reg = embedded_registry
    repo = "sec/notation-media-type-cli"
    desc = _push(reg, repo, tmp_path)
    _notation_sign(reg, repo, desc, pki.good, pki.good_key, pki.ca, media_type=INDEX)
    policy, store = _trust(tmp_path, pki, {"level": "strict"})
    code, doc, _ = _verify(reg, repo, "--trust-policy", str(policy),
                           "--trust-store", str(store))
    auth = _one_authority(doc)
    assert code == 1 and not auth["passed"], doc
    assert f"names media type '{INDEX}'" in auth["reason"], auth["reason"]


# -- 5. JSON parser differentials --------------------------------------------------------------

def _ambiguous_payload(repo: str, first: tuple[str, str], second: tuple[str, str]) -> bytes:
    image = f'"{first[0]}":"{first[1]}","{second[0]}":"{second[1]}"'
    return ('{"critical":{"identity":{"docker-reference":"' + repo + '"},"image":{' + image
            + '},"type":"cosign container image signature"},"optional":null}').encode()


OTHER = "sha256:" + "0" * 63 + "1"


@pytest.mark.parametrize("order", ["exact-duplicate", "case-variant"])
def test_duplicate_digest_in_signed_payload_fails(embedded_registry: Registry,
                                                  ci_key: tuple[Any, Path], tmp_path: Path,
                                                  order: str) -> None:
    """The trusted key signed an ambiguous payload. Python's json keeps the last duplicate
    and reads only the exact key; Go's encoding/json (cosign, Flux) keeps the last key that
    matches ignoring case. Either way someone reads another digest than we would."""
    reg = embedded_registry
    repo = f"sec/dup-{order}"
    desc = _push(reg, repo, tmp_path)
    key = "docker-manifest-digest"
    if order == "exact-duplicate":
        payload = _ambiguous_payload(repo, (key, OTHER), (key, desc.digest))
    else:  # we would read the exact key (ours), Go the later case variant (another)
        payload = _ambiguous_payload(repo, (key, desc.digest), ("Docker-Manifest-Digest", OTHER))
    sig = LegacySignature(payload=payload, signature=sign(ci_key[0], payload))

    async def go(c: RegistryClient) -> None:
        await _store_legacy(c, Reference(reg.host, repo), desc.digest, payload,
                            sig.annotations(), ci_key[0].public_key())
    _run(reg, go)
    code, doc, _ = _verify(reg, repo, "--key", str(ci_key[1]))
    assert [s["kind"] for s in doc["signatures"]] == ["cosign-legacy"]
    auth = _one_authority(doc)
    assert code == 1 and not auth["passed"], doc
    assert "twice" in auth["reason"] and "MalformedSignatureError" in auth["reason"]


# -- 6. hostile envelopes: typed, one-line reasons ---------------------------------------------

def _jws(pki: Pki, header: dict[str, Any], payload: bytes = b"{}") -> bytes:
    return json.dumps({"payload": b64url(payload),
                       "protected": b64url(json.dumps(header).encode()),
                       "header": {"x5c": [base64.b64encode(pki.evil.public_bytes(
                           serialization.Encoding.DER)).decode()]},
                       "signature": b64url(b"\x01" * 64)}).encode()


def _header(**extra: Any) -> dict[str, Any]:
    h: dict[str, Any] = {"alg": "ES256", "cty": "application/vnd.cncf.notary.payload.v1+json",
                         "crit": ["io.cncf.notary.signingScheme"],
                         "io.cncf.notary.signingScheme": "notary.x509",
                         "io.cncf.notary.signingTime": "2025-01-01T00:00:00Z"}
    h.update(extra)
    return h


def _hostile_envelopes(pki: Pki) -> dict[str, tuple[bytes, str]]:
    deep = b'{"payload":' + b"[" * 50000 + b"]" * 50000 + b"}"
    return {
        "deep-nesting": (deep, "nested too deeply"),
        "huge-expiry": (_jws(pki, _header(**{
            "crit": ["io.cncf.notary.signingScheme", "io.cncf.notary.expiry"],
            "io.cncf.notary.expiry": 1e300})), "out of range"),
        "huge-signing-time": (_jws(pki, _header(**{"io.cncf.notary.signingTime": 10 ** 30})),
                     "out of range"),
        "duplicate-header": (_jws(pki, _header()).replace(
            b'"protected": "', b'"Protected": "x", "protected": "'), "twice"),
    }


@pytest.mark.parametrize("case", ["deep-nesting", "huge-expiry", "huge-signing-time",
                                  "duplicate-header"])
def test_hostile_notation_envelopes_fail_with_typed_reasons(embedded_registry: Registry,
                                                            pki: Pki, tmp_path: Path,
                                                            case: str) -> None:
    reg = embedded_registry
    repo = f"sec/hostile-{case}"
    desc = _push(reg, repo, tmp_path)
    envelope, expected = _hostile_envelopes(pki)[case]
    _push_notation_envelope(reg, repo, desc, envelope, [pki.evil])
    policy, store = _trust(tmp_path, pki, {"level": "strict"})
    code, doc, _ = _verify(reg, repo, "--trust-policy", str(policy),
                           "--trust-store", str(store))
    reason = _one_authority(doc)["reason"]
    assert code == 1 and "\n" not in reason, reason
    assert reason.startswith("envelope 0: MalformedSignatureError: "), reason
    assert expected in reason, reason


def test_hostile_bundle_reason_is_one_line(embedded_registry: Registry,
                                           ci_key: tuple[Any, Path], tmp_path: Path) -> None:
    """A bundle the protobuf models refuse with a multi-line message."""
    reg = embedded_registry
    repo = "sec/hostile-bundle"
    desc = _push(reg, repo, tmp_path)
    bundle = json.dumps({"mediaType": BUNDLE_MEDIA_TYPE, "verificationMaterial": {
        "publicKey": {"hint": "x"}, "tlogEntries": [{"logIndex": "x"}, 5]},
        "dsseEnvelope": {"payload": 5, "signatures": "x"}}).encode()
    _push_bundle(reg, repo, desc, bundle, "https://sigstore.dev/cosign/sign/v1")
    code, doc, _ = _verify(reg, repo, "--key", str(ci_key[1]))
    reason = _one_authority(doc)["reason"]
    assert code == 1 and "\n" not in reason and "MalformedSignatureError" in reason, reason
