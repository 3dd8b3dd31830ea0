"""Attestations, both ways with the real cosign v3.0.2 binary (``cosign3``).

- ``cosign attest --new-bundle-format --key --type custom|slsaprovenance`` -> our
  ``verify artifact --policy`` (attestation requirements with CEL conditions and maxAge);
- our ``attest artifact --key --type ...`` -> ``cosign verify-attestation --key --type``;
- a tampered attestation and a wrong-subject attestation (a genuine signature by the trusted
  key over a statement about another digest, stored as a referrer of this one) are refused
  by both.

Registries: the embedded registry (referrers API: the bundle path cosign v3 writes) and the
Debian distribution 2.8 (no referrers API: both sides use the ``sha256-<hex>`` tag-schema
index). cosign runs offline: ``--tlog-upload=false``, ``--use-signing-config=false``, its HTTPS
traffic sent to a dead proxy; ``verify-attestation`` gets ``--insecure-ignore-tlog`` and the
public-good trusted root shipped with sigstore-python.

Facts pinned here (cosign 3.0.2): ``attest`` writes the referrer manifest exactly like
``sign`` with ``dev.sigstore.bundle.predicateType`` = the predicate type; its statement's
``_type`` is ``https://in-toto.io/Statement/v0.1`` with a named subject; ``--type custom``
wraps the file as ``{"Data": "<text>", "Timestamp": "<RFC 3339>"}``; ``--type
slsaprovenance`` refuses a predicate without ``builder``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ocigitops import mediatypes as mt
from ocigitops.artifact import go_json
from ocigitops.publisher import sign_cosign as sc
from ocigitops.reference import Reference
from ocigitops.registry import Descriptor, RegistryClient, sha256_digest
from ocigitops.verifier.discovery import discover
from ocigitops.verifier.intoto import build_statement
from ocigitops.verifier.keys import load_private_key
from tests.helpers.cli import cli
from tests.helpers.cosign3 import PASSWORD, Cosign3
from tests.helpers.registries import Registry

pytestmark = pytest.mark.integration

T = TypeVar("T")
CUSTOM = "https://cosign.sigstore.dev/attestation/v1"
SLSA02 = "https://slsa.dev/provenance/v0.2"
BUILDER = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
PROVENANCE = {"builder": {"id": BUILDER}, "buildType": "https://ocigitops.dev/ci/v1",
              "metadata": {"buildFinishedOn": "2026-01-01T00:00:00Z"}}


@pytest.fixture(params=["embedded_registry", "debian_plain"], ids=["referrers", "fallback"])
def registry(request: pytest.FixtureRequest) -> Registry:
    reg: Registry = request.getfixturevalue(request.param)
    return reg


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One cosign-generated encrypted key pair for the module (ours reads it too)."""
    where = tmp_path_factory.mktemp("attest-keys")
    Cosign3(where)("generate-key-pair")
    return where / "cosign.key", where / "cosign.pub"


@pytest.fixture
def cosign3(tmp_path: Path) -> Cosign3:
    return Cosign3(tmp_path)


def arun(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _client() -> RegistryClient:
    return RegistryClient(insecure=True, backoff_base=0.01)


def _artifact(reg: Registry) -> tuple[Reference, str]:
    """Push a one-layer artifact to a fresh repository; its repository and digest."""
    repo = Reference(reg.host, f"attest/{uuid.uuid4().hex[:10]}")
    content = uuid.uuid4().bytes
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
           "config": {"mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_JSON_DIGEST, "size": 2},
           "layers": [{"mediaType": "application/vnd.cncf.flux.content.v1.tar+gzip",
                       "digest": sha256_digest(content), "size": len(content)}]}
    data = json.dumps(doc, separators=(",", ":")).encode()

    async def go() -> str:
        async with _client() as c:
            await c.push_blob(repo, mt.EMPTY_JSON_DIGEST, 2, mt.EMPTY_JSON)
            await c.push_blob(repo, sha256_digest(content), len(content), content)
            digest, _ = await c.put_manifest(repo, data, mt.OCI_MANIFEST, tag="v1")
        return digest
    return repo, arun(go())


def _policy(tmp: Path, pub: Path, *requirements: str) -> Path:
    body = "\n".join(requirements)
    path = tmp / "policy.yaml"
    path.write_text(f"""rule: any
authorities:
  - name: release-key
    cosign: {{keys: [{pub}]}}
attestations:
{body}
""")
    return path


def _verify(reg: Registry, repo: Reference, policy: Path) -> tuple[int, dict[str, Any], str]:
    """Our ``verify artifact --policy`` in JSON and text: (exit code, document, text)."""
    url = f"oci://{repo.name}:v1"
    proc = cli("verify", "artifact", url, "--policy", str(policy), "-o", "json",
               *reg.cli_flags())
    assert "Traceback" not in proc.stderr, proc.stderr
    text = cli("verify", "artifact", url, "--policy", str(policy), *reg.cli_flags())
    assert text.returncode == proc.returncode, text.stderr
    return proc.returncode, json.loads(proc.stdout), text.stdout


def _by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in doc["attestations"]}


def _our_attest(reg: Registry, repo: Reference, key: Path, predicate: Path, type_: str
                ) -> dict[str, Any]:
    proc = cli("attest", "artifact", f"oci://{repo.name}:v1", "--key", str(key),
               "--predicate", str(predicate), "--type", type_, "-o", "json",
               *reg.cli_flags(), env={"COSIGN_PASSWORD": PASSWORD})
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def _sign(reg: Registry, repo: Reference, key: Path) -> None:
    proc = cli("sign", "artifact", f"oci://{repo.name}:v1", "--key", str(key),
               *reg.cli_flags(), env={"COSIGN_PASSWORD": PASSWORD})
    assert proc.returncode == 0, proc.stderr


CUSTOM_REQ = """  - name: custom
    predicateType: custom
    authorities: [release-key]
    maxAge: 1h
    conditions: ["predicate.Data.contains('\\"approved\\": true')"]"""
SLSA_REQ = f"""  - name: provenance
    predicateType: slsaprovenance
    authorities: [release-key]
    conditions: ["predicate.builder.id == '{BUILDER}'"]"""


# -- cosign attest -> ours -------------------------------------------------------------------

def test_cosign3_attestations_verified_by_ours(registry: Registry, cosign3: Cosign3,
                                               keys: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    key, pub = keys
    repo, digest = _artifact(registry)
    ref = f"{repo.name}@{digest}"
    _sign(registry, repo, key)
    (tmp_path / "custom.json").write_text('{"approved": true}')
    (tmp_path / "prov.json").write_text(json.dumps(PROVENANCE))
    cosign3.attest(key, ref, tmp_path / "custom.json", "custom")
    cosign3.attest(key, ref, tmp_path / "prov.json", "slsaprovenance")

    async def stored() -> list[Descriptor]:
        async with _client() as c:
            found = await discover(c, repo, digest)
            refs = await c.referrers(repo, digest)
        assert not found.problems, found.problems
        return list(refs.descriptors)
    descs = arun(stored())
    assert len(descs) == 3
    code, doc, text = _verify(registry, repo, _policy(tmp_path, pub, CUSTOM_REQ, SLSA_REQ))
    assert code == 0 and doc["verified"], text
    att = _by_name(doc)
    assert att["custom"]["passed"] and att["custom"]["timeSource"] == "predicate.Timestamp"
    assert att["provenance"]["passed"]
    assert att["provenance"]["timeSource"] == "predicate.metadata.buildFinishedOn"
    assert att["custom"]["signer"].startswith("key sha256:")
    assert "ok  attestation custom" in text and "ok  attestation provenance" in text


def test_cosign3_attestation_failing_condition(registry: Registry, cosign3: Cosign3,
                                               keys: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    key, pub = keys
    repo, digest = _artifact(registry)
    _sign(registry, repo, key)
    (tmp_path / "prov.json").write_text(json.dumps(
        {**PROVENANCE, "builder": {"id": "https://evil.example/builder"}}))
    cosign3.attest(key, f"{repo.name}@{digest}", tmp_path / "prov.json", "slsaprovenance")
    code, doc, text = _verify(registry, repo, _policy(tmp_path, pub, SLSA_REQ))
    assert code == 1 and not doc["verified"]
    a = _by_name(doc)["provenance"]
    assert a["found"] == 1 and a["verified"] == 1 and not a["passed"]
    assert a["failedCondition"] == f"predicate.builder.id == '{BUILDER}'"
    assert "FAIL attestation provenance" in text and "is false" in text
    # The signature itself is fine: only the attestation requirement failed.
    assert all(x["passed"] for x in doc["authorities"])


# -- ours -> cosign verify-attestation -------------------------------------------------------

def test_ours_verified_by_cosign3(registry: Registry, cosign3: Cosign3,
                                  keys: tuple[Path, Path], tmp_path: Path) -> None:
    key, pub = keys
    repo, digest = _artifact(registry)
    _sign(registry, repo, key)
    (tmp_path / "custom.json").write_text('{"approved": true}')
    (tmp_path / "prov.json").write_text(json.dumps(PROVENANCE))
    custom = _our_attest(registry, repo, key, tmp_path / "custom.json", "custom")
    prov = _our_attest(registry, repo, key, tmp_path / "prov.json", "slsaprovenance")
    assert custom["predicateType"] == CUSTOM and prov["predicateType"] == SLSA02
    want_via = "api" if registry.referrers_api else "tag"
    assert custom["storedVia"] == want_via and custom["subject"] == digest
    ref = f"{repo.name}@{digest}"
    for type_ in ("custom", "slsaprovenance"):
        proc = cosign3.verify_attestation(pub, ref, type_)
        assert proc.returncode == 0, proc.stderr
        payloads = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        statements = [json.loads(base64.b64decode(p["payload"])) for p in payloads]
        assert {s["predicateType"] for s in statements} == {CUSTOM if type_ == "custom"
                                                            else SLSA02}
    # A type nobody attested is refused by cosign too.
    assert cosign3.verify_attestation(pub, ref, "cyclonedx").returncode != 0
    code, doc, _ = _verify(registry, repo, _policy(tmp_path, pub, CUSTOM_REQ, SLSA_REQ))
    assert code == 0, doc


def test_our_referrer_is_laid_out_like_cosigns(embedded_registry: Registry, cosign3: Cosign3,
                                               keys: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    """Same manifest fields and annotations as cosign's own attestation referrer."""
    key, _ = keys
    repo, digest = _artifact(embedded_registry)
    (tmp_path / "custom.json").write_text('{"approved": true}')
    cosign3.attest(key, f"{repo.name}@{digest}", tmp_path / "custom.json", "custom")
    _our_attest(embedded_registry, repo, key, tmp_path / "custom.json", "custom")

    async def manifests() -> list[dict[str, Any]]:
        async with _client() as c:
            refs = await c.referrers(repo, digest)
            return [(await c.get_manifest(repo.with_digest(d.digest))).json()
                    for d in refs.descriptors]
    docs = arun(manifests())
    assert len(docs) == 2
    shapes = [{**d, "layers": [{k: v for k, v in x.items() if k not in ("size", "digest")}
                               for x in d["layers"]],
               "annotations": {k: v for k, v in d["annotations"].items()
                               if k != "org.opencontainers.image.created"}} for d in docs]
    assert shapes[0] == shapes[1]
    assert shapes[0]["annotations"] == {"dev.sigstore.bundle.content": "dsse-envelope",
                                        "dev.sigstore.bundle.predicateType": CUSTOM}
    assert shapes[0]["artifactType"] == sc.BUNDLE_MEDIA_TYPE


# -- tampered and wrong-subject attestations: refused by both ----------------------------------

def _push_bundle(reg: Registry, repo: Reference, digest: str, bundle: bytes,
                 predicate_type: str) -> None:
    async def go() -> None:
        async with _client() as c:
            subject = await c.head_manifest(repo.with_digest(digest))
            await sc._store_bundle(c, repo, subject, bundle, kind="test", signer="test",
                                   predicate_type=predicate_type)
    arun(go())


def _tampered(key: Any, repo: Reference, digest: str) -> bytes:
    """A genuine key-signed attestation whose predicate was then changed."""
    statement = build_statement(repo.name, digest, SLSA02,
                                {**PROVENANCE, "builder": {"id": "https://evil.example/b"}})
    doc = json.loads(sc.build_key_bundle(key, statement))
    stmt = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    stmt["predicate"]["builder"]["id"] = BUILDER
    doc["dsseEnvelope"]["payload"] = base64.b64encode(go_json(stmt)).decode()
    return json.dumps(doc).encode()


def _wrong_subject(key: Any, repo: Reference, digest: str) -> bytes:
    """A genuine key-signed attestation about another digest."""
    other = "sha256:" + "0" * 64
    return sc.build_key_bundle(key, build_statement(repo.name, other, SLSA02, PROVENANCE))


@pytest.mark.parametrize("forge", [_tampered, _wrong_subject], ids=["tampered", "wrong-subject"])
def test_forged_attestations_refused_by_both(registry: Registry, cosign3: Cosign3,
                                             keys: tuple[Path, Path], tmp_path: Path,
                                             forge: Any) -> None:
    key, pub = keys
    repo, digest = _artifact(registry)
    _sign(registry, repo, key)
    private = load_private_key(key.read_bytes(), PASSWORD)
    _push_bundle(registry, repo, digest, forge(private, repo, digest), SLSA02)
    proc = cosign3.verify_attestation(pub, f"{repo.name}@{digest}", "slsaprovenance")
    assert proc.returncode != 0, proc.stdout
    code, doc, text = _verify(registry, repo, _policy(tmp_path, pub, SLSA_REQ))
    a = _by_name(doc)["provenance"]
    assert code == 1 and not a["passed"] and a["verified"] == 0, a
    if forge is _wrong_subject:
        assert "DigestMismatchError" in a["reason"]
    assert "FAIL attestation provenance" in text


def test_attest_cli_refuses_bad_input(embedded_registry: Registry, keys: tuple[Path, Path],
                                      tmp_path: Path) -> None:
    key, _ = keys
    repo, _ = _artifact(embedded_registry)
    (tmp_path / "prov.json").write_text('{"buildType": "x"}')
    url = f"oci://{repo.name}:v1"
    env = {"COSIGN_PASSWORD": PASSWORD}
    for args, fragment in [
        (["--type", "slsaprovenance"], "required field builder missing"),
        (["--type", "no such type"], "invalid predicate type"),
    ]:
        proc = cli("attest", "artifact", url, "--key", str(key), "--predicate",
                   str(tmp_path / "prov.json"), *args, env=env)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert proc.stderr.count("\n") == 1 and fragment in proc.stderr, proc.stderr
