"""Typed errors of the verifier.

Every verification failure is one of these, so callers (the CLI, the controller) can tell
"this signature is bad" from "the input could not even be read" without string matching.
"""

from __future__ import annotations

from ocigitops.errors import OcigitopsError, UsageError


class VerifierError(OcigitopsError):
    """Base class of every error raised by :mod:`verifier`."""


class KeyLoadError(VerifierError):
    """A key could not be loaded (malformed PEM, wrong type)."""


class MalformedKeyError(KeyLoadError):
    """The key material is not valid PEM/DER or not the expected PEM block type."""


class UnsupportedKeyError(KeyLoadError):
    """The key parsed but its algorithm, curve or size is not accepted."""


class WrongPasswordError(KeyLoadError):
    """An encrypted private key could not be decrypted with the given password."""


class SignatureVerificationError(VerifierError):
    """A signature, envelope or bundle failed to verify."""


class MalformedSignatureError(SignatureVerificationError):
    """The signature material could not be parsed (bad base64, JSON, CBOR, truncated)."""


class OversizedInputError(MalformedSignatureError):
    """A signature blob or envelope is larger than the configured cap."""


class UnsupportedAlgorithmError(SignatureVerificationError):
    """The signature names an algorithm we do not accept."""


class DigestMismatchError(SignatureVerificationError):
    """The signed payload names a different artifact digest than the one being verified."""


class TransparencyLogError(SignatureVerificationError):
    """A Rekor entry (SET, inclusion proof, body) did not verify or does not match."""


class CertificateError(SignatureVerificationError):
    """A certificate chain did not validate, is expired, or has the wrong usage."""


class IdentityMismatchError(SignatureVerificationError):
    """The signer identity does not satisfy the policy."""


class TimestampError(SignatureVerificationError):
    """An RFC 3161 timestamp countersignature did not verify."""


class PolicyError(UsageError, VerifierError):
    """A policy document (ours, Flux's, or a notation trust policy) is invalid."""


class TrustStoreError(UsageError, VerifierError):
    """A notation trust store is missing or holds unreadable certificates."""


# -- attestations (in-toto statements in sigstore bundles) ----------------------------------

class MalformedStatementError(MalformedSignatureError):
    """A DSSE payload is not a well-formed in-toto statement (type, subjects, predicate)."""


class PayloadTypeError(MalformedSignatureError):
    """A DSSE envelope's payload type is not ``application/vnd.in-toto+json``."""


class OversizedPredicateError(OversizedInputError):
    """An attestation's predicate is larger than the cap."""


class AttestationTooOldError(SignatureVerificationError):
    """An attestation's signed time is older than the policy's ``maxAge`` (or in the future)."""


class ConditionFailedError(SignatureVerificationError):
    """A CEL condition of an attestation requirement was false, not a bool, or errored."""


class ConditionCompileError(PolicyError):
    """A CEL condition of a policy does not compile (the message gives its position)."""
