"""The committed seed corpus, built with the project's own code: ``python3 -m fuzz seed``.

Every seed is a small valid input (a real artifact tarball, manifests and indexes as the
publisher writes them, signatures and envelopes made with freshly generated keys), so the
fuzzer starts from the formats' happy paths instead of rediscovering JSON and tar. The
targets that take a mode byte (see each target's docstring) get it as the first byte.

Upstream test vectors (``../shared/testvectors``) are not copied here, as their README asks:
:func:`testvector_seeds` lets the runner read them from where they are, at run time.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Seeds = dict[str, bytes]

#: Upstream vectors per target: (glob under testvectors/, mode byte prefix or b"").
TESTVECTOR_SEEDS: dict[str, list[tuple[str, bytes]]] = {
    "bundles": [(pattern, bytes([mode]))
                for pattern in ("sigstore-conformance/bundle-verify/*/bundle.sigstore.json",
                                "sigstore-python/*.sigstore", "sigstore-python/*.sigstore.json",
                                "cosign/*.sigstore.json")
                for mode in (0, 1, 2)],
    "notation": [("notation/internal/mock/testdata/*.json", b"\0"),
                 ("notation/internal/testdata/jws_signature.sig", b"\0"),
                 ("notation/verifier/testdata/timestamp/sigEnv/jws*.sig", b"\0"),
                 ("notation/internal/testdata/cose_signature.sig", b"\1"),
                 ("notation/verifier/testdata/timestamp/sigEnv/cose*.sig", b"\1"),
                 ("notation/verifier/testdata/timestamp/countersignature/*.p7s", b"\3")],
    "manifest": [("notation/internal/testdata/oci-layout/*.json", b"")],
    "jsonsafe": [("notation/internal/testdata/oci-layout/*.json", b""),
                 ("notation/internal/mock/testdata/ca_valid_sig_env.json", b"")],
}
#: A vector larger than this is left out (it would only slow every pass down).
MAX_TESTVECTOR_SEED = 64 * 1024


def testvector_seeds(target: str, vectors: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the upstream vectors that seed ``target``, read from ``vectors``."""
    for pattern, prefix in TESTVECTOR_SEEDS.get(target, []):
        for path in sorted(vectors.glob(pattern)):
            if path.is_file() and path.stat().st_size <= MAX_TESTVECTOR_SEED:
                name = str(path.relative_to(vectors)).replace("/", "__")
                yield f"{prefix.hex()}-{name}" if prefix else name, prefix + path.read_bytes()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def reference_seeds() -> Seeds:
    refs = [
        "nginx", "library/alpine:3.20", "oci://ghcr.io/org/team/app:v1.2.3",
        "localhost:5000/manifests@" + _digest(b"x"),
        "oci://[::1]:5000/deploy/prod:latest@sha512:" + "ab" * 64,
        "registry-1.docker.io/foo_bar/baz--qux.v2:1.0-rc.1", "example.com/a/b/c:tag_1",
    ]
    return {f"ref-{i}": r.encode() for i, r in enumerate(refs)}


def _artifact_tarball() -> bytes:
    """A real artifact layer (tar+gzip) from :func:`ocigitops.artifact.build_layer`."""
    from ocigitops.artifact import build_layer

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        (src / "apps" / "web").mkdir(parents=True)
        (src / "apps" / "web" / "deploy.yaml").write_text(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n")
        (src / "kustomization.yaml").write_text("resources:\n- apps/web/deploy.yaml\n")
        long_dir = src / ("d" * 60) / ("e" * 60)  # > 100 bytes: USTAR prefix split
        long_dir.mkdir(parents=True)
        (long_dir / "cm.yaml").write_text("kind: ConfigMap\n")
        (src / "ünïcode.yaml").write_text("kind: Secret\n")  # non-ASCII: a PAX header
        out = Path(tmp) / "layer.tar.gz"
        build_layer(src, out)
        return out.read_bytes()


def _gnu_tar() -> bytes:
    """A GNU long-name archive (the ``L`` header the reader also supports)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("x" * 250 + ".yaml")  # 255 bytes: the most a name part may have
        info.size = 5
        tar.addfile(info, io.BytesIO(b"a: 1\n"))
    # tarfile pads to a 10 KiB record: keep the members and the two end-of-archive blocks.
    return buf.getvalue()[:4 * 512] + b"\0" * 1024


def extract_seeds() -> Seeds:
    layer = _artifact_tarball()
    return {"artifact.tar": gzip.decompress(layer), "artifact.tar.gz": layer,
            "gnu-longname.tar": _gnu_tar()}


def _manifest_docs() -> Seeds:
    from ocigitops import mediatypes as mt
    from ocigitops.artifact import Metadata, build_config, build_manifest
    from ocigitops.publisher.sign_cosign import build_bundle_manifest, build_legacy_manifest
    from ocigitops.registry import Descriptor

    layer = _artifact_tarball()
    tar = gzip.decompress(layer)
    config = build_config(_digest(tar))
    config_desc = Descriptor(mt.FLUX_CONFIG, _digest(config), len(config))
    layer_desc = Descriptor(mt.FLUX_CONTENT, _digest(layer), len(layer))
    meta = Metadata(source="https://github.com/org/repo", revision="main@sha1:" + "a" * 40,
                    created="2024-01-01T00:00:00Z", annotations={"team": "web"})
    manifest = build_manifest(config_desc, [layer_desc], meta.to_annotations())
    subject = Descriptor(mt.OCI_MANIFEST, _digest(manifest), len(manifest))
    bundle_manifest = build_bundle_manifest(b"{}", subject, created="2024-01-01T00:00:00Z")
    legacy = build_legacy_manifest(config_desc, [Descriptor(
        "application/vnd.dev.cosign.simplesigning.v1+json", _digest(b"{}"), 2,
        annotations={"dev.cosignproject.cosign/signature": "MEUCIQ=="})])
    referrer = Descriptor(mt.OCI_MANIFEST, _digest(bundle_manifest), len(bundle_manifest),
                          annotations={"org.opencontainers.image.created": "2024"},
                          artifact_type="application/vnd.dev.sigstore.bundle.v0.3+json")
    # The tag-schema fallback index, as RegistryClient.add_referrer_fallback writes it.
    index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                        "manifests": [referrer.to_json(), subject.to_json()]},
                       separators=(",", ":")).encode()
    return {"manifest.json": manifest, "config.json": config,
            "bundle-manifest.json": bundle_manifest, "legacy-sig-manifest.json": legacy,
            "index.json": index,
            "descriptor.json": json.dumps(referrer.to_json()).encode()}


def manifest_seeds() -> Seeds:
    return _manifest_docs()


def jsonsafe_seeds() -> Seeds:
    docs = _manifest_docs()
    return {"manifest.json": docs["manifest.json"], "index.json": docs["index.json"],
            "scalars.json": b'[1, -2.5e3, "\\u00e9\\ud83d\\ude00", true, false, null, {}]'}


def _hashedrekord_body(signature: bytes, payload: bytes, key_pem: bytes) -> bytes:
    return json.dumps({
        "apiVersion": "0.0.1", "kind": "hashedrekord",
        "spec": {"data": {"hash": {"algorithm": "sha256",
                                   "value": hashlib.sha256(payload).hexdigest()}},
                 "signature": {"content": base64.b64encode(signature).decode(),
                               "publicKey": {"content": base64.b64encode(key_pem).decode()}}},
    }).encode()


def simplesigning_seeds() -> Seeds:
    from ocigitops.verifier.keys import public_key_pem
    from ocigitops.verifier.simplesigning import sign_legacy

    key = ec.generate_private_key(ec.SECP256R1())
    digest = _digest(b"manifest")
    sig = sign_legacy(key, "ghcr.io/org/app", digest, {"env": "prod"})
    body = _hashedrekord_body(sig.signature, sig.payload, public_key_pem(key))
    rekor = json.dumps({
        "SignedEntryTimestamp": base64.b64encode(b"\x30\x45" + b"\x01" * 69).decode(),
        "Payload": {"body": base64.b64encode(body).decode(), "integratedTime": 1700000000,
                    "logIndex": 42, "logID": hashlib.sha256(b"log").hexdigest()}}).encode()
    return {"0-payload.json": b"\0" + sig.payload,
            "1-signature-annotation": b"\1" + base64.b64encode(sig.signature),
            "2-rekor-bundle.json": b"\2" + rekor,
            "3-hashedrekord-body.json": b"\3" + body}


def bundles_seeds() -> Seeds:
    from ocigitops.publisher.sign_cosign import build_key_bundle, build_statement
    from ocigitops.verifier.keys import public_key_der, public_key_pem
    from ocigitops.verifier.sigalg import sign

    key = ec.generate_private_key(ec.SECP256R1())
    statement = build_statement("ghcr.io/org/app", _digest(b"fuzz"))
    bundle = build_key_bundle(key, statement)
    signature = sign(key, b"payload")
    b64 = base64.b64encode
    hashedrekord = _hashedrekord_body(signature, b"payload", public_key_pem(key))
    v2 = json.dumps({"apiVersion": "0.0.2", "kind": "hashedrekord", "spec": {
        "hashedRekordV002": {
            "data": {"algorithm": "SHA2_256", "digest": b64(b"d" * 32).decode()},
            "signature": {"content": b64(signature).decode(), "verifier": {
                "publicKey": {"rawBytes": b64(public_key_der(key)).decode()},
                "keyDetails": "PKIX_ECDSA_P256_SHA_256"}}}}}).encode()
    dsse = json.dumps({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
        "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(b"p").hexdigest()},
        "signatures": [{"signature": b64(signature).decode(),
                        "verifier": b64(public_key_pem(key)).decode()}]}}).encode()
    return {"0-key-bundle.json": b"\0" + bundle, "1-key-bundle.json": b"\1" + bundle,
            "3-statement.json": b"\3" + statement,
            "4-hashedrekord-v001.json": b"\4\0" + hashedrekord,
            "4-hashedrekord-v002.json": b"\4\1" + v2,
            "4-dsse-v001.json": b"\4\2" + dsse}


def _code_signing_chain() -> tuple[ec.EllipticCurvePrivateKey, list[x509.Certificate]]:
    """A leaf and root as notation expects them (leaf: digitalSignature, codeSigning)."""
    now = dt.datetime.now(dt.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz root")])
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz signer")])
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(root_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(leaf_name).issuer_name(root_name)
            .public_key(leaf_key.public_key()).serial_number(2)
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                         False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),
                           critical=False)
            .sign(root_key, hashes.SHA256()))
    return leaf_key, [leaf, root]


def notation_seeds() -> Seeds:
    from ocigitops import mediatypes as mt
    from ocigitops.publisher.sign_notation import build_envelope

    key, chain = _code_signing_chain()
    digest = _digest(b"manifest")
    out: Seeds = {}
    kinds: tuple[tuple[int, Literal["jws", "cose"]], ...] = ((0, "jws"), (1, "cose"))
    for mode, kind in kinds:
        env = build_envelope(mt.OCI_MANIFEST, digest, 512, key, chain, envelope=kind,
                             expiry=dt.timedelta(days=1), user_metadata={"env": "prod"})
        out[f"{mode}-envelope.{kind}"] = bytes([mode]) + env.data
        # Modes 4 and 5 take the protected header alone (the target wraps it).
        if kind == "jws":
            protected = json.loads(env.data)["protected"]
            header = base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4))
        else:
            header = cbor2.loads(env.data).value[0]
        out[f"{mode + 4}-protected-header.{kind}"] = bytes([mode + 4]) + header
    payload = json.dumps({"targetArtifact": {"mediaType": mt.OCI_MANIFEST, "digest": digest,
                                             "size": 512}}).encode()
    out["2-payload.json"] = b"\2" + payload
    return out


BUILDERS = {
    "reference": reference_seeds, "extract": extract_seeds, "manifest": manifest_seeds,
    "jsonsafe": jsonsafe_seeds, "simplesigning": simplesigning_seeds,
    "bundles": bundles_seeds, "notation": notation_seeds,
}


def write_corpus(corpus_root: Path, names: list[str]) -> list[Path]:
    """Write the seeds of ``names`` under ``corpus_root/<target>/``; return the files."""
    written: list[Path] = []
    for name in names:
        target_dir = corpus_root / name
        target_dir.mkdir(parents=True, exist_ok=True)
        for file_name, data in BUILDERS[name]().items():
            path = target_dir / file_name
            path.write_bytes(data)
            written.append(path)
    return written
