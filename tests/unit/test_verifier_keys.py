"""cosign key files: every upstream fixture loads or is refused as its name says."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519

from ocigitops.verifier import keys
from ocigitops.verifier.errors import (
    KeyLoadError,
    MalformedKeyError,
    UnsupportedKeyError,
    WrongPasswordError,
)
from tests.helpers.vectors import COSIGN, vectors

pytestmark = pytest.mark.unit

KEY_DIR = COSIGN / "keys"
FIXTURES = sorted(p.name for p in KEY_DIR.glob("*.pem")) if KEY_DIR.is_dir() else ["<missing>"]
ENCRYPTED = {"pemcosignkey.pem", "pemcosigneckey.pem", "pemsigstorekey.pem"}


@pytest.mark.parametrize("fixture", FIXTURES)
def test_cosign_key_fixture(fixture: str) -> None:
    data = (vectors(KEY_DIR) / fixture).read_bytes()
    if fixture.startswith("invalid"):
        with pytest.raises(KeyLoadError):
            keys.load_private_key(data, "hello")
        return
    key = keys.load_private_key(data, "hello" if fixture in ENCRYPTED else None)
    # The public half round-trips through the cosign.pub format.
    pub = keys.load_public_key(keys.public_key_pem(key))
    assert keys.public_key_der(pub) == keys.public_key_der(key)


@pytest.mark.parametrize("fixture", sorted(ENCRYPTED))
def test_encrypted_fixture_wrong_password(fixture: str) -> None:
    data = (vectors(KEY_DIR) / fixture).read_bytes()
    with pytest.raises(WrongPasswordError, match="wrong password"):
        keys.load_private_key(data, "not-hello")
    with pytest.raises(WrongPasswordError, match="password is required"):
        keys.load_private_key(data, None)


def test_encrypted_fixture_formats() -> None:
    # Both PEM type names are accepted; their JSON uses cosign's field names.
    assert b"ENCRYPTED COSIGN PRIVATE KEY" in (vectors(KEY_DIR) / "pemcosignkey.pem").read_bytes()
    block = keys.parse_pem((KEY_DIR / "pemsigstorekey.pem").read_bytes())
    assert block.type == keys.SIGSTORE_PRIVATE_KEY_PEM
    doc = json.loads(block.body)
    assert set(doc) == {"kdf", "cipher", "ciphertext"}
    assert doc["kdf"]["name"] == "scrypt" and doc["cipher"]["name"] == "nacl/secretbox"


def test_generate_round_trip() -> None:
    pair = keys.generate_key_pair("s3cret", scrypt_n=1 << 14)
    block = keys.parse_pem(pair.private_pem)
    assert block.type == "ENCRYPTED SIGSTORE PRIVATE KEY"
    doc = json.loads(block.body)
    assert doc["kdf"]["params"] == {"N": 1 << 14, "r": 8, "p": 1}
    assert len(base64.b64decode(doc["kdf"]["salt"])) == 32
    assert len(base64.b64decode(doc["cipher"]["nonce"])) == 24
    key = keys.load_private_key(pair.private_pem, "s3cret")
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert keys.public_key_der(key) == keys.public_key_der(keys.load_public_key(pair.public_pem))
    with pytest.raises(WrongPasswordError):
        keys.load_private_key(pair.private_pem, "wrong")


def test_default_generation_uses_cosign_scrypt_cost() -> None:
    pair = keys.generate_key_pair(b"")
    doc = json.loads(keys.parse_pem(pair.private_pem).body)
    assert doc["kdf"]["params"]["N"] == 65536
    keys.load_private_key(pair.private_pem, b"")


def test_legacy_pem_type_written_and_read() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    data = keys.encrypt_private_key(key, "pw", scrypt_n=1 << 12,
                                    pem_type=keys.COSIGN_PRIVATE_KEY_PEM)
    assert data.startswith(b"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n")
    assert isinstance(keys.load_private_key(data, "pw"), ed25519.Ed25519PrivateKey)


@pytest.mark.parametrize("data, error, reason", [
    (b"", MalformedKeyError, "no PEM block"),
    (b"-----BEGIN PUBLIC KEY-----\nnot base64!!\n-----END PUBLIC KEY-----\n",
     MalformedKeyError, "base64"),
    (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
     MalformedKeyError, "SubjectPublicKeyInfo"),
    (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
     MalformedKeyError, "expected a PEM 'PUBLIC KEY'"),
])
def test_bad_public_keys(data: bytes, error: type[Exception], reason: str) -> None:
    with pytest.raises(error, match=reason):
        keys.load_public_key(data)


def test_unsupported_public_key_types() -> None:
    p224 = ec.generate_private_key(ec.SECP224R1()).public_key()
    with pytest.raises(UnsupportedKeyError, match="secp224r1"):
        keys.load_public_key(keys.public_key_pem(p224))
    d = dsa.generate_private_key(2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(UnsupportedKeyError, match="DSA"):
        keys.load_public_key(d)


def test_rsa_size_limits_on_public_keys() -> None:
    from tests.helpers.vectors import rsa_key

    with pytest.raises(UnsupportedKeyError, match="too small"):
        keys.load_public_key(keys.public_key_pem(rsa_key(1024).public_key()))
    pub = keys.load_public_key(keys.public_key_pem(rsa_key(2048).public_key()))
    assert pub.key_size == 2048  # type: ignore[union-attr]


def test_tampered_encrypted_key_fields(tmp_path: Path) -> None:
    pair = keys.generate_key_pair("pw", scrypt_n=1 << 12)
    doc = json.loads(keys.parse_pem(pair.private_pem).body)

    def pemify(d: dict[str, object]) -> bytes:
        body = base64.b64encode(json.dumps(d).encode()).decode()
        return (f"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n{body}\n"
                "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n").encode()

    bad_kdf = json.loads(json.dumps(doc))
    bad_kdf["kdf"]["name"] = "argon2"
    with pytest.raises(UnsupportedKeyError, match="scrypt"):
        keys.load_private_key(pemify(bad_kdf), "pw")
    huge = json.loads(json.dumps(doc))
    huge["kdf"]["params"]["N"] = 1 << 30
    with pytest.raises(MalformedKeyError, match="out of range"):
        keys.load_private_key(pemify(huge), "pw")
    missing = {k: v for k, v in doc.items() if k != "ciphertext"}
    with pytest.raises(MalformedKeyError, match="ciphertext"):
        keys.load_private_key(pemify(missing), "pw")


def test_sigstore_private_names_are_there() -> None:
    """The private sigstore-python names we depend on (pinned sigstore<5) still exist."""
    from ocigitops.verifier import sigstore_private

    for name in sigstore_private.__all__:
        assert getattr(sigstore_private, name) is not None
