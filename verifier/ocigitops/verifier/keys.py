"""cosign key files: public keys, encrypted private keys, key generation.

cosign's encrypted private key format (``ENCRYPTED SIGSTORE PRIVATE KEY``, formerly
``ENCRYPTED COSIGN PRIVATE KEY``) comes from go-securesystemslib's ``encrypted`` package: a PEM
block whose body is JSON ``{"kdf": {"name": "scrypt", "params": {"N", "r", "p"}, "salt"},
"cipher": {"name": "nacl/secretbox", "nonce"}, "ciphertext"}`` (byte fields standard base64),
the secretbox key is ``scrypt(password, salt, N, r, p, 32)`` and the plaintext is PKCS#8 DER.
No Python library reads it, so it is implemented here with hashlib.scrypt and PyNaCl.

Accepted key types follow cosign's ``cryptoutils`` rules: ECDSA P-256/384/521, RSA from 2048 to
4096 bits, Ed25519. Anything else is refused with :class:`UnsupportedKeyError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from ocigitops.verifier.errors import MalformedKeyError, UnsupportedKeyError, WrongPasswordError

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

SIGSTORE_PRIVATE_KEY_PEM = "ENCRYPTED SIGSTORE PRIVATE KEY"
COSIGN_PRIVATE_KEY_PEM = "ENCRYPTED COSIGN PRIVATE KEY"
_ENCRYPTED_PEM_TYPES = (SIGSTORE_PRIVATE_KEY_PEM, COSIGN_PRIVATE_KEY_PEM)

# cosign generate-key-pair uses these scrypt parameters (go-securesystemslib defaults).
DEFAULT_SCRYPT_N = 65536
DEFAULT_SCRYPT_R = 8
DEFAULT_SCRYPT_P = 1
# Refuse attacker-chosen KDF costs that would exhaust memory or CPU: cosign only ever writes
# N in {32768, 65536, 131072} with r=8, p=1.
_MAX_SCRYPT_N = 1 << 20
_MAX_SCRYPT_R = 32
_MAX_SCRYPT_P = 16
_MAX_KEY_FILE = 1 << 20

_ACCEPTED_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_RSA_MIN_BITS = 2048
_RSA_MAX_BITS = 4096

_PEM_RE = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)\r?\n?-----END \1-----", re.DOTALL
)


@dataclass(frozen=True)
class PemBlock:
    """One PEM block: its type line and decoded body."""

    type: str
    body: bytes


def parse_pem(data: bytes | str) -> PemBlock:
    """Return the first PEM block of ``data``.

    Raises :class:`MalformedKeyError` when there is no well-formed block.
    """
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > _MAX_KEY_FILE:
        raise MalformedKeyError("key file is larger than 1 MiB")
    m = _PEM_RE.search(raw)
    if m is None:
        raise MalformedKeyError("no PEM block found in key data")
    try:
        body = base64.b64decode(b"".join(m.group(2).split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedKeyError(
            f"PEM block {m.group(1).decode()!r} does not hold plain base64 DER"
        ) from exc
    return PemBlock(m.group(1).decode(), body)


def check_key_supported(key: object) -> None:
    """Raise :class:`UnsupportedKeyError` unless ``key`` is a type cosign accepts."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, _ACCEPTED_CURVES):
            raise UnsupportedKeyError(
                f"unsupported elliptic curve {key.curve.name}: use P-256, P-384 or P-521"
            )
        return
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        if key.key_size < _RSA_MIN_BITS:
            raise UnsupportedKeyError(
                f"RSA key of {key.key_size} bits is too small (minimum {_RSA_MIN_BITS})"
            )
        if key.key_size > _RSA_MAX_BITS:
            raise UnsupportedKeyError(
                f"RSA key of {key.key_size} bits is too large (maximum {_RSA_MAX_BITS})"
            )
        return
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return
    raise UnsupportedKeyError(
        f"unsupported key type {type(key).__name__}: use ECDSA, RSA or Ed25519"
    )


def load_public_key(data: bytes | str) -> PublicKey:
    """Load a cosign public key (PEM ``PUBLIC KEY``, PKIX/SPKI DER inside).

    Raises :class:`MalformedKeyError` or :class:`UnsupportedKeyError`.
    """
    block = parse_pem(data)
    if block.type != "PUBLIC KEY":
        raise MalformedKeyError(f"expected a PEM 'PUBLIC KEY' block, found {block.type!r}")
    return public_key_from_der(block.body)


def public_key_from_der(der: bytes) -> PublicKey:
    """Load a DER SubjectPublicKeyInfo and check it is an accepted type."""
    try:
        key = serialization.load_der_public_key(der)
    except UnsupportedAlgorithm as exc:
        raise UnsupportedKeyError(f"unsupported public key algorithm: {exc}") from exc
    except ValueError as exc:
        raise MalformedKeyError(f"public key is not valid DER SubjectPublicKeyInfo: {exc}") from exc
    check_key_supported(key)
    assert isinstance(key, PublicKey)  # narrowed by check_key_supported
    return key


def public_key_der(key: PublicKey | PrivateKey) -> bytes:
    """DER SubjectPublicKeyInfo of ``key`` (or of a private key's public half)."""
    pub = key.public_key() if isinstance(key, PrivateKey) else key
    return pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_pem(key: PublicKey | PrivateKey) -> bytes:
    """PEM ``PUBLIC KEY`` of ``key``, as ``cosign.pub`` holds it."""
    pub = key.public_key() if isinstance(key, PrivateKey) else key
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_hint(key: PublicKey | PrivateKey) -> str:
    """The sigstore bundle ``publicKey.hint``: base64(sha256(DER SPKI))."""
    return base64.b64encode(hashlib.sha256(public_key_der(key)).digest()).decode()


def _b64field(obj: Any, *path: str) -> bytes:
    cur = obj
    for name in path:
        if not isinstance(cur, dict) or name not in cur:
            raise MalformedKeyError(f"encrypted key JSON lacks field {'.'.join(path)}")
        cur = cur[name]
    if not isinstance(cur, str):
        raise MalformedKeyError(f"encrypted key field {'.'.join(path)} is not a string")
    try:
        return base64.b64decode(cur, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedKeyError(f"encrypted key field {'.'.join(path)} is not base64") from exc


def _int_param(params: Any, name: str, limit: int) -> int:
    value = params.get(name) if isinstance(params, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or value > limit:
        raise MalformedKeyError(f"encrypted key scrypt parameter {name} is missing or out of range")
    return value


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    # hashlib's default maxmem (32 MiB) is below what N=65536, r=8 needs (64 MiB + overhead).
    maxmem = 128 * r * (n + p + 2) + (1 << 20)
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=32)


def decrypt_private_key(data: bytes | str, password: bytes | str) -> PrivateKey:
    """Decrypt a cosign encrypted private key PEM with ``password``.

    Accepts both ``ENCRYPTED SIGSTORE PRIVATE KEY`` and ``ENCRYPTED COSIGN PRIVATE KEY``.
    Raises :class:`WrongPasswordError` when the secretbox does not open.
    """
    block = parse_pem(data)
    if block.type not in _ENCRYPTED_PEM_TYPES:
        raise MalformedKeyError(
            f"expected an encrypted cosign private key PEM block, found {block.type!r}"
        )
    try:
        doc = json.loads(block.body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedKeyError("encrypted cosign key body is not JSON") from exc
    if not isinstance(doc, dict):
        raise MalformedKeyError("encrypted cosign key body is not a JSON object")
    kdf = doc.get("kdf")
    cipher = doc.get("cipher")
    if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
        raise UnsupportedKeyError("encrypted cosign key: only the scrypt KDF is supported")
    if not isinstance(cipher, dict) or cipher.get("name") != "nacl/secretbox":
        raise UnsupportedKeyError("encrypted cosign key: only nacl/secretbox is supported")
    params = kdf.get("params")
    n = _int_param(params, "N", _MAX_SCRYPT_N)
    r = _int_param(params, "r", _MAX_SCRYPT_R)
    p = _int_param(params, "p", _MAX_SCRYPT_P)
    if n & (n - 1):
        raise MalformedKeyError("encrypted cosign key: scrypt N must be a power of two")
    salt = _b64field(doc, "kdf", "salt")
    nonce = _b64field(doc, "cipher", "nonce")
    ciphertext = _b64field(doc, "ciphertext")
    if len(nonce) != SecretBox.NONCE_SIZE:
        raise MalformedKeyError("encrypted cosign key: nonce must be 24 bytes")
    pw = password.encode() if isinstance(password, str) else password
    box = SecretBox(_scrypt(pw, salt, n, r, p))
    try:
        plaintext = box.decrypt(ciphertext, nonce)
    except CryptoError as exc:
        raise WrongPasswordError("could not decrypt the private key: wrong password?") from exc
    key = _load_der_private(plaintext)
    return key


def _load_der_private(der: bytes) -> PrivateKey:
    try:
        key = serialization.load_der_private_key(der, password=None)
    except UnsupportedAlgorithm as exc:
        raise UnsupportedKeyError(f"unsupported private key algorithm: {exc}") from exc
    except (ValueError, TypeError) as exc:
        raise MalformedKeyError(f"private key is not valid PKCS#8 DER: {exc}") from exc
    check_key_supported(key)
    assert isinstance(key, PrivateKey)
    return key


def load_private_key(data: bytes | str, password: bytes | str | None = None) -> PrivateKey:
    """Load a private key as ``cosign import-key-pair`` and ``cosign sign --key`` accept it.

    Encrypted cosign/sigstore PEMs need ``password``; unencrypted ``PRIVATE KEY`` (PKCS#8),
    ``EC PRIVATE KEY`` (SEC1) and ``RSA PRIVATE KEY`` (PKCS#1) blocks are read as they are.
    A public key, PGP block or anything else is refused with :class:`MalformedKeyError`.
    """
    block = parse_pem(data)
    if block.type in _ENCRYPTED_PEM_TYPES:
        if password is None:
            raise WrongPasswordError("the private key is encrypted: a password is required")
        return decrypt_private_key(data, password)
    if block.type not in ("PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"):
        raise MalformedKeyError(f"expected a private key PEM block, found {block.type!r}")
    raw = data.encode() if isinstance(data, str) else data
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except UnsupportedAlgorithm as exc:
        raise UnsupportedKeyError(f"unsupported private key algorithm: {exc}") from exc
    except (ValueError, TypeError) as exc:
        # cryptography reports unknown curves as ValueError as well.
        if "curve" in str(exc).lower():
            raise UnsupportedKeyError(f"unsupported elliptic curve: {exc}") from exc
        raise MalformedKeyError(f"private key PEM could not be parsed: {exc}") from exc
    check_key_supported(key)
    assert isinstance(key, PrivateKey)
    return key


def encrypt_private_key(
    key: PrivateKey,
    password: bytes | str,
    *,
    scrypt_n: int = DEFAULT_SCRYPT_N,
    pem_type: str = SIGSTORE_PRIVATE_KEY_PEM,
) -> bytes:
    """Encrypt ``key`` into the cosign PEM format (``cosign.key``).

    cosign reads only ``scrypt_n`` 32768, 65536 (the default) or 131072; other values
    exist for fast tests and make keys that cosign refuses.
    """
    if pem_type not in _ENCRYPTED_PEM_TYPES:
        raise ValueError(f"pem_type must be one of {_ENCRYPTED_PEM_TYPES}")
    check_key_supported(key)
    pw = password.encode() if isinstance(password, str) else password
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    salt = os.urandom(32)
    nonce = os.urandom(SecretBox.NONCE_SIZE)
    box = SecretBox(_scrypt(pw, salt, scrypt_n, DEFAULT_SCRYPT_R, DEFAULT_SCRYPT_P))
    ciphertext = box.encrypt(der, nonce).ciphertext
    doc = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": scrypt_n, "r": DEFAULT_SCRYPT_R, "p": DEFAULT_SCRYPT_P},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }
    body = base64.encodebytes(json.dumps(doc, separators=(",", ":")).encode()).decode()
    # encodebytes wraps at 76 columns; PEM wants 64.
    flat = "".join(body.split())
    lines = [flat[i : i + 64] for i in range(0, len(flat), 64)]
    pem = f"-----BEGIN {pem_type}-----\n" + "\n".join(lines) + f"\n-----END {pem_type}-----\n"
    return pem.encode()


@dataclass(frozen=True)
class KeyPair:
    """A generated key pair: the encrypted private PEM, the public PEM and the key object."""

    private_pem: bytes
    public_pem: bytes
    private_key: ec.EllipticCurvePrivateKey


def generate_key_pair(password: bytes | str, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> KeyPair:
    """Generate an ECDSA P-256 key pair the way ``cosign generate-key-pair`` does."""
    key = ec.generate_private_key(ec.SECP256R1())
    return KeyPair(
        private_pem=encrypt_private_key(key, password, scrypt_n=scrypt_n),
        public_pem=public_key_pem(key),
        private_key=key,
    )
