"""Interop with the real ``notation`` 1.3 binary, both directions, JWS and COSE.

Registries: olareg and our embedded registry (referrers API), the Debian registry (none:
``sha256-<hex>`` tag schema).

notation -> ours: ``notation sign`` an artifact we pushed; our discovery finds the signature
and our policy evaluation verifies it with the trust store directory notation itself uses;
a foreign trust store, a wrong identity and another digest are rejected with a clear reason.
Our envelope builder reproduces notation's envelopes byte for byte (signature aside).

ours -> notation: :func:`ocigitops.publisher.sign_notation.sign_notation` with the key and
certificate of ``notation cert generate-test`` (and, on the Debian registry, RSA 3072/4096
and EC P-256/384/521 leaves under a two-level CA); ``notation verify`` (policy imported with
``notation policy import``, certificate added with ``notation cert add``) accepts it,
``notation ls`` lists it, ``notation inspect`` reads the expected fields; expiry is enforced
both ways.

Observed notation 1.3.2 behaviour: ``notation sign`` has ``--force-referrers-tag``
(default true), so by default it writes the signature manifest and then the tag-schema
index ``sha256-<hex>`` (read, append, write) whether or not the registry has the referrers
API; ``--force-referrers-tag=false`` uses the API and falls back to the tag schema only when
the registry lacks it. ``notation verify``/``ls`` use the referrers API when the registry
answers it and the tag index otherwise. On the Debian registry (no API) both directions go
through the tag index. notation-go writes its manifest in the pre-1.1 form (config media
type ``application/vnd.cncf.notary.signature``, no ``artifactType``); it lists and verifies
ours (``artifactType`` plus the empty config) all the same.

olareg 0.1.2 loses referrers when a client writes a tag-schema index whose bytes equal its
own referrers response (same digest: its index.json entry for the response is replaced by
the tag's), which is exactly what notation's default does for the first signature. The
referrers-API cases below therefore sign with ``--force-referrers-tag=false``; the default is
checked separately, and our discovery finds it there too because it merges the tag-schema
index with the API's answer.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ocigitops.publisher.sign_notation import build_envelope, sign_notation
from ocigitops.publisher.signresult import SignResult
from ocigitops.reference import Reference
from ocigitops.registry import RegistryClient, fallback_tag
from ocigitops.verifier.discovery import Discovered, discover
from ocigitops.verifier.keys import load_private_key
from ocigitops.verifier.notation import parse_envelope, parse_payload
from ocigitops.verifier.policy import NotationAuthority, PolicyResult, SignaturePolicy, evaluate
from ocigitops.verifier.trustpolicy import TrustStore, parse_trust_policy
from tests.helpers.cli import ocigitops, run
from tests.helpers.registries import Registry
from tests.helpers.tools import tool

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


REGISTRIES = ["olareg_registry", "debian_plain", "embedded_registry"]


def _push(reg: Registry, repo: str, tmp_path: Path) -> str:
    src = tmp_path / "src"
    src.mkdir(parents=True, exist_ok=True)
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
        return ours.data.replace(base64.urlsafe_b64encode(mine.signature).rstrip(b"="),
                                 base64.urlsafe_b64encode(env.signature).rstrip(b"="))
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
    # Found on every registry: discovery merges the tag-schema index with the API's answer,
    # which also covers olareg 0.1.2 dropping this referrer from its API (module docstring).
    found, _tags = asyncio.run(_discover(reg, repo, digest))
    assert [f.kind for f in found.found] == ["notation"]
    assert found.referrers_via == ("api" if reg.referrers_api else "tag")


def _foreign_ca_pem() -> bytes:
    cert, _key = _ca("Other CA", ec.generate_private_key(ec.SECP256R1()), org="Other")
    return cert.public_bytes(serialization.Encoding.PEM)


def _dn(cn: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ku(*, sign_certs: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=sign_certs, crl_sign=sign_certs, encipher_only=False,
                         decipher_only=False)


def _ca(cn: str, key: Any, issuer: tuple[x509.Certificate, Any] | None = None,
        org: str = "Example") -> tuple[x509.Certificate, Any]:
    """A CA certificate (self-signed root, or issued by ``issuer``) and its key."""
    now = dt.datetime.now(dt.UTC)
    subject = _dn(cn, org)
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_ku(sign_certs=True), critical=True)
            .sign(signer, hashes.SHA384()))
    return cert, key


LEAF_IDENTITY = "x509.subject: C=US, ST=WA, O=Example, CN=ocigitops signer"
KEY_KINDS: dict[str, Any] = {
    "rsa3072": lambda: rsa.generate_private_key(65537, 3072),
    "rsa4096": lambda: rsa.generate_private_key(65537, 4096),
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "p521": lambda: ec.generate_private_key(ec.SECP521R1()),
}


def _chain(kind: str) -> tuple[Any, list[x509.Certificate], x509.Certificate]:
    """(leaf key of ``kind``, [leaf, intermediate, root], root) of a self-made CA."""
    root = _ca("Example Root CA", ec.generate_private_key(ec.SECP384R1()))
    inter = _ca("Example Signing CA", rsa.generate_private_key(65537, 2048), issuer=root)
    key = KEY_KINDS[kind]()
    now = dt.datetime.now(dt.UTC)
    leaf = (x509.CertificateBuilder().subject_name(_dn("ocigitops signer", "Example"))
            .issuer_name(inter[0].subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=10))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_ku(sign_certs=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),
                           critical=False)
            .sign(inter[1], hashes.SHA256()))
    return key, [leaf, inter[0], root[0]], root[0]


async def _sign_ours(reg: Registry, repo: str, digest: str, key: Any,
                     chain: list[x509.Certificate], envelope: Any, *,
                     metadata: dict[str, str] | None = None,
                     expiry: dt.timedelta | None = None) -> SignResult:
    ref = Reference(reg.host, repo)
    async with RegistryClient(insecure=True) as client:
        desc = await client.head_manifest(ref.with_digest(digest))
        return await sign_notation(client, ref, digest, desc.media_type, desc.size, key,
                                   chain, envelope=envelope, user_metadata=metadata,
                                   expiry=expiry)


def _notation_key(notation: Notation) -> tuple[Any, list[x509.Certificate]]:
    """The key and certificate ``notation cert generate-test`` made."""
    return (load_private_key(notation.key_file.read_bytes()),
            x509.load_pem_x509_certificates(notation.cert_file.read_bytes()))


@pytest.mark.parametrize("envelope", ["jws", "cose"])
@pytest.mark.parametrize("which", REGISTRIES)
def test_ours_signs_notation_verifies(notation: Notation, request: pytest.FixtureRequest,
                                      which: str, envelope: str, tmp_path: Path) -> None:
    reg = _registry(request, which)
    repo = f"ours-to-notation/{envelope}"
    digest = _push(reg, repo, tmp_path)
    key, chain = _notation_key(notation)
    res = asyncio.run(_sign_ours(reg, repo, digest, key, chain, envelope,
                                 metadata={"team": "platform"},
                                 expiry=dt.timedelta(hours=1)))
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
    assert "expiry" in sig["signedAttributes"]
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
    key, chain = _notation_key(notation)
    asyncio.run(_sign_ours(reg, repo, digest, key, chain, "jws"))
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


ALGS = {"rsa3072": ("PS384", "RSASSA-PSS-SHA-384"), "rsa4096": ("PS512", "RSASSA-PSS-SHA-512"),
        "p256": ("ES256", "ECDSA-SHA-256"), "p384": ("ES384", "ECDSA-SHA-384"),
        "p521": ("ES512", "ECDSA-SHA-512")}


def _pem_files(where: Path, key: Any, chain: list[x509.Certificate]) -> tuple[Path, Path]:
    where.mkdir(parents=True, exist_ok=True)
    key_file, cert_file = where / "leaf.key", where / "chain.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_file.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    return key_file, cert_file


def _notation_with_chain(home: Path, key: Any, chain: list[x509.Certificate]) -> Notation:
    """notation trusting ``chain``'s root (store ca:roots) and signing with ``key``."""
    n = Notation(tool("notation"), home)
    key_file, cert_file = _pem_files(home / "pki", key, chain)
    root_file = home / "pki" / "root.pem"
    root_file.write_bytes(chain[-1].public_bytes(serialization.Encoding.PEM))
    n("cert", "add", "--type", "ca", "--store", "roots", str(root_file))
    policy = home / "trustpolicy.json"
    policy.write_text(json.dumps(_policy_doc("*", "ca:roots", LEAF_IDENTITY)))
    n("policy", "import", "--force", str(policy))
    # What `notation key add` would write for a local key (it only adds plugin keys).
    n.config.mkdir(parents=True, exist_ok=True)
    (n.config / "signingkeys.json").write_text(json.dumps({"default": "leaf", "keys": [
        {"name": "leaf", "keyPath": str(key_file), "certPath": str(cert_file)}]}))
    return n


@pytest.mark.parametrize("envelope", ["jws", "cose"])
@pytest.mark.parametrize("kind", list(KEY_KINDS))
def test_key_types_both_directions(debian_plain: Registry, kind: str, envelope: str,
                                   tmp_path: Path) -> None:
    """RSA 3072/4096 and EC P-256/384/521 leaves under a two-level CA, both directions."""
    reg = debian_plain
    key, chain, root = _chain(kind)
    n = _notation_with_chain(tmp_path / "home", key, chain)
    alg, notation_alg = ALGS[kind]

    # ours -> notation
    repo = f"keys/{kind}-{envelope}-ours"
    digest = _push(reg, repo, tmp_path / "a")
    asyncio.run(_sign_ours(reg, repo, digest, key, chain, envelope))
    target = f"{reg.host}/{repo}@{digest}"
    n("verify", "--insecure-registry", target)
    (sig,) = json.loads(n("inspect", "--insecure-registry", "-o", "json",
                          target).stdout)["Signatures"]
    assert sig["signatureAlgorithm"] == notation_alg
    assert [c["issuedTo"] for c in sig["certificates"]] == [
        c.subject.rfc4514_string() for c in chain]

    # notation -> ours
    repo = f"keys/{kind}-{envelope}-notation"
    digest = _push(reg, repo, tmp_path / "b")
    n("sign", "--insecure-registry", "--signature-format", envelope, "--key", "leaf",
      f"{reg.host}/{repo}@{digest}")
    found, _tags = asyncio.run(_discover(reg, repo, digest))
    (cand,) = found.candidates.notation
    assert parse_envelope(cand.envelope, cand.media_type).alg == alg
    repository = f"{reg.host}/{repo}"
    result = _evaluate(found, digest, repository, TrustStore({("ca", "roots"): [root]}),
                       repository, "ca:roots", LEAF_IDENTITY)
    assert result.passed, result.summary()


@pytest.mark.parametrize("envelope", ["jws", "cose"])
def test_expiry_both_directions(notation: Notation, debian_plain: Registry, envelope: str,
                                tmp_path: Path) -> None:
    """Our ``io.cncf.notary.expiry`` is enforced by notation, and notation's by us."""
    reg = debian_plain
    repo = f"expiry/{envelope}-ours"
    digest = _push(reg, repo, tmp_path / "a")
    key, chain = _notation_key(notation)
    asyncio.run(_sign_ours(reg, repo, digest, key, chain, envelope,
                           expiry=dt.timedelta(seconds=1)))
    target = f"{reg.host}/{repo}@{digest}"
    # expiry = truncate(signing start + 1 s) <= signing start + 1 s: 1.2 s later it has passed.
    time.sleep(1.2)
    proc = notation("verify", "-v", "--insecure-registry", target, check=False)
    assert proc.returncode != 0
    assert "expired" in proc.stdout + proc.stderr

    repo = f"expiry/{envelope}-notation"
    digest = _push(reg, repo, tmp_path / "b")
    notation("sign", "--insecure-registry", "--signature-format", envelope, "--expiry", "1m",
             f"{reg.host}/{repo}@{digest}")
    found, _tags = asyncio.run(_discover(reg, repo, digest))
    repository = f"{reg.host}/{repo}"
    store = TrustStore.from_directory(notation.truststore)
    authority = NotationAuthority("notation", parse_trust_policy(
        _policy_doc(repository, f"ca:{KEY_NAME}")), store)
    policy = SignaturePolicy((authority,))
    now = evaluate(policy, digest, found.candidates, repository=repository)
    assert now.passed, now.summary()
    later = evaluate(policy, digest, found.candidates, repository=repository,
                     now=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2))
    assert not later.passed
    assert "expired" in later.authorities[0].reason


@pytest.mark.parametrize("envelope", ["jws", "cose"])
def test_cli_sign_notation_verifies(notation: Notation, debian_plain: Registry, envelope: str,
                                    tmp_path: Path) -> None:
    """``ocigitops sign artifact --notation`` with notation's own key files."""
    reg = debian_plain
    repo = f"cli/{envelope}"
    digest = _push(reg, repo, tmp_path)
    out = ocigitops("sign", "artifact", f"{reg.url(repo)}@{digest}", "--notation",
                    "--key", str(notation.key_file), "--cert", str(notation.cert_file),
                    "--envelope", envelope, "-a", "env=prod", "-o", "json",
                    *reg.cli_flags())
    res = json.loads(out.stdout)
    assert res["kind"] == "notation" and res["subject"] == digest
    assert res["storedVia"] == "tag"
    notation("verify", "--insecure-registry", "--user-metadata", "env=prod",
             f"{reg.host}/{repo}@{digest}")
