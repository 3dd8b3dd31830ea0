"""Raw signature verification and signing with cosign-style keys.

cosign verifies with the hash that goes with the key (SHA-256 for P-256 and RSA, SHA-384 for
P-384, SHA-512 for P-521, pure Ed25519), but older cosign releases always used SHA-256. Both are
tried for ECDSA so signatures from either era verify. RSA signatures may be PKCS#1 v1.5 or PSS
(cosign's RSA verifier accepts either depending on how the key was imported).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from ocigitops.verifier.errors import SignatureVerificationError, UnsupportedAlgorithmError
from ocigitops.verifier.keys import PrivateKey, PublicKey, check_key_supported

# Signatures larger than this are never legitimate (RSA-4096 is 512 bytes, ECDSA P-521 DER
# about 139): refusing early avoids feeding attacker-sized blobs to the crypto backend.
MAX_SIGNATURE_BYTES = 4096


def default_hash(key: PublicKey | PrivateKey) -> hashes.HashAlgorithm:
    """The hash sigstore pairs with ``key`` (SHA-256, or SHA-384/512 for P-384/P-521)."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP384R1):
            return hashes.SHA384()
        if isinstance(key.curve, ec.SECP521R1):
            return hashes.SHA512()
    return hashes.SHA256()


def _candidate_hashes(key: PublicKey) -> list[hashes.HashAlgorithm]:
    first = default_hash(key)
    return [first] if isinstance(first, hashes.SHA256) else [first, hashes.SHA256()]


def verify_signature(key: PublicKey, signature: bytes, data: bytes) -> None:
    """Verify ``signature`` over ``data`` with ``key``.

    Raises :class:`SignatureVerificationError` when no accepted scheme verifies.
    """
    check_key_supported(key)
    if not signature:
        raise SignatureVerificationError("signature is empty")
    if len(signature) > MAX_SIGNATURE_BYTES:
        raise SignatureVerificationError(
            f"signature is {len(signature)} bytes, more than the {MAX_SIGNATURE_BYTES} cap"
        )
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
            return
        for h in _candidate_hashes(key):
            try:
                if isinstance(key, ec.EllipticCurvePublicKey):
                    key.verify(signature, data, ec.ECDSA(h))
                else:
                    _verify_rsa(key, signature, data, h)
                return
            except InvalidSignature:
                continue
    except InvalidSignature:
        pass
    except ValueError as exc:  # malformed DER and the like
        raise SignatureVerificationError(f"signature could not be parsed: {exc}") from exc
    raise SignatureVerificationError("signature does not verify with the given key")


def verify_prehashed(key: PublicKey, signature: bytes, digest: bytes,
                     hash_alg: hashes.HashAlgorithm) -> None:
    """Verify ``signature`` over an already computed ``digest`` (sigstore ``Hashed``)."""
    check_key_supported(key)
    if not signature or len(signature) > MAX_SIGNATURE_BYTES:
        raise SignatureVerificationError("signature is empty or larger than the cap")
    pre = utils.Prehashed(hash_alg)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(pre))
            return
        if isinstance(key, rsa.RSAPublicKey):
            try:
                key.verify(signature, digest, padding.PKCS1v15(), pre)
            except InvalidSignature:
                key.verify(signature, digest,
                           padding.PSS(padding.MGF1(hash_alg), padding.PSS.AUTO), pre)
            return
    except InvalidSignature as exc:
        raise SignatureVerificationError("signature does not verify with the given key") from exc
    except ValueError as exc:
        raise SignatureVerificationError(f"signature could not be parsed: {exc}") from exc
    # Pure Ed25519 signs the whole message, so a digest alone cannot be checked.
    raise UnsupportedAlgorithmError(
        "pure Ed25519 signatures cannot be verified from a digest alone: pass the artifact")


def _verify_rsa(key: rsa.RSAPublicKey, signature: bytes, data: bytes,
                h: hashes.HashAlgorithm) -> None:
    try:
        key.verify(signature, data, padding.PKCS1v15(), h)
    except InvalidSignature:
        key.verify(signature, data, padding.PSS(padding.MGF1(h), padding.PSS.AUTO), h)


def sign(key: PrivateKey, data: bytes) -> bytes:
    """Sign ``data`` as cosign does: ECDSA DER, RSA PKCS#1 v1.5, or pure Ed25519."""
    check_key_supported(key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    h = default_hash(key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(h))
    return key.sign(data, padding.PKCS1v15(), h)
