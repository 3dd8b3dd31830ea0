"""Keyless (Fulcio certificate) legacy cosign ``.sig`` layers.

``cosign sign`` without a key (cosign v2) writes the leaf certificate, its chain and the Rekor
SET as layer annotations rather than a sigstore bundle. sigstore-python only verifies bundles,
so the steps of its verifier are repeated here for that shape: the SET against the trusted
root's Rekor keys (its integrated time is the signing time), the certificate chain to a Fulcio
CA valid at that time, the embedded SCT, the code-signing usage, the identity policy, the
signature over the payload, and the log entry body naming this certificate and signature.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
)
from cryptography.x509.verification import VerificationError as X509VerificationError
from sigstore.errors import Error as SigstoreError
from sigstore.models import TrustedRoot

from ocigitops.verifier.bundles import load_trusted_root
from ocigitops.verifier.errors import (
    CertificateError,
    DigestMismatchError,
    IdentityMismatchError,
    MalformedSignatureError,
    TransparencyLogError,
)
from ocigitops.verifier.identity import (
    IdentityPolicy,
    certificate_issuer,
    certificate_subjects,
    github_claims,
)
from ocigitops.verifier.keys import PublicKey, check_key_supported
from ocigitops.verifier.rekor import (
    RekorBundle,
    canonical_set_payload,
    check_entry_body,
    parse_rekor_bundle,
)
from ocigitops.verifier.results import SignatureVerification, Signer
from ocigitops.verifier.sigalg import verify_signature
from ocigitops.verifier.simplesigning import (
    SIMPLESIGNING_MEDIA_TYPE,
    LegacySignature,
    check_annotations,
    check_digest,
    parse_payload,
)


def _verify_set(rb: RekorBundle, root: TrustedRoot) -> None:
    # The keyring knows key IDs and validity (private sigstore API: sigstore_private).
    from ocigitops.verifier.sigstore_private import KeyID, KeyringPurpose

    try:
        root.rekor_keyring(KeyringPurpose.VERIFY).verify(
            key_id=KeyID(rb.log_id), signature=rb.signed_entry_timestamp,
            data=canonical_set_payload(rb))
    except SigstoreError as exc:
        raise TransparencyLogError(f"Rekor signed entry timestamp does not verify: {exc}") \
            from exc


def _chain_at(cert: x509.Certificate, intermediates: list[x509.Certificate],
              root: TrustedRoot, when: datetime) -> list[x509.Certificate]:
    # Fulcio leaves carry code-signing, not client-auth: relax only the EKU rule, as
    # sigstore-python does.
    ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None)
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None)
    verifier = (
        PolicyBuilder().store(Store(root.get_fulcio_certs())).time(when)
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        return list(verifier.verify(cert, intermediates).chain[1:])
    except (X509VerificationError, x509.UnsupportedGeneralNameType) as exc:
        raise CertificateError(f"certificate does not chain to a trusted Fulcio CA: {exc}") \
            from exc


def verify_certificate_signature(
    payload: bytes,
    signature: bytes,
    certificate_pem: bytes,
    chain_pem: bytes | None,
    rekor_bundle: str,
    identity: IdentityPolicy,
    trusted_root: TrustedRoot | None = None,
) -> tuple[x509.Certificate, datetime]:
    """Verify a Fulcio-certified signature over ``payload``; return the leaf and signing time."""
    from ocigitops.verifier.sigstore_private import KeyringPurpose, verify_sct

    root = trusted_root if trusted_root is not None else load_trusted_root()
    try:
        cert = x509.load_pem_x509_certificate(certificate_pem)
        intermediates = x509.load_pem_x509_certificates(chain_pem) if chain_pem else []
    except (ValueError, x509.InvalidVersion) as exc:
        raise MalformedSignatureError(f"certificate annotation is not PEM: {exc}") from exc
    try:
        identity.verify(cert)
    except SigstoreError as exc:
        raise IdentityMismatchError(f"signer identity rejected: {exc}") from exc
    rb = parse_rekor_bundle(rekor_bundle)
    _verify_set(rb, root)
    when = datetime.fromtimestamp(rb.integrated_time, tz=UTC)
    chain = _chain_at(cert, intermediates, root, when)
    try:
        verify_sct(cert, chain, root.ct_keyring(KeyringPurpose.VERIFY))
    except SigstoreError as exc:
        raise CertificateError(f"certificate SCT does not verify: {exc}") from exc
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    if not ku.digital_signature or ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        raise CertificateError("certificate is not for code signing")
    key = cert.public_key()
    check_key_supported(key)
    assert isinstance(key, PublicKey)
    verify_signature(key, signature, payload)
    check_entry_body(rb, signature=signature, payload=payload, certificate=cert)
    return cert, when


def verify_legacy_keyless_signature(
    sig: LegacySignature,
    identity: IdentityPolicy,
    digest: str,
    *,
    trusted_root: TrustedRoot | None = None,
    required_annotations: Mapping[str, Any] | None = None,
) -> SignatureVerification:
    """Verify a keyless ``.sig`` layer (certificate + Rekor bundle annotations) for ``digest``."""
    check_digest(digest)
    if sig.certificate_pem is None or sig.rekor_bundle is None:
        raise MalformedSignatureError(
            "keyless signature needs certificate and Rekor bundle annotations")
    cert, when = verify_certificate_signature(
        sig.payload, sig.signature, sig.certificate_pem, sig.chain_pem, sig.rekor_bundle,
        identity, trusted_root)
    payload = parse_payload(sig.payload)
    if payload.manifest_digest != digest:
        raise DigestMismatchError(f"signature is for {payload.manifest_digest}, not {digest}")
    check_annotations(payload, required_annotations or {})
    subjects = certificate_subjects(cert)
    return SignatureVerification(
        digest=digest,
        signer=Signer(kind="keyless", subject=subjects[0] if subjects else None,
                      issuer=certificate_issuer(cert), claims=github_claims(cert)),
        kind="cosign-legacy", payload_type=SIMPLESIGNING_MEDIA_TYPE, signed_at=when,
    )
