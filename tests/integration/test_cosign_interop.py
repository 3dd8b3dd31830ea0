"""Interop with the real cosign binaries (v2.6.1 and v3.0.2), both directions.

Registries: olareg (referrers API) and the Debian distribution 2.8 (no referrers API, so
bundles go through the tag-schema fallback index). Signing is offline throughout:
``--tlog-upload=false`` / ``--insecure-ignore-tlog=true``, and cosign's HTTPS traffic is sent
to a dead proxy so a TUF or Rekor lookup fails at once instead of reaching the network.

Facts these tests pin down (checked against the binaries' output with crane):

- cosign v2 writes the ``.sig`` image byte-compatible with ours (config, layer order,
  annotations); it skips a second signature of the same payload by the same key.
- cosign v3 ``sign --key`` needs ``--use-signing-config=false`` offline; ``verify`` needs
  ``--trusted-root`` for the new bundle format. Its bundle has no ``tlogEntries`` field, its
  statement no subject name and no predicate. It ignores ``-a`` in the bundle format (the
  signed statement does not change, and ``verify -a`` accepts any value).
- On a registry without the referrers API cosign v3 writes the fallback tag index, but the
  entry's ``artifactType`` is the *config* media type (``application/vnd.oci.empty.v1+json``)
  and it carries no annotations.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ocigitops import mediatypes as mt
from ocigitops.publisher import sign_cosign as sc
from ocigitops.reference import Reference
from ocigitops.registry import Descriptor, RegistryClient, fallback_tag, sha256_digest
from ocigitops.verifier.bundles import PUBLIC_GOOD_TRUSTED_ROOT, verify_bundle_with_key
from ocigitops.verifier.discovery import Discovered, discover
from ocigitops.verifier.keys import (
    encrypt_private_key,
    generate_key_pair,
    load_private_key,
    load_public_key,
    public_key_pem,
)
from ocigitops.verifier.policy import CosignKeyAuthority, PolicyResult, SignaturePolicy, evaluate
from tests.helpers.cli import run
from tests.helpers.registries import Registry
from tests.helpers.tools import tool

pytestmark = pytest.mark.integration

T = TypeVar("T")
PASSWORD = "interop-pw"
# Cheapest scrypt cost cosign accepts (it refuses N outside 32768, 65536, 131072).
FAST_N = 1 << 15
#: Verifier bug (reported): cosign v3 bundles omit the empty ``tlogEntries`` and
#: sigstore-models' Bundle model requires it, so verify_bundle_with_key refuses them.


@pytest.fixture(params=["olareg_registry", "debian_plain"], ids=["olareg", "debian"])
def registry(request: pytest.FixtureRequest) -> Registry:
    reg: Registry = request.getfixturevalue(request.param)
    return reg


@pytest.fixture
def olareg(olareg_registry: Registry) -> Registry:
    return olareg_registry


class Cosign:
    """Runs cosign v2 or v3 offline, in its own HOME, from a working directory."""

    def __init__(self, tmp: Path) -> None:
        self.cwd = tmp
        home = tmp / "home"
        home.mkdir(exist_ok=True)
        self.env = {
            "HOME": str(home), "COSIGN_PASSWORD": PASSWORD, "COSIGN_EXPERIMENTAL": "0",
            "TUF_ROOT": str(tmp / "tuf"), "SIGSTORE_NO_CACHE": "1",
            "COSIGN_YES": "true", "SIGSTORE_ID_TOKEN": "",
            # Anything cosign would fetch from the internet (TUF, Rekor) fails immediately;
            # the test registries on 127.0.0.1 are not proxied.
            "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost",
        }

    def __call__(self, version: int, *args: str, check: bool = True,
                 cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        binary = tool("cosign") if version == 2 else tool("cosign3", "cosign")
        return run([binary, *args], check=check, cwd=cwd or self.cwd, env=self.env,
                   timeout=120)

    def generate_key_pair(self, version: int, where: Path) -> tuple[Path, Path]:
        where.mkdir(parents=True, exist_ok=True)
        self(version, "generate-key-pair", cwd=where)
        return where / "cosign.key", where / "cosign.pub"

    def sign(self, version: int, key: Path, ref: str, *extra: str) -> None:
        flags = ["--use-signing-config=false"] if version == 3 else []
        self(version, "sign", "--key", str(key), "--tlog-upload=false", "-y",
             "--allow-insecure-registry", "--allow-http-registry", *flags, *extra, ref)

    def verify(self, version: int, pub: Path, ref: str, *extra: str,
               ) -> subprocess.CompletedProcess[str]:
        flags = ["--trusted-root", str(PUBLIC_GOOD_TRUSTED_ROOT)] if version == 3 else []
        return self(version, "verify", "--key", str(pub), "--insecure-ignore-tlog=true",
                    "--allow-insecure-registry", "--allow-http-registry", *flags, *extra, ref,
                    check=False)


@pytest.fixture
def cosign(tmp_path: Path) -> Cosign:
    return Cosign(tmp_path)


def arun(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _client() -> RegistryClient:
    return RegistryClient(insecure=True, backoff_base=0.01)


async def _push(reg: Registry, repo: str, content: bytes, tag: str = "v1") -> str:
    """Push a one-layer artifact and return its manifest digest."""
    ref = Reference(reg.host, repo)
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
           "config": {"mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_JSON_DIGEST, "size": 2},
           "layers": [{"mediaType": "application/vnd.cncf.flux.content.v1.tar+gzip",
                       "digest": sha256_digest(content), "size": len(content)}]}
    data = json.dumps(doc, separators=(",", ":")).encode()
    async with _client() as c:
        await c.push_blob(ref, mt.EMPTY_JSON_DIGEST, 2, mt.EMPTY_JSON)
        await c.push_blob(ref, sha256_digest(content), len(content), content)
        digest, _ = await c.put_manifest(ref, data, mt.OCI_MANIFEST, tag=tag)
    return digest


def _artifact(reg: Registry, content: bytes | None = None) -> tuple[Reference, str]:
    repo = f"cosign/{uuid.uuid4().hex[:10]}"
    digest = arun(_push(reg, repo, content or uuid.uuid4().bytes))
    return Reference(reg.host, repo), digest


async def _check(repo: Reference, digest: str, policy: SignaturePolicy,
                 ) -> tuple[Discovered, PolicyResult]:
    async with _client() as c:
        found = await discover(c, repo, digest)
    return found, evaluate(policy, digest, found.candidates, repository=repo.name)


def _policy(pub: Path | bytes, annotations: dict[str, str] | None = None) -> SignaturePolicy:
    data = pub.read_bytes() if isinstance(pub, Path) else pub
    return SignaturePolicy((CosignKeyAuthority("cosign", (load_public_key(data),),
                                               annotations or {}),))


def _sign_ours(repo: Reference, digest: str, key: Any, fmt: sc.Format,
               annotations: dict[str, str] | None = None) -> sc.SignResult:
    async def go() -> sc.SignResult:
        async with _client() as c:
            return await sc.sign_cosign_key(c, repo, digest, key, fmt=fmt,
                                            annotations=annotations)
    return arun(go())


def _write_our_key_pair(where: Path) -> tuple[Path, Path, ec.EllipticCurvePrivateKey]:
    where.mkdir(parents=True, exist_ok=True)
    kp = generate_key_pair(PASSWORD, scrypt_n=FAST_N)
    (where / "cosign.key").write_bytes(kp.private_pem)
    (where / "cosign.pub").write_bytes(kp.public_pem)
    return where / "cosign.key", where / "cosign.pub", kp.private_key


# -- key files ------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [2, 3])
def test_cosign_key_pair_signs_with_ours(olareg: Registry, cosign: Cosign, tmp_path: Path,
                                         version: int) -> None:
    key_path, pub_path = cosign.generate_key_pair(version, tmp_path / "keys")
    assert b"ENCRYPTED SIGSTORE PRIVATE KEY" in key_path.read_bytes()
    key = load_private_key(key_path.read_bytes(), PASSWORD)
    assert public_key_pem(key) == public_key_pem(load_public_key(pub_path.read_bytes()))
    repo, digest = _artifact(olareg)
    _sign_ours(repo, digest, key, "legacy")
    assert cosign.verify(2, pub_path, f"{repo}@{digest}").returncode == 0
    _, result = arun(_check(repo, digest, _policy(pub_path)))
    assert result.passed, result.summary()


def test_our_key_pair_signs_with_cosign(olareg: Registry, cosign: Cosign,
                                        tmp_path: Path) -> None:
    key_path, pub_path, _ = _write_our_key_pair(tmp_path / "ours")
    repo, digest = _artifact(olareg)
    cosign.sign(2, key_path, f"{repo}@{digest}")
    assert cosign.verify(2, pub_path, f"{repo}@{digest}").returncode == 0
    _, result = arun(_check(repo, digest, _policy(pub_path)))
    assert result.passed, result.summary()
    # The legacy PEM type written by old cosign releases is read by cosign too.
    legacy_pem = encrypt_private_key(load_private_key(key_path.read_bytes(), PASSWORD),
                                     PASSWORD, scrypt_n=FAST_N,
                                     pem_type="ENCRYPTED COSIGN PRIVATE KEY")
    (tmp_path / "old.key").write_bytes(legacy_pem)
    repo2, digest2 = _artifact(olareg)
    cosign.sign(3, tmp_path / "old.key", f"{repo2}@{digest2}")
    assert cosign.verify(3, pub_path, f"{repo2}@{digest2}").returncode == 0


# -- cosign signs, we verify ----------------------------------------------------------------

def test_cosign2_legacy_verified_by_ours(registry: Registry, cosign: Cosign,
                                         tmp_path: Path) -> None:
    key_path, pub_path = cosign.generate_key_pair(2, tmp_path / "k")
    other_pub = _write_our_key_pair(tmp_path / "other")[1]
    repo, digest = _artifact(registry)
    cosign.sign(2, key_path, f"{repo}@{digest}", "-a", "team=platform")

    found, ok = arun(_check(repo, digest, _policy(pub_path, {"team": "platform"})))
    assert ok.passed, ok.summary()
    assert [f.kind for f in found.found] == ["cosign-legacy"] and not found.problems

    # wrong key
    _, wrong = arun(_check(repo, digest, _policy(other_pub)))
    assert not wrong.passed
    assert "does not verify with the given key" in wrong.authorities[0].reason
    # required annotation not signed
    _, ann = arun(_check(repo, digest, _policy(pub_path, {"team": "other"})))
    assert not ann.passed and "annotation 'team'" in ann.authorities[0].reason

    # tampered: the tag now points at other content (digest B); A's signature does not
    # cover it and there is nothing else to find.
    tampered = arun(_push(registry, repo.repository, b"tampered content"))
    _, bad = arun(_check(repo, tampered, _policy(pub_path)))
    assert not bad.passed
    assert "no key-signed cosign signature found" in bad.authorities[0].reason

    # signature for another digest: A's .sig image copied to B's .sig tag.
    async def copy_sig() -> None:
        async with _client() as c:
            m = await c.get_manifest(repo.with_tag(fallback_tag(digest) + ".sig"))
            await c.put_manifest(repo, m.data, m.media_type, tag=fallback_tag(tampered) + ".sig")
    arun(copy_sig())
    found_b, moved = arun(_check(repo, tampered, _policy(pub_path)))
    assert found_b.found and not moved.passed
    assert f"signature is for {digest}, not for {tampered}" in moved.authorities[0].reason


def test_cosign2_referrers_mode_signature(olareg: Registry, cosign: Cosign,
                                          tmp_path: Path) -> None:
    """cosign v2 ``--registry-referrers-mode=oci-1-1`` (experimental) stores the simple-signing
    layer in a referrer (``artifactType`` ``application/vnd.dev.cosign.artifact.sig.v1+json``)
    instead of the ``.sig`` tag."""
    key_path, pub_path = cosign.generate_key_pair(2, tmp_path / "k")
    repo, digest = _artifact(olareg)
    cosign.env["COSIGN_EXPERIMENTAL"] = "1"
    cosign.sign(2, key_path, f"{repo}@{digest}", "--registry-referrers-mode=oci-1-1")
    assert cosign.verify(2, pub_path, f"{repo}@{digest}", "--experimental-oci11").returncode == 0

    async def referrers() -> list[str]:
        async with _client() as c:
            return [d.artifact_type or "" for d in (await c.referrers(repo, digest)).descriptors]
    assert arun(referrers()) == ["application/vnd.dev.cosign.artifact.sig.v1+json"]
    found, result = arun(_check(repo, digest, _policy(pub_path)))
    assert [f.kind for f in found.found] == ["cosign-legacy"]
    assert result.passed, result.summary()


def test_cosign3_bundle_verified_by_ours(registry: Registry, cosign: Cosign,
                                         tmp_path: Path) -> None:
    key_path, pub_path = cosign.generate_key_pair(3, tmp_path / "k")
    repo, digest = _artifact(registry)
    cosign.sign(3, key_path, f"{repo}@{digest}")
    assert cosign.verify(3, pub_path, f"{repo}@{digest}").returncode == 0

    async def stored() -> tuple[list[Any], str]:
        async with _client() as c:
            if registry.referrers_api:
                refs = await c.referrers(repo, digest)
                assert refs.via == "api"
                entries = [d.to_json() for d in refs.descriptors]
            else:
                idx = await c.get_manifest(repo.with_tag(fallback_tag(digest)))
                entries = idx.json()["manifests"]
            (entry,) = entries
            man = (await c.get_manifest(repo.with_digest(entry["digest"]))).json()
            (layer,) = man["layers"]
            blob = await c.fetch_blob(repo, Descriptor.from_json(layer))
            return [entry, man], blob.decode()

    (entry, man), bundle = arun(stored())
    assert man["artifactType"] == sc.BUNDLE_MEDIA_TYPE
    assert man["subject"]["digest"] == digest
    assert man["annotations"][sc.ANN_BUNDLE_PREDICATE] == sc.COSIGN_SIGN_PREDICATE
    doc = json.loads(bundle)
    assert "tlogEntries" not in doc["verificationMaterial"]
    stmt = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    assert stmt["subject"] == [{"digest": {"sha256": digest[7:]}}] and "predicate" not in stmt
    if registry.referrers_api:
        assert entry["artifactType"] == sc.BUNDLE_MEDIA_TYPE
    else:
        # cosign v3.0.2's fallback index entry names the config type and drops annotations.
        assert entry["artifactType"] == mt.OCI_EMPTY and "annotations" not in entry

    async def tags() -> list[str]:
        async with _client() as c:
            return sorted(await c.list_tags(repo))
    # A bundle either way, never a legacy .sig image; the index tag only without the API.
    expected = ["v1"] if registry.referrers_api else [fallback_tag(digest), "v1"]
    assert arun(tags()) == expected

    pub = load_public_key(pub_path.read_bytes())
    v = verify_bundle_with_key(bundle, pub, digest=digest, require_tlog=False)
    assert v.digest == digest

    # Found either way (untyped fallback entries are classified by their manifest) and
    # verified without the tlogEntries field cosign v3 leaves out.
    found, result = arun(_check(repo, digest, _policy(pub_path)))
    assert [f.kind for f in found.found] == ["cosign-bundle"]
    assert result.passed, result.summary()


def test_cosign3_ignores_annotations_in_bundles(olareg: Registry, cosign: Cosign,
                                                tmp_path: Path) -> None:
    """Why sign_cosign_key refuses -a with the bundle format: cosign v3 drops them."""
    key_path, pub_path = cosign.generate_key_pair(3, tmp_path / "k")
    repo, digest = _artifact(olareg)
    cosign.sign(3, key_path, f"{repo}@{digest}", "-a", "team=platform")
    assert cosign.verify(3, pub_path, f"{repo}@{digest}", "-a", "team=anything").returncode == 0


# -- we sign, cosign verifies ---------------------------------------------------------------

def test_ours_legacy_verified_by_cosign(registry: Registry, cosign: Cosign,
                                        tmp_path: Path) -> None:
    _, pub_path, key = _write_our_key_pair(tmp_path / "k")
    other_pub = _write_our_key_pair(tmp_path / "other")[1]
    repo, digest = _artifact(registry)
    res = _sign_ours(repo, digest, key, "legacy", {"team": "platform", "env": "prod"})
    assert res.location == f"{repo.name}:{fallback_tag(digest)}.sig"
    ref = f"{repo}@{digest}"

    assert cosign.verify(2, pub_path, ref).returncode == 0
    assert cosign.verify(2, pub_path, ref, "-a", "team=platform", "-a", "env=prod"
                         ).returncode == 0
    bad_ann = cosign.verify(2, pub_path, ref, "-a", "team=other")
    assert bad_ann.returncode != 0 and "annotation" in bad_ann.stderr
    assert cosign.verify(2, other_pub, ref).returncode != 0
    # cosign v3 falls back to the legacy .sig tag when there is no bundle.
    assert cosign.verify(3, pub_path, ref, "-a", "team=platform").returncode == 0

    # A cosign v2 signature appended after ours: both layers verify, for both tools.
    key2, pub2 = cosign.generate_key_pair(2, tmp_path / "k2")
    cosign.sign(2, key2, ref)
    assert cosign.verify(2, pub2, ref).returncode == 0
    assert cosign.verify(2, pub_path, ref, "-a", "team=platform").returncode == 0
    # ... and re-signing (ours, with either key) must not duplicate a signature.
    _sign_ours(repo, digest, key, "legacy", {"team": "platform", "env": "prod"})
    _sign_ours(repo, digest, load_private_key(key2.read_bytes(), PASSWORD), "legacy")

    async def layers() -> int:
        async with _client() as c:
            m = await c.get_manifest(repo.with_tag(fallback_tag(digest) + ".sig"))
            return len(m.json()["layers"])
    # Neither re-sign added a layer: ours with key2 has the very payload bytes cosign signed
    # with key2 (same reference, no annotations), so it counts as already signed.
    assert arun(layers()) == 2
    assert cosign.verify(2, pub2, ref).returncode == 0
    for pub in (pub_path, pub2):
        _, result = arun(_check(repo, digest, _policy(pub)))
        assert result.passed, result.summary()


def test_ours_bundle_verified_by_cosign3(registry: Registry, cosign: Cosign,
                                         tmp_path: Path) -> None:
    _, pub_path, key = _write_our_key_pair(tmp_path / "k")
    other_pub = _write_our_key_pair(tmp_path / "other")[1]
    repo, digest = _artifact(registry)
    res = _sign_ours(repo, digest, key, "bundle")
    assert res.kind == "cosign-bundle"
    assert res.stored_via == ("api" if registry.referrers_api else "tag")
    ref = f"{repo}@{digest}"

    ok = cosign.verify(3, pub_path, ref)
    assert ok.returncode == 0, ok.stderr
    assert digest in ok.stdout
    assert cosign.verify(3, other_pub, ref).returncode != 0
    # cosign v2.6.1 reads the new bundle format too when asked.
    v2 = cosign.verify(2, pub_path, ref, "--new-bundle-format", "--trusted-root",
                       str(PUBLIC_GOOD_TRUSTED_ROOT))
    assert v2.returncode == 0, v2.stderr
    # An unsigned digest in the same repository is not covered.
    unsigned = arun(_push(registry, repo.repository, b"unsigned", tag="v2"))
    assert cosign.verify(3, pub_path, f"{repo}@{unsigned}").returncode != 0

    found, result = arun(_check(repo, digest, _policy(pub_path)))
    assert result.passed, result.summary()
    assert [f.kind for f in found.found] == ["cosign-bundle"]
    assert found.referrers_via == res.stored_via


# -- keyless ----------------------------------------------------------------------------------

def test_keyless_stops_at_the_network_boundary(olareg: Registry, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With a token and the default trust config, the failure names Fulcio (offline here)."""
    import time

    import jwt

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    # Deterministic whatever the sandbox: every HTTPS request fails at a dead proxy.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    now = int(time.time())
    token = jwt.encode({"iss": "https://issuer.example.com", "sub": "dev@example.com",
                        "aud": "sigstore", "iat": now, "exp": now + 600}, "k" * 32,
                       algorithm="HS256")
    repo, digest = _artifact(olareg)

    async def go() -> sc.SignResult:
        async with _client() as c:
            return await sc.sign_cosign_keyless(c, repo, digest, identity_token=token)

    with pytest.raises(sc.SigstoreUnreachableError, match="cannot reach Fulcio"):
        arun(go())
