"""Interop with the real ``notation`` 1.3 binary, both directions, JWS and COSE.

notation -> ours: ``notation sign`` an artifact we pushed, then our discovery finds the
signature (referrers API on olareg, the ``sha256-<hex>`` tag schema on the Debian registry)
and our policy evaluation verifies it with the same trust policy and trust store directory
notation uses; a foreign trust store, a wrong identity and another digest are rejected
with a clear reason.

ours -> notation: :func:`publisher.sign_notation.sign_notation` with the key and
certificate made by ``notation cert generate-test``, then ``notation verify`` (trust policy
imported with ``notation policy import``, certificate added with ``notation cert add``)
accepts it and ``notation ls`` lists it, on both registries.

Observed notation 1.3.2 behaviour: ``notation sign`` has ``--force-referrers-tag``
(default true), so by default it writes the signature manifest and then the tag-schema
index ``sha256-<hex>`` (read, append, write) whether or not the registry has the referrers
API; ``--force-referrers-tag=false`` uses the API and falls back to the tag schema only when
the registry lacks it. ``notation verify``/``ls`` use the referrers API when the registry
answers it and the tag index otherwise. On the Debian registry (no API) both directions go
through the tag index.

olareg 0.1.2 loses referrers when a client writes a tag-schema index whose bytes equal its
own referrers response (same digest: its index.json entry for the response is replaced by
the tag's), which is exactly what notation's default does for the first signature. The
referrers-API cases below therefore sign with ``--force-referrers-tag=false`` on olareg;
the default is checked separately for the tag it writes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from ocigitops.reference import Reference
from ocigitops.registry import RegistryClient, fallback_tag
from publisher.sign_notation import build_envelope, sign_notation
from tests.cli import ocigitops, run
from tests.registries import Registry
from tests.tools import tool
from verifier.discovery import Discovered, discover
from verifier.keys import load_private_key
from verifier.notation import parse_envelope, parse_payload
from verifier.policy import NotationAuthority, PolicyResult, SignaturePolicy, evaluate
from verifier.trustpolicy import TrustStore, parse_trust_policy

pytestmark = pytest.mark.integration

KEY_NAME = "ocigitops-test"
#: The subject ``notation cert generate-test NAME`` gives its certificate.
IDENTITY = f"x509.subject: C=US, ST=WA, L=Seattle, O=Notary, CN={KEY_NAME}"
OURS_STORE = "ours"
SRC = "https://github.com/example/app"
REV = "main@sha1:0123456789abcdef0123456789abcdef01234567"


@dataclass
class Notation:
    """A notation installation whose whole configuration lives in a temporary directory."""

    binary: str
    home: Path

    @property
    def config(self) -> Path:
        """notation's configuration directory (``$XDG_CONFIG_HOME/notation``)."""
        return self.home / "config" / "notation"

    @property
    def env(self) -> dict[str, str]:
        """Environment that points notation at :attr:`home`."""
        return {"HOME": str(self.home), "XDG_CONFIG_HOME": str(self.home / "config")}

    def __call__(self, *args: str, check: bool = True) -> Any:
        """Run ``notation ARGS``."""
        return run([self.binary, *args], env=self.env, check=check, timeout=120)

    @property
    def key_file(self) -> Path:
        """Private key written by ``cert generate-test``."""
        return self.config / "localkeys" / f"{KEY_NAME}.key"

    @property
    def cert_file(self) -> Path:
        """Self-signed certificate written by ``cert generate-test``."""
        return self.config / "localkeys" / f"{KEY_NAME}.crt"

    @property
    def truststore(self) -> Path:
        """notation's trust store root (``x509/{ca,signingAuthority,tsa}/NAME/``)."""
        return self.config / "truststore"


def _policy_doc(scope: str, store: str, identity: str = IDENTITY) -> dict[str, Any]:
    return {"version": "1.0", "trustPolicies": [{
        "name": "ocigitops-interop", "registryScopes": [scope],
        "signatureVerification": {"level": "strict"},
        "trustStores": [store], "trustedIdentities": [identity]}]}


@pytest.fixture(scope="module")
def notation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Notation]:
    """notation with a test key (``generate-test --default``), our CA store and a policy."""
    home = tmp_path_factory.mktemp("notation-home")
    n = Notation(tool("notation"), home)
    n("cert", "generate-test", "--default", KEY_NAME)
    assert n.key_file.is_file() and n.cert_file.is_file(), sorted(
        str(p.relative_to(home)) for p in home.rglob("*"))
    # generate-test also trusts the certificate in ca:KEY_NAME; ours gets its own store.
    n("cert", "add", "--type", "ca", "--store", OURS_STORE, str(n.cert_file))
    policy = home / "trustpolicy.json"
    policy.write_text(json.dumps(_policy_doc("*", f"ca:{OURS_STORE}")))
    n("policy", "import", "--force", str(policy))
    yield n


def _registry(request: pytest.FixtureRequest, which: str) -> Registry:
    reg: Registry = request.getfixturevalue(which)
    return reg


REGISTRIES = ["olareg_registry", "debian_plain"]


def _push(reg: Registry, repo: str, tmp_path: Path) -> str:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "cm.yaml").write_text(f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {repo}\n")
    out = ocigitops("push", "artifact", reg.url(repo) + ":v1", "--path", str(src),
                    "--source", SRC, "--revision", REV, "-o", "json", *reg.cli_flags())
    digest: str = json.loads(out.stdout)["digest"]
    return digest


async def _discover(reg: Registry, repo: str, digest: str) -> tuple[Discovered, list[str]]:
    ref = Reference(reg.host, repo)
    async with RegistryClient(insecure=True) as client:
        found = await discover(client, ref, digest, legacy=False)
        tags = await client.list_tags(ref)
    return found, tags


def _evaluate(found: Discovered, digest: str, repository: str, store: TrustStore,
              scope: str, trust: str, identity: str = IDENTITY) -> PolicyResult:
    authority = NotationAuthority("notation", parse_trust_policy(
        _policy_doc(scope, trust, identity)), store)
    return evaluate(SignaturePolicy((authority,)), digest, found.candidates,
                    repository=repository)


@pytest.mark.parametrize("envelope", ["jws", "cose"])
@pytest.mark.parametrize("which", REGISTRIES)
def test_notation_signs_ours_verifies(notation: Notation, request: pytest.FixtureRequest,
                                      which: str, envelope: str, tmp_path: Path) -> None:
    reg = _registry(request, which)
    repo = f"notation-to-ours/{envelope}"
    digest = _push(reg, repo, tmp_path)
    args = ["sign", "--insecure-registry", "--signature-format", envelope]
    if reg.referrers_api:
        args.append("--force-referrers-tag=false")  # see the module docstring (olareg)
    notation(*args, f"{reg.host}/{repo}@{digest}")

    found, tags = asyncio.run(_discover(reg, repo, digest))
    assert not found.problems, found.problems
    media = "application/jose+json" if envelope == "jws" else "application/cose"
    assert [f.media_type for f in found.found] == [media]
    if reg.referrers_api:
        assert found.referrers_via == "api"
        assert fallback_tag(digest) not in tags
    else:
        # notation wrote the tag-schema index itself; discovery read it.
        assert found.referrers_via == "tag"
        assert fallback_tag(digest) in tags

    # Our envelope builder reproduces notation's envelope byte for byte, signature aside.
    (cand,) = found.candidates.notation
    assert _rebuilt_like(cand.envelope, cand.media_type, notation) == cand.envelope

    repository = f"{reg.host}/{repo}"
    store = TrustStore.from_directory(notation.truststore)
    ok = _evaluate(found, digest, repository, store, repository, f"ca:{KEY_NAME}")
    assert ok.passed, ok.summary()
    signer = ok.authorities[0].signer
    assert signer is not None and f"CN={KEY_NAME}" in str(signer)

    # A CA store that does not hold notation's certificate.
    other = tmp_path / "other-store"
    (other / "x509" / "ca" / "other").mkdir(parents=True)
    (other / "x509" / "ca" / "other" / "ca.pem").write_bytes(_foreign_ca_pem())
    bad = _evaluate(found, digest, repository, TrustStore.from_directory(other), repository,
                    "ca:other")
    assert not bad.passed
    assert "not produced by a trusted signer" in bad.authorities[0].reason

    wrong_id = _evaluate(found, digest, repository, store, repository, f"ca:{KEY_NAME}",
                         "x509.subject: C=US, ST=WA, O=Someone Else")
    assert not wrong_id.passed
    assert "IdentityMismatchError" in wrong_id.authorities[0].reason
    assert "is not a trusted identity" in wrong_id.authorities[0].reason

    other_digest = "sha256:" + "0" * 64
    tampered = _evaluate(found, other_digest, repository, store, repository, f"ca:{KEY_NAME}")
    assert not tampered.passed
    assert "DigestMismatchError" in tampered.authorities[0].reason
    assert digest in tampered.authorities[0].reason


def _rebuilt_like(data: bytes, media_type: str, notation: Notation) -> bytes:
    """Rebuild notation's envelope with our builder (same key, time and agent) and put
    notation's signature in place of ours (RSA-PSS is randomised)."""
    env = parse_envelope(data, media_type)
    assert env.signing_time is not None
    target = parse_payload(env.payload)
    key = load_private_key(notation.key_file.read_bytes())
    ours = build_envelope(target["mediaType"], target["digest"], target["size"], key,
                          env.chain, envelope=env.format,  # type: ignore[arg-type]
                          signing_time=env.signing_time, user_metadata=target.get("annotations"),
                          signing_agent="notation-go/1.3.2")
    mine = parse_envelope(ours.data, media_type)
    if env.format == "jws":
        b64 = lambda sig: base64.urlsafe_b64encode(sig).rstrip(b"=")  # noqa: E731
        return ours.data.replace(b64(mine.signature), b64(env.signature))
    return ours.data.replace(mine.signature, env.signature)


@pytest.mark.parametrize("which", REGISTRIES)
def test_notation_default_writes_the_tag_schema(notation: Notation,
                                                request: pytest.FixtureRequest, which: str,
                                                tmp_path: Path) -> None:
    """``notation sign`` without flags writes ``sha256-<hex>`` even beside a referrers API."""
    reg = _registry(request, which)
    repo = "notation-default/tag"
    digest = _push(reg, repo, tmp_path)
    notation("sign", "--insecure-registry", f"{reg.host}/{repo}@{digest}")

    async def tag_index() -> list[Any]:
        ref = Reference(reg.host, repo)
        async with RegistryClient(insecure=True) as client:
            m = await client.get_manifest(ref.with_tag(fallback_tag(digest)))
            sig = m.json()["manifests"][0]
            sig_manifest = (await client.get_manifest(ref.with_digest(sig["digest"]))).json()
            return [sig, sig_manifest]

    entry, manifest = asyncio.run(tag_index())
    assert entry["artifactType"] == "application/vnd.cncf.notary.signature"
    # notation-go's own manifest form: no artifactType, the type as config media type.
    assert "artifactType" not in manifest
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.notary.signature"
    assert manifest["subject"]["digest"] == digest
    assert set(manifest["annotations"]) == {"io.cncf.notary.x509chain.thumbprint#S256",
                                            "org.opencontainers.image.created"}


def _foreign_ca_pem() -> bytes:
    import datetime as dt

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                         x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Other"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "Other CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


async def _sign_ours(reg: Registry, repo: str, digest: str, notation: Notation,
                     envelope: Any, metadata: dict[str, str]) -> Any:
    ref = Reference(reg.host, repo)
    key = load_private_key(notation.key_file.read_bytes())
    chain = x509.load_pem_x509_certificates(notation.cert_file.read_bytes())
    async with RegistryClient(insecure=True) as client:
        desc = await client.head_manifest(ref.with_digest(digest))
        return await sign_notation(client, ref, digest, desc.media_type, desc.size, key,
                                   chain, envelope=envelope, user_metadata=metadata)


@pytest.mark.parametrize("envelope", ["jws", "cose"])
@pytest.mark.parametrize("which", REGISTRIES)
def test_ours_signs_notation_verifies(notation: Notation, request: pytest.FixtureRequest,
                                      which: str, envelope: str, tmp_path: Path) -> None:
    reg = _registry(request, which)
    repo = f"ours-to-notation/{envelope}"
    digest = _push(reg, repo, tmp_path)
    res = asyncio.run(_sign_ours(reg, repo, digest, notation, envelope, {"team": "platform"}))
    assert res.kind == "notation" and res.subject == digest
    assert res.stored_via == ("api" if reg.referrers_api else "tag")
    sig_digest = res.location.rpartition("@")[2]

    target = f"{reg.host}/{repo}@{digest}"
    verified = notation("verify", "--insecure-registry", target)
    assert "Successfully verified" in verified.stdout, verified.stdout + verified.stderr
    notation("verify", "--insecure-registry", "--user-metadata", "team=platform", target)
    wrong_md = notation("verify", "--insecure-registry", "--user-metadata", "team=other",
                        target, check=False)
    assert wrong_md.returncode != 0

    listed = notation("ls", "--insecure-registry", target)
    assert sig_digest in listed.stdout, listed.stdout

    inspected = json.loads(notation("inspect", "--insecure-registry", "-o", "json",
                                    target).stdout)
    (sig,) = inspected["Signatures"]  # sic: notation 1.3's JSON key
    assert sig["digest"] == sig_digest
    assert sig["mediaType"] == ("application/jose+json" if envelope == "jws"
                                else "application/cose")
    assert sig["signatureAlgorithm"] == "RSASSA-PSS-SHA-256"
    assert sig["signedArtifact"]["digest"] == digest
    assert sig["userDefinedAttributes"] == {"team": "platform"}
    assert sig["signedAttributes"]["signingScheme"] == "notary.x509"
    assert sig["unsignedAttributes"]["signingAgent"].startswith("ocigitops/")

    # Our own discovery sees it as well.
    found, tags = asyncio.run(_discover(reg, repo, digest))
    assert [f.media_type for f in found.found] == [sig["mediaType"]]
    assert (fallback_tag(digest) in tags) is (not reg.referrers_api)


def test_notation_rejects_ours_with_untrusted_store(notation: Notation,
                                                    olareg_registry: Registry,
                                                    tmp_path: Path) -> None:
    """Sanity check that ``notation verify`` really checks our signature: another policy."""
    reg = olareg_registry
    repo = "ours-to-notation/untrusted"
    digest = _push(reg, repo, tmp_path)
    asyncio.run(_sign_ours(reg, repo, digest, notation, "jws", {}))
    other = Notation(notation.binary, tmp_path / "other-home")
    other("cert", "generate-test", "other-key")  # trusts only the other certificate
    policy = tmp_path / "other-policy.json"
    policy.write_text(json.dumps(_policy_doc("*", "ca:other-key",
                                             "x509.subject: C=US, ST=WA, O=Notary")))
    other("policy", "import", "--force", str(policy))
    proc = other("verify", "-v", "--insecure-registry", f"{reg.host}/{repo}@{digest}",
                 check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "signature verification failed" in out
    assert "certificate chain does not contain any trusted certificate" in out


def test_environment_isolated(notation: Notation) -> None:
    """notation kept everything under the temporary home (nothing in the real one)."""
    assert notation.config.is_dir()
    assert str(notation.home) != os.environ.get("HOME")
