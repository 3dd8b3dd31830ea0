"""Sigstore bundles, DSSE in-toto statements and Rekor entry bodies (``verifier/bundles.py``).

The first byte picks the entry point, the rest is its input; each may raise only the
verifier's typed errors (``VerifierError`` subclasses), as the module documents:

0. ``bundle_certificate``: the bundle's signing certificate (MalformedSignatureError);
1. ``verify_bundle_with_key`` with a key that signed nothing: parsing, the DSSE envelope
   and message signature paths, the log entry; never a pass;
2. ``verify_bundle_keyless`` against the public-good root: parsing up to the identity and
   signature checks; never a pass;
3. ``_check_statement``: the in-toto statement inside a DSSE envelope;
4. ``_check_key_entry_body``: a Rekor entry body of each kind the key path accepts.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric import ec
from sigstore.hashes import Hashed
from sigstore_models.common.v1 import HashAlgorithm

from fuzz.targets import split_mode
from ocigitops.verifier.bundles import (
    INTOTO_PAYLOAD_TYPE,
    _check_key_entry_body,
    _check_statement,
    bundle_certificate,
    load_trusted_root,
    verify_bundle_keyless,
    verify_bundle_with_key,
)
from ocigitops.verifier.errors import VerifierError
from ocigitops.verifier.identity import IdentityPolicy

_KEY = ec.generate_private_key(ec.SECP256R1()).public_key()
_ARTIFACT_SHA256 = hashlib.sha256(b"fuzz").digest()
_DIGEST = "sha256:" + _ARTIFACT_SHA256.hex()
_WANT = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=_ARTIFACT_SHA256)
_ROOT = load_trusted_root()
_POLICY = IdentityPolicy(issuer="https://issuer.invalid", subject="fuzz@example.invalid")
_ENTRY_KINDS = (("hashedrekord", "0.0.1"), ("hashedrekord", "0.0.2"), ("dsse", "0.0.1"),
                ("intoto", "0.0.2"))


def test_one_input(data: bytes) -> None:
    mode, rest = split_mode(data, 5)
    try:
        if mode == 0:
            bundle_certificate(rest)
        elif mode == 1:
            verify_bundle_with_key(rest, _KEY, digest=_DIGEST, trusted_root=_ROOT,
                                   require_tlog=False)
            raise AssertionError("a bundle verified with a key that signed nothing")
        elif mode == 2:
            verify_bundle_keyless(rest, _POLICY, digest=_DIGEST, trusted_root=_ROOT)
            raise AssertionError("a keyless bundle verified for an identity never issued")
        elif mode == 3:
            _check_statement(INTOTO_PAYLOAD_TYPE, rest, _WANT)
        else:
            kind, body = split_mode(rest, len(_ENTRY_KINDS))
            _check_key_entry_body(body, *_ENTRY_KINDS[kind], key=_KEY, signature=b"sig",
                                  data_digest=_ARTIFACT_SHA256, dsse_payload=b"payload")
            raise AssertionError("a log entry body matched a signature it does not hold")
    except VerifierError:
        pass
