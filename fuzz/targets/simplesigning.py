"""cosign simple signing (``verifier/simplesigning.py``) and the Rekor bundle annotation of a
legacy ``.sig`` layer (``verifier/rekor.py``), the parts an attacker's registry supplies.

The first byte picks the entry point, the rest is its input:

0. ``parse_payload``: MalformedSignatureError only;
1. ``LegacySignature.from_layer`` with the input as payload and as every annotation:
   MalformedSignatureError only;
2. ``parse_rekor_bundle``: MalformedSignatureError only;
3. ``check_entry_body`` on a Rekor bundle whose entry body is the input:
   TransparencyLogError only (the documented failure of the body check).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from fuzz.targets import split_mode
from ocigitops.verifier.errors import MalformedSignatureError, TransparencyLogError
from ocigitops.verifier.rekor import RekorBundle, check_entry_body, parse_rekor_bundle
from ocigitops.verifier.simplesigning import (
    BUNDLE_ANNOTATION,
    CERTIFICATE_ANNOTATION,
    CHAIN_ANNOTATION,
    RFC3161_ANNOTATION,
    SIGNATURE_ANNOTATION,
    LegacySignature,
    parse_payload,
)

_KEY = ec.generate_private_key(ec.SECP256R1()).public_key()


def test_one_input(data: bytes) -> None:
    mode, rest = split_mode(data, 4)
    if mode == 0:
        try:
            payload = parse_payload(rest)
        except MalformedSignatureError:
            return
        assert isinstance(payload.manifest_digest, str)
        assert payload.optional is None or isinstance(payload.optional, dict)
    elif mode == 1:
        text = rest.decode("utf-8", "replace")
        annotations = {k: text for k in (SIGNATURE_ANNOTATION, CERTIFICATE_ANNOTATION,
                                         CHAIN_ANNOTATION, BUNDLE_ANNOTATION,
                                         RFC3161_ANNOTATION)}
        try:
            sig = LegacySignature.from_layer(rest, annotations)
        except MalformedSignatureError:
            return
        sig.annotations()
    elif mode == 2:
        for annotation in (rest, rest.decode("utf-8", "surrogateescape")):
            try:
                bundle = parse_rekor_bundle(annotation)
            except MalformedSignatureError:
                continue
            assert bundle.integrated_time >= 0 and bundle.log_index >= 0
    else:
        bundle = RekorBundle(signed_entry_timestamp=b"", body=rest, integrated_time=0,
                             log_index=0, log_id=b"")
        try:
            check_entry_body(bundle, signature=b"signature", payload=b"payload", key=_KEY)
        except TransparencyLogError:
            return
        raise AssertionError("a log entry body matched a signature it does not hold")
