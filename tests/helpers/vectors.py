"""Test vectors and trust material for the verifier tests.

The upstream vectors are in ``<repo>/../shared/testvectors`` (CI clones the repository with
``shared/`` beside it). Their absence stops the whole run once, with one message
(``tests/conftest.py``); should one folder of them be missing, :func:`vectors` fails the test
naming it, never a silent skip. The rest makes test PKI: CAs and leaves, notation trust
policies, and :class:`FakeSigstore`, a private Fulcio/CT/Rekor for building bundles.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.helpers.paths import TESTVECTORS

CONFORMANCE = TESTVECTORS / "sigstore-conformance" / "bundle-verify"
SIGSTORE_PY = TESTVECTORS / "sigstore-python"
COSIGN = TESTVECTORS / "cosign"
NOTATION = TESTVECTORS / "notation"
NOTATION_TRUSTSTORE = NOTATION / "verifier" / "testdata" / "truststore"

DEFAULT_IDENTITY = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
DEFAULT_ISSUER = "https://token.actions.githubusercontent.com"


def vectors(path: Path) -> Path:
    """Return ``path`` or fail the test naming the missing vector directory."""
    if not path.exists():
        pytest.fail(f"test vectors missing: {path} (clone shared/ beside the repository)",
                    pytrace=False)
    return path


def conformance_cases() -> list[str]:
    """Folder names of every sigstore-conformance bundle-verify case (empty if absent)."""
    if not CONFORMANCE.is_dir():
        return ["<missing-vectors>"]
    return sorted(p.name for p in CONFORMANCE.iterdir() if p.is_dir())


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def name(cn: str, **extra: str) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    oids = {"C": NameOID.COUNTRY_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME,
            "O": NameOID.ORGANIZATION_NAME, "L": NameOID.LOCALITY_NAME}
    attrs += [x509.NameAttribute(oids[k], v) for k, v in extra.items()]
    return x509.Name(attrs)


def make_ca(cn: str = "Test Root CA", key: Any = None, *, not_before: dt.datetime | None = None,
            not_after: dt.datetime | None = None,
            **extra: str) -> tuple[x509.Certificate, Any]:
    """A self-signed CA certificate and its key."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    nb = not_before or now() - dt.timedelta(days=365)
    na = not_after or now() + dt.timedelta(days=3650)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(cn, **extra)).issuer_name(name(cn, **extra))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(nb).not_valid_after(na)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_leaf(issuer_cert: x509.Certificate, issuer_key: Any, subject: x509.Name, key: Any, *,
              not_before: dt.datetime, not_after: dt.datetime,
              extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
              eku: bool = True) -> x509.Certificate:
    """A code-signing leaf issued by ``issuer_cert``."""
    b = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                     False), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()), critical=False)
    )
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),
                            critical=False)
    for ext, crit in extensions:
        b = b.add_extension(ext, critical=crit)
    return b.sign(issuer_key, hashes.SHA256())


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def trust_policy(level: str = "strict", stores: Iterable[str] = ("ca:valid-trust-store",),
                 identities: Iterable[str] = ("*",), scopes: Iterable[str] = ("*",),
                 **sv: Any) -> dict[str, Any]:
    """A one-statement notation trust policy document."""
    return {"version": "1.0", "trustPolicies": [{
        "name": "test", "registryScopes": list(scopes),
        "signatureVerification": {"level": level, **sv},
        "trustStores": list(stores), "trustedIdentities": list(identities),
    }]}


def dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWS (notation envelopes, JWTs) encodes its parts."""
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- a private sigstore instance for tests -------------------------------------------------

def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def _rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeSigstore:
    """A Fulcio CA, a CT log and a Rekor log made of local keys.

    It issues Fulcio-style certificates (OIDC issuer and GitHub claim extensions, an embedded
    SCT) and log entries (SET, one-leaf inclusion proof, signed checkpoint), and writes the
    matching ``trusted_root.json``, so bundles can be built for any digest or identity.
    """

    FULCIO = "1.3.6.1.4.1.57264.1."

    def __init__(self, *, ca_cn: str = "fake-fulcio") -> None:
        import hashlib

        self.ca_cert, self.ca_key = make_ca(ca_cn)
        self.rekor_key = ec.generate_private_key(ec.SECP256R1())
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        self.rekor_der = self.rekor_key.public_key().public_bytes(serialization.Encoding.DER, spki)
        self.ct_der = self.ct_key.public_key().public_bytes(serialization.Encoding.DER, spki)
        self.rekor_id = hashlib.sha256(self.rekor_der).digest()
        self.ct_id = hashlib.sha256(self.ct_der).digest()

    def trusted_root(self) -> bytes:
        start = "2020-01-01T00:00:00Z"

        def log(der_: bytes, key_id: bytes) -> dict[str, Any]:
            return {"baseUrl": "https://log.invalid", "hashAlgorithm": "SHA2_256",
                    "publicKey": {"rawBytes": _b64(der_), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                                  "validFor": {"start": start}},
                    "logId": {"keyId": _b64(key_id)}}

        return dumps({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(self.rekor_der, self.rekor_id)],
            "certificateAuthorities": [{
                "subject": {"organization": "test", "commonName": "fake-fulcio"},
                "uri": "https://fulcio.invalid",
                "certChain": {"certificates": [{"rawBytes": _b64(der(self.ca_cert))}]},
                "validFor": {"start": start}}],
            "ctlogs": [log(self.ct_der, self.ct_id)],
            "timestampAuthorities": [],
        })

    def _utf8(self, s: str) -> bytes:
        raw = s.encode()
        assert len(raw) < 128
        return b"\x0c" + bytes([len(raw)]) + raw

    def issue(self, key: Any, *, subject: str, issuer: str,
              github: dict[str, str] | None = None, not_before: dt.datetime | None = None,
              lifetime: dt.timedelta = dt.timedelta(minutes=10)) -> x509.Certificate:
        """A Fulcio-style leaf for ``key`` with an embedded SCT from the fake CT log."""
        import struct

        nb = not_before or now() - dt.timedelta(minutes=1)
        exts: list[tuple[x509.ExtensionType, bool]] = [
            (x509.SubjectAlternativeName([x509.UniformResourceIdentifier(subject)]), True),
            (x509.UnrecognizedExtension(x509.ObjectIdentifier(self.FULCIO + "1"),
                                        issuer.encode()), False),
            (x509.UnrecognizedExtension(x509.ObjectIdentifier(self.FULCIO + "8"),
                                        self._utf8(issuer)), False),
        ]
        oids = {"trigger": "2", "sha": "3", "repository": "5", "ref": "6"}
        for k, v in (github or {}).items():
            exts.append((x509.UnrecognizedExtension(
                x509.ObjectIdentifier(self.FULCIO + oids[k]), v.encode()), False))
        serial = x509.random_serial_number()

        def build(extra: list[tuple[x509.ExtensionType, bool]]) -> x509.Certificate:
            b = (x509.CertificateBuilder().subject_name(x509.Name([]))
                 .issuer_name(self.ca_cert.subject).public_key(key.public_key())
                 .serial_number(serial).not_valid_before(nb).not_valid_after(nb + lifetime)
                 .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                              False, False), critical=True)
                 .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),
                                critical=False)
                 .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                     self.ca_key.public_key()), critical=False))
            for ext, crit in exts + extra:
                b = b.add_extension(ext, critical=crit)
            return b.sign(self.ca_key, hashes.SHA256())

        import hashlib

        tbs = build([]).tbs_certificate_bytes
        ts_ms = int(nb.timestamp() * 1000)
        issuer_hash = hashlib.sha256(self.ca_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).digest()
        signed_entry = issuer_hash + len(tbs).to_bytes(3, "big") + tbs
        data = struct.pack(f"!BBQH{len(signed_entry)}sH", 0, 0, ts_ms, 1, signed_entry, 0)
        sig = self.ct_key.sign(data, ec.ECDSA(hashes.SHA256()))
        sct = (b"\x00" + self.ct_id + struct.pack("!Q", ts_ms) + b"\x00\x00"
               + b"\x04\x03" + struct.pack("!H", len(sig)) + sig)
        sct_list = struct.pack("!H", len(sct) + 2) + struct.pack("!H", len(sct)) + sct
        octet = b"\x04" + self._der_len(len(sct_list)) + sct_list
        ext = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2"), octet)
        return build([(ext, False)])

    @staticmethod
    def _der_len(n: int) -> bytes:
        if n < 0x80:
            return bytes([n])
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return bytes([0x80 | len(b)]) + b

    def log_entry(self, body: dict[str, Any], *, integrated: dt.datetime | None = None,
                  kind: str = "hashedrekord") -> dict[str, Any]:
        """A bundle ``tlogEntries`` item: SET, one-leaf inclusion proof and checkpoint."""
        import hashlib

        import rfc8785

        canon = rfc8785.dumps(body)
        t = int((integrated or now()).timestamp())
        set_payload = rfc8785.dumps({"body": _b64(canon), "integratedTime": t,
                                     "logID": self.rekor_id.hex(), "logIndex": 0})
        set_sig = self.rekor_key.sign(set_payload, ec.ECDSA(hashes.SHA256()))
        root = hashlib.sha256(b"\x00" + canon).digest()
        note = f"fake-rekor - 1\n1\n{_b64(root)}\n"
        note_sig = self.rekor_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        envelope = note + "\n\u2014 fake-rekor " + _b64(self.rekor_id[:4] + note_sig) + "\n"
        return {
            "logIndex": "0", "logId": {"keyId": _b64(self.rekor_id)},
            "kindVersion": {"kind": kind, "version": "0.0.1"},
            "integratedTime": str(t),
            "inclusionPromise": {"signedEntryTimestamp": _b64(set_sig)},
            "inclusionProof": {"logIndex": "0", "rootHash": _b64(root), "treeSize": "1",
                               "hashes": [], "checkpoint": {"envelope": envelope}},
            "canonicalizedBody": _b64(canon),
        }

    def rekor_annotation(self, entry: dict[str, Any]) -> str:
        """The legacy ``dev.sigstore.cosign/bundle`` annotation for a log entry."""
        set_b64 = entry["inclusionPromise"]["signedEntryTimestamp"]
        return json.dumps({"SignedEntryTimestamp": set_b64,
                           "Payload": {"body": entry["canonicalizedBody"],
                                       "integratedTime": int(entry["integratedTime"]),
                                       "logIndex": int(entry["logIndex"]),
                                       "logID": self.rekor_id.hex()}})


def hashedrekord_body(signature: bytes, verifier_pem: bytes,
                      payload_sha256: bytes) -> dict[str, Any]:
    """A hashedrekord v0.0.1 entry body."""
    return {"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
        "data": {"hash": {"algorithm": "sha256", "value": payload_sha256.hex()}},
        "signature": {"content": _b64(signature), "publicKey": {"content": _b64(verifier_pem)}}}}


def message_bundle(*, signature: bytes, digest: bytes, entry: dict[str, Any] | None,
                   certificate: x509.Certificate | None = None,
                   key_hint: str | None = None) -> bytes:
    """A v0.3 sigstore bundle with a message signature."""
    vm: dict[str, Any] = {"tlogEntries": [entry] if entry else []}
    if certificate is not None:
        vm["certificate"] = {"rawBytes": _b64(der(certificate))}
    else:
        vm["publicKey"] = {"hint": key_hint or ""}
    return dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                  "verificationMaterial": vm,
                  "messageSignature": {"messageDigest": {"algorithm": "SHA2_256",
                                                         "digest": _b64(digest)},
                                       "signature": _b64(signature)}})
