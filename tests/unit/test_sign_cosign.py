"""cosign signing: payload, bundle and manifest shapes, storage, keyless errors.

The registry is an in-memory fake behind ``httpx.MockTransport``, so the real
:class:`RegistryClient` (and its referrers tag-schema fallback) is exercised without a server.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt
import pytest
import sigstore
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ocigitops import mediatypes as mt
from ocigitops.errors import UsageError
from ocigitops.publisher import sign_cosign as sc
from ocigitops.reference import Reference
from ocigitops.registry import Descriptor, RegistryClient, sha256_digest
from ocigitops.verifier.bundles import verify_bundle_with_key
from ocigitops.verifier.discovery import discover
from ocigitops.verifier.keys import key_hint
from ocigitops.verifier.policy import CosignKeyAuthority, SignaturePolicy, evaluate
from ocigitops.verifier.simplesigning import LegacySignature, parse_payload, verify_legacy_signature

pytestmark = pytest.mark.unit

T = TypeVar("T")
HOST = "registry.test:5000"
REPO = Reference(HOST, "team/app")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _resp(status: int, body: bytes, headers: dict[str, str]) -> httpx.Response:
    # A stream, not ``content=``: the client reads bodies with ``aiter_raw``.
    return httpx.Response(status, stream=httpx.ByteStream(body), headers=headers)


class FakeRegistry:
    """Just enough of the distribution API: blobs, manifests, optional referrers API."""

    def __init__(self, referrers_api: bool) -> None:
        self.referrers_api = referrers_api
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.requests: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append(f"{request.method} {path}")
        if path == "/v2/":
            return httpx.Response(200, json={})
        if m := re.fullmatch(r"/v2/(.+)/blobs/uploads/", path):
            return httpx.Response(202, headers={"Location": f"/upload/{m.group(1)}"})
        if path.startswith("/upload/") and request.method == "PUT":
            digest = request.url.params["digest"]
            assert sha256_digest(request.content) == digest
            self.blobs[digest] = request.content
            return httpx.Response(201)
        if m := re.fullmatch(r"/v2/(.+)/blobs/(sha256:[0-9a-f]+)", path):
            data = self.blobs.get(m.group(2))
            if data is None:
                return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN"}]})
            return _resp(200, b"" if request.method == "HEAD" else data,
                         {"Content-Length": str(len(data))})
        if m := re.fullmatch(r"/v2/(.+)/manifests/(.+)", path):
            return self._manifest(request, m.group(1), m.group(2))
        if m := re.fullmatch(r"/v2/(.+)/referrers/(.+)", path):
            if not self.referrers_api:
                return httpx.Response(404)
            return self._referrers(m.group(1), m.group(2))
        return httpx.Response(404)

    def _manifest(self, request: httpx.Request, repo: str, ref: str) -> httpx.Response:
        if request.method == "PUT":
            data = request.content
            digest = sha256_digest(data)
            ctype = request.headers["Content-Type"]
            self.manifests[(repo, digest)] = (data, ctype)
            if not ref.startswith("sha256:"):
                self.manifests[(repo, ref)] = (data, ctype)
            headers = {"Docker-Content-Digest": digest}
            if self.referrers_api and "subject" in json.loads(data):
                headers["OCI-Subject"] = json.loads(data)["subject"]["digest"]
            return httpx.Response(201, headers=headers)
        found = self.manifests.get((repo, ref))
        if found is None:
            return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
        data, ctype = found
        headers = {"Content-Type": ctype, "Docker-Content-Digest": sha256_digest(data),
                   "Content-Length": str(len(data))}
        return _resp(200, b"" if request.method == "HEAD" else data, headers)

    def _referrers(self, repo: str, subject: str) -> httpx.Response:
        out = []
        for (r, ref), (data, ctype) in self.manifests.items():
            if r != repo or not ref.startswith("sha256:"):
                continue
            doc = json.loads(data)
            if (doc.get("subject") or {}).get("digest") != subject:
                continue
            d: dict[str, Any] = {"mediaType": ctype, "digest": ref, "size": len(data)}
            d["artifactType"] = doc.get("artifactType") or doc["config"]["mediaType"]
            if doc.get("annotations"):
                d["annotations"] = doc["annotations"]
            out.append(d)
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": out}
        return _resp(200, json.dumps(index).encode(), {"Content-Type": mt.OCI_INDEX})

    def client(self) -> RegistryClient:
        return RegistryClient(insecure=True, transport=httpx.MockTransport(self.handler),
                              max_retries=0, credentials=lambda host: None)

    def add_artifact(self, repo: str = "team/app", content: bytes = b"x") -> str:
        """Store a small image manifest and return its digest."""
        self.blobs[sha256_digest(b"{}")] = b"{}"
        self.blobs[sha256_digest(content)] = content
        doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
               "config": {"mediaType": mt.OCI_EMPTY, "digest": sha256_digest(b"{}"),
                          "size": 2},
               "layers": [{"mediaType": "application/octet-stream",
                           "digest": sha256_digest(content), "size": len(content)}]}
        data = json.dumps(doc).encode()
        digest = sha256_digest(data)
        self.manifests[(repo, digest)] = (data, mt.OCI_MANIFEST)
        return digest

    def manifest_json(self, ref: str, repo: str = "team/app") -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.manifests[(repo, ref)][0])
        return doc


@pytest.fixture(params=[True, False], ids=["referrers-api", "tag-fallback"])
def registry(request: pytest.FixtureRequest) -> FakeRegistry:
    return FakeRegistry(referrers_api=request.param)


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _policy(*keys: ec.EllipticCurvePrivateKey, annotations: dict[str, str] | None = None,
            ) -> SignaturePolicy:
    return SignaturePolicy((CosignKeyAuthority(
        "k", tuple(k.public_key() for k in keys), annotations or {}),))


async def _verify(reg: FakeRegistry, digest: str, policy: SignaturePolicy) -> Any:
    async with reg.client() as c:
        found = await discover(c, REPO, digest)
    return found, evaluate(policy, digest, found.candidates, repository=REPO.name)


# -- shapes -------------------------------------------------------------------------------

DIGEST = "sha256:" + hashlib.sha256(b"m").hexdigest()


def test_statement_shape() -> None:
    # cosign v3.0.2 sign --key: no subject name, no predicate (checked on the real output).
    stmt = sc.build_statement(None, DIGEST)
    assert stmt == (b'{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":'
                    b'{"sha256":"' + DIGEST[7:].encode() + b'"}}],'
                    b'"predicateType":"https://sigstore.dev/cosign/sign/v1"}')
    named = json.loads(sc.build_statement("reg/app", DIGEST))
    assert named["subject"] == [{"name": "reg/app", "digest": {"sha256": DIGEST[7:]}}]
    with pytest.raises(UsageError):
        sc.build_statement("reg/app", "sha512:" + "a" * 128)


def test_key_bundle_shape_and_verifies(key: ec.EllipticCurvePrivateKey) -> None:
    bundle = sc.build_key_bundle(key, sc.build_statement("reg/app", DIGEST))
    doc = json.loads(bundle)
    assert doc["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    vm = doc["verificationMaterial"]
    assert vm["publicKey"]["hint"] == key_hint(key)
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    assert vm["publicKey"]["hint"] == base64.b64encode(hashlib.sha256(spki).digest()).decode()
    assert vm["tlogEntries"] == [] and list(vm) == ["publicKey", "tlogEntries"]
    assert list(doc) == ["mediaType", "verificationMaterial", "dsseEnvelope"]
    env = doc["dsseEnvelope"]
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert len(env["signatures"]) == 1
    assert json.loads(base64.b64decode(env["payload"]))["subject"][0]["digest"] == {
        "sha256": DIGEST[7:]}
    v = verify_bundle_with_key(bundle, key.public_key(), digest=DIGEST, require_tlog=False)
    assert v.digest == DIGEST and v.predicate_type == sc.COSIGN_SIGN_PREDICATE
    other = "sha256:" + "0" * 64
    with pytest.raises(Exception, match="no subject"):
        verify_bundle_with_key(bundle, key.public_key(), digest=other, require_tlog=False)


def test_bundle_manifest_shape() -> None:
    bundle = b'{"mediaType":"x"}'
    subject = Descriptor(mt.OCI_MANIFEST, DIGEST, 123)
    data = sc.build_bundle_manifest(bundle, subject, created="2026-01-02T03:04:05Z")
    doc = json.loads(data)
    # go-containerregistry struct order, as cosign v3.0.2 writes it.
    assert list(doc) == ["schemaVersion", "mediaType", "config", "layers", "annotations",
                         "subject", "artifactType"]
    assert doc["artifactType"] == sc.BUNDLE_MEDIA_TYPE
    assert doc["config"] == {"mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_JSON_DIGEST,
                             "size": 2, "artifactType": sc.BUNDLE_MEDIA_TYPE}
    assert data.startswith(b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest'
                           b'.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json",'
                           b'"size":2,"digest":"sha256:44136fa')
    assert doc["layers"] == [{"mediaType": sc.BUNDLE_MEDIA_TYPE,
                              "digest": sha256_digest(bundle), "size": len(bundle)}]
    assert doc["subject"] == {"mediaType": mt.OCI_MANIFEST, "digest": DIGEST, "size": 123}
    assert doc["annotations"] == {
        "dev.sigstore.bundle.content": "dsse-envelope",
        "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1",
        "org.opencontainers.image.created": "2026-01-02T03:04:05Z"}


def test_legacy_config_matches_go_containerregistry() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    one = sc.build_legacy_config([a])
    # Byte for byte what cosign v2.6.1 wrote for one signature (checked with crane config).
    assert one == (b'{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"created":'
                   b'"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":["'
                   + a.encode() + b'"]},"config":{}}')
    two = json.loads(sc.build_legacy_config([a, b], json.loads(one)))
    assert two["rootfs"]["diff_ids"] == [a, b] and len(two["history"]) == 2
    assert list(two) == list(json.loads(one))


# -- storage ------------------------------------------------------------------------------

def test_legacy_sign_writes_sig_image_and_verifies(registry: FakeRegistry,
                                                    key: ec.EllipticCurvePrivateKey) -> None:
    digest = registry.add_artifact()

    async def go() -> sc.SignResult:
        async with registry.client() as c:
            return await sc.sign_cosign_key(c, REPO, digest, key, fmt="legacy",
                                            annotations={"team": "x", "env": "prod"})

    res = run(go())
    tag = "sha256-" + digest[7:] + ".sig"
    assert res.kind == "cosign-legacy" and res.stored_via == "tag"
    assert res.location == f"{REPO.name}:{tag}" and res.subject == digest
    man = registry.manifest_json(tag)
    assert man["mediaType"] == mt.OCI_MANIFEST and "subject" not in man
    assert man["config"]["mediaType"] == mt.OCI_IMAGE_CONFIG
    (layer,) = man["layers"]
    assert list(layer) == ["mediaType", "size", "digest", "annotations"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    payload = registry.blobs[layer["digest"]]
    p = parse_payload(payload)
    assert p.docker_reference == REPO.name and p.manifest_digest == digest
    assert p.optional == {"team": "x", "env": "prod"}
    sig = LegacySignature.from_layer(payload, layer["annotations"])
    verify_legacy_signature(sig, key.public_key(), digest,
                            required_annotations={"team": "x"})
    found, result = run(_verify(registry, digest, _policy(key, annotations={"env": "prod"})))
    assert result.passed, result.summary()
    assert [f.kind for f in found.found] == ["cosign-legacy"]
    _, bad = run(_verify(registry, digest, _policy(key, annotations={"env": "dev"})))
    assert not bad.passed and "'env'" in bad.authorities[0].reason


def test_legacy_appends_and_does_not_duplicate(key: ec.EllipticCurvePrivateKey) -> None:
    reg = FakeRegistry(referrers_api=False)
    digest = reg.add_artifact()
    other = ec.generate_private_key(ec.SECP256R1())

    async def go() -> None:
        async with reg.client() as c:
            await sc.sign_cosign_key(c, REPO, digest, key, fmt="legacy")
            await sc.sign_cosign_key(c, REPO, digest, other, fmt="legacy")
            # Same key and payload again: ECDSA gives another signature, cosign skips it.
            await sc.sign_cosign_key(c, REPO, digest, key, fmt="legacy")
            await sc.sign_cosign_key(c, REPO, digest, key, fmt="legacy",
                                     annotations={"a": "b"})

    run(go())
    man = reg.manifest_json("sha256-" + digest[7:] + ".sig")
    assert len(man["layers"]) == 3
    config = json.loads(reg.blobs[man["config"]["digest"]])
    assert config["rootfs"]["diff_ids"] == [x["digest"] for x in man["layers"]]
    assert len(config["history"]) == 3
    for k in (key, other):
        _, result = run(_verify(reg, digest, _policy(k)))
        assert result.passed, result.summary()


def test_legacy_append_keeps_existing_media_types(key: ec.EllipticCurvePrivateKey) -> None:
    reg = FakeRegistry(referrers_api=False)
    digest = reg.add_artifact()
    other = ec.generate_private_key(ec.SECP256R1())

    async def sign(k: ec.EllipticCurvePrivateKey) -> None:
        async with reg.client() as c:
            await sc.sign_cosign_key(c, REPO, digest, k, fmt="legacy")

    run(sign(other))
    tag = "sha256-" + digest[7:] + ".sig"
    # Rewrite the image with Docker media types, as older signers did.
    doc = reg.manifest_json(tag)
    doc["mediaType"] = mt.DOCKER_MANIFEST
    doc["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json"
    data = json.dumps(doc).encode()
    reg.manifests[("team/app", tag)] = (data, mt.DOCKER_MANIFEST)
    run(sign(key))
    doc = reg.manifest_json(tag)
    assert reg.manifests[("team/app", tag)][1] == mt.DOCKER_MANIFEST
    assert doc["mediaType"] == mt.DOCKER_MANIFEST and len(doc["layers"]) == 2
    assert doc["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"


def test_bundle_sign_stores_referrer_and_verifies(registry: FakeRegistry,
                                                  key: ec.EllipticCurvePrivateKey) -> None:
    digest = registry.add_artifact()

    async def go() -> sc.SignResult:
        async with registry.client() as c:
            return await sc.sign_cosign_key(c, REPO, digest, key)

    res = run(go())
    assert res.kind == "cosign-bundle"
    assert res.stored_via == ("api" if registry.referrers_api else "tag")
    ref_digest = res.location.split("@", 1)[1]
    man = registry.manifest_json(ref_digest)
    assert man["subject"]["digest"] == digest and man["subject"]["size"] > 0
    assert man["artifactType"] == sc.BUNDLE_MEDIA_TYPE
    assert registry.blobs[mt.EMPTY_JSON_DIGEST] == b"{}"
    if not registry.referrers_api:
        index = registry.manifest_json("sha256-" + digest[7:])
        (entry,) = index["manifests"]
        assert entry["digest"] == ref_digest
        assert entry["artifactType"] == sc.BUNDLE_MEDIA_TYPE
        assert entry["annotations"]["dev.sigstore.bundle.content"] == "dsse-envelope"
    found, result = run(_verify(registry, digest, _policy(key)))
    assert result.passed, result.summary()
    assert [f.kind for f in found.found] == ["cosign-bundle"]
    _, wrong = run(_verify(registry, digest, _policy(ec.generate_private_key(ec.SECP256R1()))))
    assert not wrong.passed and "does not verify" in wrong.authorities[0].reason


def test_bundle_refuses_annotations_and_unknown_format(key: ec.EllipticCurvePrivateKey) -> None:
    reg = FakeRegistry(referrers_api=True)
    digest = reg.add_artifact()

    async def go(**kw: Any) -> sc.SignResult:
        async with reg.client() as c:
            return await sc.sign_cosign_key(c, REPO, digest, key, **kw)

    with pytest.raises(UsageError, match="legacy format only"):
        run(go(annotations={"a": "b"}))
    with pytest.raises(UsageError, match="unknown cosign signature format"):
        run(go(fmt="v9"))


def test_missing_manifest_is_a_clear_error(key: ec.EllipticCurvePrivateKey) -> None:
    reg = FakeRegistry(referrers_api=True)

    async def go() -> sc.SignResult:
        async with reg.client() as c:
            return await sc.sign_cosign_key(c, REPO, DIGEST, key)

    with pytest.raises(sc.CosignSigningError, match="no such manifest"):
        run(go())


# -- keyless ------------------------------------------------------------------------------

def test_keyless_without_token_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sigstore.oidc

    for var in ("GITHUB_ACTIONS", "ACTIONS_ID_TOKEN_REQUEST_URL", "SIGSTORE_ID_TOKEN",
                "GOOGLE_SERVICE_ACCOUNT_NAME", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sigstore.oidc, "detect_credential", lambda *a, **k: None)
    reg = FakeRegistry(referrers_api=True)
    digest = reg.add_artifact()

    async def go() -> sc.SignResult:
        async with reg.client() as c:
            return await sc.sign_cosign_keyless(c, REPO, digest)

    with pytest.raises(sc.MissingIdentityTokenError, match="OIDC identity token") as ei:
        run(go())
    assert isinstance(ei.value, UsageError)
    assert reg.requests == []  # failed before touching the registry


def test_keyless_malformed_token(monkeypatch: pytest.MonkeyPatch) -> None:
    reg = FakeRegistry(referrers_api=True)
    digest = reg.add_artifact()

    async def go() -> sc.SignResult:
        async with reg.client() as c:
            return await sc.sign_cosign_keyless(c, REPO, digest, identity_token="not-a-jwt")

    with pytest.raises(sc.KeylessSigningError, match="identity token is not usable"):
        run(go())


def _token() -> str:
    now = int(time.time())
    claims = {"iss": "https://issuer.example.com", "sub": "dev@example.com",
              "aud": "sigstore", "iat": now, "nbf": now, "exp": now + 600}
    return jwt.encode(claims, "k" * 32, algorithm="HS256")


def _unreachable_trust_config() -> Any:
    from sigstore.models import ClientTrustConfig

    store = Path(sigstore.__file__).parent / "_store" / "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev"
    signing = json.loads((store / "signing_config.v0.2.json").read_text())
    for section in ("caUrls", "rekorTlogUrls", "tsaUrls", "oidcUrls"):
        for svc in signing.get(section) or []:
            svc["url"] = "http://127.0.0.1:9/" + section
    doc = {"mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
           "trustedRoot": json.loads((store / "trusted_root.json").read_text()),
           "signingConfig": signing}
    return ClientTrustConfig.from_json(json.dumps(doc))


def test_keyless_unreachable_fulcio_is_a_clear_error() -> None:
    reg = FakeRegistry(referrers_api=True)
    digest = reg.add_artifact()

    async def go() -> sc.SignResult:
        async with reg.client() as c:
            return await sc.sign_cosign_keyless(c, REPO, digest, identity_token=_token(),
                                                trust_config=_unreachable_trust_config())

    with pytest.raises(sc.SigstoreUnreachableError, match="cannot reach Fulcio"):
        run(go())
    assert not any(r.startswith("PUT") for r in reg.requests)
