"""Verification of commit and annotated-tag signatures: OpenPGP and SSH, in process.

Trusted keys come from the ``spec.verify.secretRef`` Secret, read as source-controller 1.9
reads it: entries ending in ``.sshpub`` hold SSH public keys (``authorized_keys`` lines,
one or more); every other entry (``.asc`` and, for backward compatibility, any name) holds
OpenPGP public keys, armored or binary, one or several.

- OpenPGP: ``pysequoia`` (Sequoia-PGP, a maintained Rust implementation, wheels for
  Linux). PGPy was evaluated: unmaintained since 2022, it fails on current Python and
  ``cryptography`` and reads only part of RFC 9580; shelling out to ``gpg`` is not
  allowed in the controller. Sequoia's policy refuses SHA-1 and other broken algorithms.
- SSH: the ``sshsig`` package (what dulwich's ``SSHSigSignatureVendor`` uses), namespace
  ``git``, as ``ssh-keygen -Y verify -n git`` does.

Every refusal is a typed error with one line naming the object and the key: unsigned
(:class:`UnsignedObjectError`), signed by a key not in the Secret
(:class:`UnknownKeyError`), or a signature that does not match (:class:`BadSignatureError`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pysequoia
import sshsig
from dulwich.objects import Commit, Tag
from sshsig.ssh_public_key import PublicKey

from ocigitops.puller.git.errors import (
    BadSignatureError,
    TrustedKeysError,
    UnknownKeyError,
    UnsignedObjectError,
)

SSH_SUFFIX = ".sshpub"
PGP_SUFFIX = ".asc"
_PGP_MARKERS = (b"-----BEGIN PGP SIGNATURE-----", b"-----BEGIN PGP MESSAGE-----")
_SSH_MARKER = b"-----BEGIN SSH SIGNATURE-----"
_MAX_SIG = 64 * 1024


@dataclass(frozen=True)
class TrustedKeys:
    """The keys a signature must come from."""

    pgp: tuple[Any, ...] = ()  # pysequoia.Cert
    #: Key ids (16 hex, upper case) of every primary key and subkey in :attr:`pgp`.
    pgp_key_ids: frozenset[str] = frozenset()
    ssh: tuple[PublicKey, ...] = field(default=())


def _pgp_packets(data: bytes) -> list[tuple[int, bytes]]:
    """(tag, body) of every packet of a binary OpenPGP stream (enough to find keys)."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        b = data[pos]
        pos += 1
        if not b & 0x80:
            break
        if b & 0x40:  # new format
            tag = b & 0x3F
            o = data[pos]
            pos += 1
            if o < 192:
                n = o
            elif o < 224:
                n = ((o - 192) << 8) + data[pos] + 192
                pos += 1
            elif o == 255:
                n = int.from_bytes(data[pos:pos + 4], "big")
                pos += 4
            else:
                break  # partial lengths never occur in keys
        else:
            tag = (b >> 2) & 0x0F
            lt = b & 3
            if lt == 3:
                break
            width = (1, 2, 4)[lt]
            n = int.from_bytes(data[pos:pos + width], "big")
            pos += width
        out.append((tag, data[pos:pos + n]))
        pos += n
    return out


def _key_ids(binary: bytes) -> set[str]:
    ids: set[str] = set()
    for tag, body in _pgp_packets(binary):
        if tag not in (6, 14) or not body:
            continue
        if body[0] == 4:
            fpr = hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest()
            ids.add(fpr[-16:].upper())
        elif body[0] in (5, 6):
            prefix = b"\x9a" if body[0] == 5 else b"\x9b"
            fpr = hashlib.sha256(prefix + len(body).to_bytes(4, "big") + body).hexdigest()
            ids.add(fpr[:16].upper())
    return ids


def trusted_keys(data: Mapping[str, bytes], what: str = "verification Secret") -> TrustedKeys:
    """Read a verification Secret's keys; :class:`TrustedKeysError` when an entry does not
    parse or there is no key at all."""
    certs: list[Any] = []
    ids: set[str] = set()
    ssh: list[PublicKey] = []
    for name in sorted(data):
        raw = data[name]
        if name.endswith(SSH_SUFFIX):
            for line in raw.decode("utf-8", errors="replace").splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                parts = line.split()
                # authorized_keys lines may start with options; the key is "type base64".
                at = next((i for i, p in enumerate(parts) if p.startswith(("ssh-", "ecdsa-",
                                                                             "sk-"))), None)
                if at is None or at + 1 >= len(parts):
                    raise TrustedKeysError(f"{what}: entry {name!r} has a line that is not"
                                           " an SSH public key")
                try:
                    ssh.append(PublicKey.from_openssh_str(f"{parts[at]} {parts[at + 1]}"))
                except (ValueError, NotImplementedError):
                    raise TrustedKeysError(f"{what}: entry {name!r} holds an SSH key that"
                                           f" cannot be read ({parts[at]})") from None
            continue
        try:
            found = pysequoia.Cert.split_bytes(raw)
        except (RuntimeError, ValueError):
            raise TrustedKeysError(f"{what}: entry {name!r} is not an OpenPGP public key"
                                   " (armored or binary)") from None
        for cert in found:
            certs.append(cert)
            ids |= _key_ids(bytes(cert))
    if not certs and not ssh:
        raise TrustedKeysError(f"{what} holds no OpenPGP or SSH public key")
    return TrustedKeys(pgp=tuple(certs), pgp_key_ids=frozenset(ids), ssh=tuple(ssh))


def _ssh_fingerprint(key: PublicKey) -> str:
    return str(key.sha256_str())


def _verify_ssh(payload: bytes, signature: bytes, keys: TrustedKeys, what: str) -> str:
    try:
        embedded = sshsig.sshsig.SshsigSignature.from_armored(signature)
        signer = PublicKey.from_ssh_encoding(embedded.public_key)
    except Exception:
        raise BadSignatureError(f"{what}: the SSH signature cannot be read") from None
    fpr = _ssh_fingerprint(signer)
    if not keys.ssh:
        raise UnknownKeyError(f"{what} is SSH-signed by key {fpr}, but the verification"
                              " Secret holds no SSH key (*.sshpub)")
    try:
        key = sshsig.verify(payload, signature, keys.ssh, namespace="git")
    except (sshsig.InvalidSignature, ValueError, NotImplementedError):
        if signer not in keys.ssh:
            raise UnknownKeyError(f"{what} is SSH-signed by key {fpr}, which is not in"
                                  " the verification Secret") from None
        raise BadSignatureError(f"{what}: the SSH signature by key {fpr} does not match"
                                " the object (tampered?)") from None
    return _ssh_fingerprint(key)


def _verify_pgp(payload: bytes, signature: bytes, keys: TrustedKeys, what: str) -> str:
    try:
        sig = pysequoia.Sig.from_bytes(signature)
    except (RuntimeError, ValueError):
        raise BadSignatureError(f"{what}: the OpenPGP signature cannot be read") from None
    issuer = (sig.issuer_fingerprint or "")[-16:].upper() or (sig.issuer_key_id or "").upper()
    if not keys.pgp:
        raise UnknownKeyError(f"{what} is OpenPGP-signed by key {issuer or '(unnamed)'},"
                              " but the verification Secret holds no OpenPGP key")
    certs = list(keys.pgp)
    try:
        pysequoia.verify(bytes=payload, store=lambda _ids: certs, signature=sig)
    except (RuntimeError, ValueError):
        if issuer and issuer not in keys.pgp_key_ids:
            raise UnknownKeyError(f"{what} is OpenPGP-signed by key {issuer}, which is not"
                                  " in the verification Secret") from None
        raise BadSignatureError(f"{what}: the OpenPGP signature by key"
                                f" {issuer or '(unnamed)'} does not verify (tampered,"
                                " expired or revoked key, or a refused algorithm)") from None
    return issuer


def verify_signature(payload: bytes, signature: bytes | None, keys: TrustedKeys,
                     what: str) -> str:
    """Verify ``signature`` over ``payload``; the signer (PGP key id or SSH SHA256
    fingerprint). ``what`` names the object in messages (``commit 1a2b...``)."""
    if not signature:
        raise UnsignedObjectError(f"{what} is not signed")
    if len(signature) > _MAX_SIG:
        raise BadSignatureError(f"{what}: the signature is larger than {_MAX_SIG} bytes")
    sig = signature.lstrip()
    if sig.startswith(_SSH_MARKER):
        return _verify_ssh(payload, sig, keys, what)
    if sig.startswith(_PGP_MARKERS):
        return _verify_pgp(payload, sig, keys, what)
    raise BadSignatureError(f"{what} carries a signature of an unknown kind (X.509?)")


def verify_commit(commit: Commit, keys: TrustedKeys) -> str:
    """Verify a commit's ``gpgsig``; the signer."""
    what = f"commit {commit.id.decode()}"
    return verify_signature(commit.raw_without_sig(), commit.gpgsig, keys, what)


def verify_tag(tag: Tag, keys: TrustedKeys) -> str:
    """Verify an annotated tag's signature; the signer."""
    what = f"tag '{tag.name.decode(errors='replace')}'"
    return verify_signature(tag.raw_without_sig(), tag.signature, keys, what)


__all__ = ["PGP_SUFFIX", "SSH_SUFFIX", "TrustedKeys", "trusted_keys", "verify_commit",
           "verify_signature", "verify_tag"]
