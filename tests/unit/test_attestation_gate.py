"""The controller's attestation gate (issue 13, deploy time), below the API server.

- the API: ``spec.verify.attestations`` in the policy form, what the schema and the parser
  refuse (the Flux form, unknown or notation authorities, a bad ``maxAge``...), and the
  generated CRD carrying it;
- the mapping onto the verifier's policy (the CLI policy file's parser, CEL compiled, a
  condition that does not compile refused with its position);
- the OCIRepository reconcile against the embedded registry (127.0.0.1) with real signed
  attestations: a failing requirement refuses the revision like a bad signature, the last
  good artifact is kept, a passing one is verified and stored, a condition that does not
  compile stalls the object before any I/O. Cluster reads come from
  :class:`tests.helpers.memkube.MemKube` (writes are tested in
  tests/e2e/test_attestation_gate.py).
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from ocigitops.publisher.attest import AttestOptions, attest_predicate, load_attester
from ocigitops.puller import crdgen
from ocigitops.puller.api import ValidationError, parse_oci_repository
from ocigitops.puller.api.ocirepository import OCIRepositoryStatus, OCIRepositoryVerification
from ocigitops.puller.api.verification import attestation_requirements, build_signature_policy
from ocigitops.puller.cache import ArtifactCache
from ocigitops.puller.reconcile import Outcome, typed_status
from ocigitops.puller.sources import oci
from ocigitops.reference import parse_reference
from ocigitops.registry import RegistryClient
from ocigitops.regserver import BackgroundRegistry
from ocigitops.verifier.errors import ConditionCompileError, PolicyError
from ocigitops.verifier.keys import generate_key_pair
from tests.helpers.memkube import MemKube
from tests.helpers.paths import DEPLOY
from tests.helpers.publish import configmap, manifest_tree, publish

pytestmark = pytest.mark.unit

NS = "apps"
TRIVY = "https://ocigitops.dev/attestations/trivy-config/v1"
NO_CRITICAL = ("!predicate.Results.exists(r, has(r.Misconfigurations) && "
               "r.Misconfigurations.exists(m, m.Severity == 'CRITICAL'))")
KEYLESS_ID = {"issuer": "https://token.actions.githubusercontent.com",
              "subjectRegExp": "^https://github.com/acme/"}


def _obj(verify: dict[str, Any], url: str = "oci://ghcr.io/acme/app", tag: str = "v1",
         generation: int = 1) -> dict[str, Any]:
    return {"apiVersion": "ocigitops.dev/v1", "kind": "OCIRepository",
            "metadata": {"name": "web", "namespace": NS, "generation": generation},
            "spec": {"url": url, "ref": {"tag": tag}, "interval": "5m", "insecure": True,
                     "verify": verify}}


def _req(**over: Any) -> dict[str, Any]:
    req: dict[str, Any] = {"name": "no-critical", "predicateType": TRIVY,
                           "authorities": ["release-key"], "maxAge": "168h",
                           "conditions": [NO_CRITICAL]}
    req.update(over)
    return {k: v for k, v in req.items() if v is not None}


def _policy(*reqs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"authorities": [
        {"name": "release-key", "cosign": {"secretRef": {"name": "cosign-pub"}}},
        {"name": "ci", "keyless": {"identities": [KEYLESS_ID]}},
        {"name": "notary", "notation": {"secretRef": {"name": "tp"}}}],
        "attestations": list(reqs), **extra}


def _verify(verify: dict[str, Any]) -> OCIRepositoryVerification:
    v = parse_oci_repository(_obj(verify)).spec.verify
    assert v is not None
    return v


def _errors(verify: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        parse_oci_repository(_obj(verify))
    return str(info.value)


# -- API -----------------------------------------------------------------------------------

def test_policy_form_parses_attestations() -> None:
    v = _verify(_policy(_req(), _req(name="provenance", predicateType="slsaprovenance1",
                                     authorities=["release-key", "ci"], maxAge=None,
                                     conditions=None)))
    first, second = v.attestations
    assert (first.name, first.predicate_type, first.authorities, first.max_age) == (
        "no-critical", TRIVY, ("release-key",), "168h")
    assert first.conditions == (NO_CRITICAL,)
    assert second.conditions == () and second.max_age is None
    assert second.authorities == ("release-key", "ci")


@pytest.mark.parametrize(("verify", "message"), [
    # Flux's form has no authority names to refer to.
    ({"provider": "cosign", "secretRef": {"name": "k"}, "attestations": [_req()]},
     "attestations need the policy form"),
    ({"matchOIDCIdentity": [{"issuer": ".*", "subject": ".*"}], "attestations": [_req()]},
     "attestations need the policy form"),
    (_policy(_req(authorities=["nobody"])),
     "spec.verify.attestations[0].authorities: attestation 'no-critical': no authority "
     "named 'nobody'"),
    (_policy(_req(authorities=["notary"])),
     "'notary' is a notation authority; notation cannot sign attestations"),
    (_policy(_req(maxAge="7d")), "spec.verify.attestations[0].maxAge: '7d' does not match"),
    (_policy(_req(maxAge="0s")), "spec.verify.attestations[0].maxAge: must be positive"),
    (_policy(_req(predicateType=None)),
     "spec.verify.attestations[0].predicateType: is required"),
    (_policy(_req(name=None)), "spec.verify.attestations[0].name: is required"),
    (_policy(_req(authorities=[])),
     "spec.verify.attestations[0].authorities: must have at least 1 item"),
    (_policy(_req(authorities=None)),
     "spec.verify.attestations[0].authorities: is required"),
    (_policy(_req(conditions=["  "])),
     "spec.verify.attestations[0].conditions[0]: must be a CEL expression"),
    (_policy(_req(conditions=["x" * 10_001])),
     "spec.verify.attestations[0].conditions[0]: must be a CEL expression"),
    (_policy(_req(conditions="predicate.ok")),
     "spec.verify.attestations[0].conditions: must be a list"),
    (_policy(_req(), _req()), "spec.verify.attestations[1]: duplicate name 'no-critical'"),
    (_policy(), "spec.verify.attestations: must have at least 1 item"),
    (_policy(*[_req(name=f"r{i}") for i in range(33)]),
     "spec.verify.attestations: must have at most 32 item(s)"),
    (_policy(_req(extra=True)), "spec.verify.attestations[0].extra: unknown field"),
])
def test_invalid_attestations_are_refused(verify: dict[str, Any], message: str) -> None:
    assert message in _errors(verify)


def test_the_crd_carries_attestations_and_their_rules() -> None:
    crd = crdgen.oci_repository_crd()
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    verify = root["properties"]["spec"]["properties"]["verify"]
    att = verify["properties"]["attestations"]
    item = att["items"]
    assert att["x-kubernetes-list-map-keys"] == ["name"] and att["maxItems"] == 32
    assert item["required"] == ["authorities", "name", "predicateType"]
    assert set(item["properties"]) == {"name", "predicateType", "authorities", "conditions",
                                       "maxAge"}
    assert item["properties"]["maxAge"]["pattern"].startswith("^([0-9]+")
    assert item["properties"]["conditions"]["items"] == {
        "type": "string", "minLength": 1, "maxLength": 10_000}
    assert item["properties"]["authorities"]["items"]["minLength"] == 1
    # The Flux form refusal is the API server's too, not only our parser's.
    assert {"not": {"allOf": [{"required": ["attestations"]},
                              {"not": {"required": ["authorities"]}}]}} in verify["allOf"]
    status = root["properties"]["status"]["properties"]["verification"]["properties"]
    assert set(status["attestations"]["items"]["properties"]) == {
        "name", "predicateType", "passed", "reason", "signer"}
    # The committed CRD (what deploy/ installs) has it too: `make crds` was run.
    committed = yaml.safe_load((DEPLOY / "crds" / "ocirepositories.yaml").read_text())
    c_root = committed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert c_root["properties"]["spec"]["properties"]["verify"]["properties"][
        "attestations"] == att


# -- mapping onto the verifier's policy ----------------------------------------------------

def test_requirements_map_onto_the_verifier_policy() -> None:
    pub = generate_key_pair(b"pw", scrypt_n=1 << 12).public_pem
    v = _verify({"authorities": [
        {"name": "release-key", "cosign": {"secretRef": {"name": "cosign-pub"}}},
        {"name": "ci", "keyless": {"identities": [KEYLESS_ID]}}],
        "attestations": [_req(), _req(name="custom", predicateType="custom",
                                      authorities=["ci"], maxAge="90m",
                                      conditions=["predicate.Data.contains('ok')"])]})
    policy = build_signature_policy(v, {"cosign-pub": {"cosign.pub": pub}})
    first, second = policy.attestations
    assert (first.name, first.predicate_type, first.authorities, first.max_age) == (
        "no-critical", TRIVY, ("release-key",), 168 * 3600)
    assert [c.expression for c in first.conditions] == [NO_CRITICAL]
    # cosign's type names become their URIs, as in the CLI policy file.
    assert second.predicate_type == "https://cosign.sigstore.dev/attestation/v1"
    assert second.max_age == 5400 and second.authorities == ("ci",)
    # Compiled, not just copied: the condition runs.
    assert second.conditions[0].check({"Data": "ok"}).passed
    assert not second.conditions[0].check({"Data": 1}).passed  # an error is not a pass
    assert attestation_requirements(v) == policy.attestations
    # Without attestations, the policy is what it was.
    plain = _verify({"authorities": [
        {"name": "release-key", "cosign": {"secretRef": {"name": "cosign-pub"}}}]})
    assert build_signature_policy(plain, {"cosign-pub": {"cosign.pub": pub}}).attestations == ()
    assert attestation_requirements(plain) == ()


@pytest.mark.parametrize(("expr", "where"), [
    ("predicate.Results.exists(r, r.Severity ==)", "line 1, column"),
    ("predicate.a &&\n  predicate.b ==", "line 2, column"),
    ("frobnicate(predicate)", "unknown function 'frobnicate' at line 1, column 1"),
    ("predicate.a == secrets.b", "unknown variable 'secrets' at line 1, column 16"),
])
def test_a_condition_that_does_not_compile_is_a_policy_error_with_its_position(
        expr: str, where: str) -> None:
    v = _verify(_policy(_req(conditions=[NO_CRITICAL, expr])))  # the schema cannot tell
    with pytest.raises(ConditionCompileError) as info:
        attestation_requirements(v)
    assert isinstance(info.value, PolicyError)
    msg = str(info.value)
    assert msg.startswith("attestation 'no-critical' condition 2: ") and where in msg, msg
    with pytest.raises(ConditionCompileError, match="condition 2"):
        build_signature_policy(v, {})  # before any Secret is looked at


# -- the reconcile, with real attestations in a real registry ------------------------------

def _report(*severities: str, created: datetime | None = None) -> dict[str, Any]:
    created = created or datetime.now(UTC) - timedelta(minutes=5)
    return {"CreatedAt": created.isoformat().replace("+00:00", "Z"), "Results": [
        {"Target": "deploy/cm.yaml", "Misconfigurations": [
            {"ID": f"KSV{i}", "Severity": s} for i, s in enumerate(severities)]}]}


class Signer:
    """A cosign key pair: signs and attests what the tests publish, as CI would."""

    def __init__(self, tmp: Path) -> None:
        self.pair = generate_key_pair(b"pw", scrypt_n=1 << 12)
        self.key = tmp / "cosign.key"
        self.key.write_bytes(self.pair.private_pem)

    def publish(self, host: str, tmp: Path, label: str, tag: str = "v1") -> str:
        """Push and sign a one-ConfigMap artifact; its revision ``tag@digest``."""
        tree = manifest_tree(tmp, label, configmap(f"cm-{label}", {"v": label}))
        return publish(host, "apps/web", tree, tag, key_pem=self.pair.private_pem)

    def attest(self, host: str, digest: str, predicate: Any, ptype: str = TRIVY) -> None:
        """Attest ``predicate`` about ``apps/web@digest`` (the library ``attest artifact``
        calls)."""
        async def go() -> None:
            attester = load_attester(AttestOptions(key=self.key), password=lambda: b"pw")
            async with RegistryClient(insecure=True) as c:
                await attest_predicate(c, parse_reference(f"{host}/apps/web"), digest, ptype,
                                       predicate, attester)
        asyncio.run(go())


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer(tmp_path)


def _context(tmp_path: Path, signer: Signer) -> oci.SourceContext:
    kube = MemKube()
    kube.secret(NS, "cosign-pub", {"cosign.pub": signer.pair.public_pem})
    return oci.SourceContext(kube=kube,  # type: ignore[arg-type]
                             cache=ArtifactCache(tmp_path / "cache"))


def _conditions(out: Outcome) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in out.status.get("conditions") or []}


def _gate(host: str, **req: Any) -> dict[str, Any]:
    return {"authorities": [
        {"name": "release-key", "cosign": {"secretRef": {"name": "cosign-pub"}}}],
        "attestations": [_req(**req)]}


def test_failing_requirement_refuses_the_revision_and_keeps_the_last_good(
        tmp_path: Path, reg: BackgroundRegistry, signer: Signer) -> None:
    ctx = _context(tmp_path, signer)
    good = signer.publish(reg.host, tmp_path, "good")
    signer.attest(reg.host, good.partition("@")[2], _report("LOW"))
    obj = _obj(_gate(reg.host), url=f"oci://{reg.host}/apps/web")
    out = asyncio.run(oci.reconcile(obj, ctx))
    typed_status(OCIRepositoryStatus, out.status)
    by = _conditions(out)
    assert by["Ready"]["status"] == "True" and out.changed, by
    assert by["SourceVerified"]["message"] == (
        f"verified signature of revision {good} by release-key "
        f"({out.status['verification']['authorities'][0]['signer']}) and attestations "
        "no-critical")
    (att,) = out.status["verification"]["attestations"]
    assert att["passed"] and att["predicateType"] == TRIVY
    assert att["signer"].startswith("key sha256:") and "1 condition passed" in att["reason"]
    stored = out.status["artifact"]

    # A new revision, signed, whose scan has a CRITICAL finding: refused as a bad signature.
    bad = signer.publish(reg.host, tmp_path, "bad")
    signer.attest(reg.host, bad.partition("@")[2], _report("LOW", "CRITICAL"))
    out = asyncio.run(oci.reconcile({**obj, "status": out.status}, ctx))
    typed_status(OCIRepositoryStatus, out.status)
    by = _conditions(out)
    sv = by["SourceVerified"]
    assert (sv["status"], sv["reason"]) == ("False", "VerificationError")
    # ("attestation N": the bundles are numbered as found, the signature among them)
    assert re.match(rf"verification of revision {re.escape(bad)} failed: attestation "
                    r"no-critical: attestation \d+ signed by key sha256:", sv["message"])
    assert f"condition {NO_CRITICAL!r} is false" in sv["message"]
    # The signature passed: it is not named as a reason.
    assert "release-key:" not in sv["message"]
    assert (by["Ready"]["status"], by["Ready"]["reason"]) == ("False", "VerificationError")
    assert by["Ready"]["message"] == sv["message"] and "Stalled" not in by
    assert out.failed and not out.changed and out.requeue_after == 300
    assert out.status["artifact"] == stored  # the last good artifact is kept
    assert out.status["verification"]["digest"] == bad.partition("@")[2]
    (auth,) = out.status["verification"]["authorities"]
    (att,) = out.status["verification"]["attestations"]
    assert auth["passed"] and not att["passed"] and NO_CRITICAL in att["reason"]
    assert [e[1] for e in out.events] == ["VerificationError"]

    # Re-attested clean (a new scan of the same digest): the next reconcile verifies again
    # and stores it; the failed attestation does not veto the passing one.
    signer.attest(reg.host, bad.partition("@")[2], _report("LOW"))
    out = asyncio.run(oci.reconcile({**obj, "status": out.status}, ctx))
    assert _conditions(out)["Ready"]["status"] == "True" and out.changed
    assert out.status["artifact"]["revision"] == bad


def test_missing_wrong_type_and_too_old_attestations_refuse(
        tmp_path: Path, reg: BackgroundRegistry, signer: Signer) -> None:
    ctx = _context(tmp_path, signer)
    rev = signer.publish(reg.host, tmp_path, "a")
    digest = rev.partition("@")[2]
    obj = _obj(_gate(reg.host, maxAge="1h"), url=f"oci://{reg.host}/apps/web")

    def message() -> str:
        out = asyncio.run(oci.reconcile(obj, ctx))
        typed_status(OCIRepositoryStatus, out.status)
        sv = _conditions(out)["SourceVerified"]
        assert sv["status"] == "False" and "artifact" not in out.status, sv
        return str(sv["message"])

    assert f"no attestation of type {TRIVY} found" in message()
    signer.attest(reg.host, digest, {"Results": []}, ptype="https://example.com/other/v1")
    assert "found types: https://example.com/other/v1" in message()
    signer.attest(reg.host, digest, _report(created=datetime.now(UTC) - timedelta(hours=3)))
    msg = message()
    assert "older than maxAge 1h" in msg and "attestation no-critical:" in msg, msg


def test_a_condition_that_does_not_compile_stalls_before_any_io(
        tmp_path: Path, signer: Signer) -> None:
    # 127.0.0.1:9 (discard) is never contacted: the spec is refused first.
    ctx = _context(tmp_path, signer)
    obj = _obj(_gate("127.0.0.1:9", conditions=["predicate.Results.size( > 0"]),
               url="oci://127.0.0.1:9/apps/web", generation=4)
    out = asyncio.run(oci.reconcile(obj, ctx))
    typed_status(OCIRepositoryStatus, out.status)
    by = _conditions(out)
    assert (by["Stalled"]["status"], by["Stalled"]["reason"]) == ("True", "InvalidSpec")
    assert (by["Ready"]["status"], by["Ready"]["reason"]) == ("False", "InvalidSpec")
    msg = by["Ready"]["message"]
    assert msg.startswith("spec.verify: attestation 'no-critical' condition 1: CEL does not "
                          "compile at line 1, column "), msg
    assert by["SourceVerified"]["status"] == "False" and "Reconciling" not in by
    assert out.failed and out.requeue_after is None and out.status["observedGeneration"] == 4
    assert [e[1] for e in out.events] == ["InvalidSpec"]
    assert ctx.kube.gets == []  # type: ignore[attr-defined]  # not even a Secret read


def test_status_reasons_are_bounded(tmp_path: Path, reg: BackgroundRegistry,
                                    signer: Signer) -> None:
    """A predicate cannot make the status huge: reasons are cut at 1 KiB in
    status.verification (the condition message has the API server's 32 KiB cap)."""
    ctx = _context(tmp_path, signer)
    rev = signer.publish(reg.host, tmp_path, "long")
    for i in range(5):
        signer.attest(reg.host, rev.partition("@")[2], {"Results": []},
                      ptype=f"https://example.com/{'x' * 250}/{i}")
    out = asyncio.run(oci.reconcile(_obj(_gate(reg.host), url=f"oci://{reg.host}/apps/web"),
                                    ctx))
    (att,) = out.status["verification"]["attestations"]
    assert len(att["reason"]) == 1024
    assert len(json.dumps(out.status)) < 40 * 1024


def _store(host: str, digest: str, bundle: bytes, ptype: str = TRIVY) -> None:
    """Store ``bundle`` as an attestation referrer of ``apps/web@digest``, as ``attest``
    stores its own (what a hostile CI or registry user could push)."""
    from ocigitops.publisher import sign_cosign as sc

    async def go() -> None:
        repo = parse_reference(f"{host}/apps/web")
        async with RegistryClient(insecure=True) as c:
            subject = await sc._subject(c, repo, digest)
            await sc._store_bundle(c, repo, subject, bundle, kind="cosign-attestation",
                                   signer="test", predicate_type=ptype)
    asyncio.run(go())


def test_hostile_attestations_are_refused_each_with_its_reason(
        tmp_path: Path, reg: BackgroundRegistry, signer: Signer) -> None:
    """Bad input reaches the controller as attestations signed by the trusted key: each is
    refused with a typed reason, none passes, the revision is not stored."""
    from ocigitops.publisher.sign_cosign import build_key_bundle
    from ocigitops.verifier.intoto import build_statement
    from ocigitops.verifier.keys import load_private_key

    key = load_private_key(signer.pair.private_pem, b"pw")
    ctx = _context(tmp_path, signer)
    rev = signer.publish(reg.host, tmp_path, "hostile")
    digest = rev.partition("@")[2]
    other = "sha256:" + "0" * 64

    def statement(predicate: Any, about: str = digest) -> bytes:
        return build_statement(f"{reg.host}/apps/web", about, TRIVY, predicate)

    # A genuine signature over a statement about another digest.
    _store(reg.host, digest, build_key_bundle(key, statement(_report("LOW"), other)))
    # A DSSE payload type other than in-toto (the envelope's own field).
    doc = json.loads(build_key_bundle(key, statement(_report("LOW"))))
    doc["dsseEnvelope"]["payloadType"] = "application/vnd.dev.cosign.simplesigning.v1+json"
    _store(reg.host, digest, json.dumps(doc).encode())
    # A malformed statement: no subject.
    _store(reg.host, digest, build_key_bundle(key, json.dumps(
        {"_type": "https://in-toto.io/Statement/v1", "predicateType": TRIVY,
         "predicate": _report("LOW")}).encode()))
    # A predicate over the 1 MiB cap.
    # (written by hand: our own build_statement refuses to sign what we would not read)
    _store(reg.host, digest, build_key_bundle(key, json.dumps(
        {"_type": "https://in-toto.io/Statement/v1", "predicateType": TRIVY,
         "subject": [{"name": "apps/web", "digest": {"sha256": digest[7:]}}],
         "predicate": {**_report("LOW"), "pad": "x" * (1 << 20)}}).encode()))
    obj = _obj(_gate(reg.host), url=f"oci://{reg.host}/apps/web")

    def refused() -> tuple[str, dict[str, Any]]:
        out = asyncio.run(oci.reconcile(obj, ctx))
        typed_status(OCIRepositoryStatus, out.status)
        sv = _conditions(out)["SourceVerified"]
        assert sv["status"] == "False" and "artifact" not in out.status, sv
        (att,) = out.status["verification"]["attestations"]
        assert not att["passed"]
        return str(sv["message"]), att

    msg, _ = refused()
    assert f"no attestation of type {TRIVY} found" in msg, msg
    for reason in ("DigestMismatchError", "PayloadTypeError", "MalformedStatementError",
                   "OversizedPredicateError"):
        assert reason in msg, (reason, msg)

    # Well formed and signed, but the condition errors (no Results): failed, never passed.
    _store(reg.host, digest, build_key_bundle(key, statement(
        {"CreatedAt": _report()["CreatedAt"]})))
    msg, att = refused()
    assert f"condition {NO_CRITICAL!r} error: KeyError" in msg, msg
    assert att["signer"].startswith("key sha256:")
