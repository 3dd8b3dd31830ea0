"""Discovery stays bounded: 10,000 unrelated referrers cost one listing, not 10,000
fetches, and cannot push the one real signature out."""

from __future__ import annotations

import asyncio
import hashlib
import json
import resource
import time
from pathlib import Path

import pytest

from ocigitops.artifact import Metadata
from ocigitops.publisher.artifacts import push_artifact
from ocigitops.publisher.sign_cosign import sign_cosign_key
from ocigitops.reference import parse_reference
from ocigitops.registry import RegistryClient
from ocigitops.regserver import BackgroundRegistry
from ocigitops.verifier.keys import generate_key_pair, load_private_key, load_public_key
from ocigitops.verifier.policy import CosignKeyAuthority, SignaturePolicy
from ocigitops.verifier.verify import verify_artifact

pytestmark = pytest.mark.integration

N_JUNK = 10_000


def _seed_junk_referrers(repo_dir: Path, subject: dict[str, object]) -> None:
    """Write N_JUNK referrer manifests straight into the registry's OCI layout (the API
    rewrites index.json per PUT, which would make seeding take minutes)."""
    blobs = repo_dir / "blobs" / "sha256"
    empty = b"{}"
    (blobs / hashlib.sha256(empty).hexdigest()).write_bytes(empty)
    index = json.loads((repo_dir / "index.json").read_bytes())
    for i in range(N_JUNK):
        body = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.example.sbom",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                       "digest": "sha256:" + hashlib.sha256(empty).hexdigest(), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json",
                        "digest": "sha256:" + hashlib.sha256(empty).hexdigest(), "size": 2}],
            "subject": subject, "annotations": {"n": str(i)}}).encode()
        digest = hashlib.sha256(body).hexdigest()
        (blobs / digest).write_bytes(body)
        index["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                   "digest": f"sha256:{digest}", "size": len(body),
                                   "artifactType": "application/vnd.example.sbom"})
    (repo_dir / "index.json").write_text(json.dumps(index))


async def _push_and_sign(host: str, tree: Path, key_pem: bytes) -> tuple[str, int]:
    ref = parse_reference(f"{host}/bounded/app:v1")
    async with RegistryClient(insecure=True) as c:
        pushed = await push_artifact(c, ref, tree, Metadata("s", "r"))
        desc = await c.head_manifest(ref.with_digest(pushed.digest))
        await sign_cosign_key(c, ref.repo_only(), pushed.digest,
                              load_private_key(key_pem, b"pw"))
        return pushed.digest, desc.size


async def _verify(host: str, pub_pem: bytes) -> tuple[float, object]:
    ref = parse_reference(f"{host}/bounded/app:v1")
    policy = SignaturePolicy((CosignKeyAuthority("k", (load_public_key(pub_pem),)),))
    async with RegistryClient(insecure=True) as c:
        start = time.monotonic()
        outcome = await verify_artifact(c, ref, policy)
        return time.monotonic() - start, (outcome, dict(c.request_count))


def test_ten_thousand_referrers(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n")
    pair = generate_key_pair(b"pw", scrypt_n=1 << 12)
    storage = tmp_path / "storage"
    with BackgroundRegistry(storage) as srv:
        digest, size = asyncio.run(_push_and_sign(srv.host, tree, pair.private_pem))
    _seed_junk_referrers(storage / "bounded" / "app", {
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
        "size": size})
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with BackgroundRegistry(storage) as srv:  # restart: the referrers index is rebuilt
        elapsed, (outcome, requests) = asyncio.run(_verify(srv.host, pair.public_pem))
    assert outcome.passed, outcome.human()  # type: ignore[attr-defined]
    assert [f.kind for f in outcome.discovered.found] == ["cosign-bundle"]  # type: ignore[attr-defined]
    # one HEAD, one referrers listing, one .sig lookup, then the one signature: no fan-out
    assert sum(requests.values()) < 12, requests
    assert elapsed < 20, f"verification with {N_JUNK} referrers took {elapsed:.1f}s"
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mib < 200, f"peak RSS grew by {grown_mib:.0f} MiB"


def test_signature_manifest_with_missing_layer_fails_clearly(tmp_path: Path) -> None:
    """A signature whose layer blob is gone is a reported problem and never a pass."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n")
    pair = generate_key_pair(b"pw", scrypt_n=1 << 12)
    storage = tmp_path / "storage"
    with BackgroundRegistry(storage) as srv:
        asyncio.run(_push_and_sign(srv.host, tree, pair.private_pem))
        blobs = storage / "bounded" / "app" / "blobs" / "sha256"
        prefix = b'{"mediaType":"application/vnd.dev.sigstore'
        bundle_layers = [p for p in blobs.iterdir() if p.read_bytes().startswith(prefix)]
        assert len(bundle_layers) == 1
        bundle_layers[0].unlink()
        _, (outcome, _) = asyncio.run(_verify(srv.host, pair.public_pem))
    assert not outcome.passed  # type: ignore[attr-defined]
    problems = " ".join(outcome.discovered.problems)  # type: ignore[attr-defined]
    assert "points to missing layer" in problems, problems
    assert outcome.result.authorities[0].reason  # type: ignore[attr-defined]
