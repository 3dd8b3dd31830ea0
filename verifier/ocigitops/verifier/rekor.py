"""Rekor Signed Entry Timestamps (SETs) for legacy cosign ``.sig`` layers.

cosign v2 stores the Rekor answer in the ``dev.sigstore.cosign/bundle`` layer annotation:
``{"SignedEntryTimestamp": b64, "Payload": {"body": b64, "integratedTime": int, "logIndex": int,
"logID": hex}}``. The SET is the log's ECDSA signature over the RFC 8785 canonical JSON of
``Payload``. sigstore-python only verifies SETs inside its own bundle objects, so the legacy
annotation form is verified here, together with the check cosign makes that the log entry body
(a ``hashedrekord``) carries the very signature, key or certificate, and payload hash that the
layer holds: without it, a valid SET for some other entry would vouch for this signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import rfc8785
from cryptography import x509

from ocigitops import jsonsafe
from ocigitops.errors import MalformedDocumentError
from ocigitops.verifier.errors import MalformedSignatureError, TransparencyLogError
from ocigitops.verifier.keys import PublicKey, load_public_key, public_key_der, public_key_from_der
from ocigitops.verifier.sigalg import verify_signature

MAX_BUNDLE_BYTES = 1 << 20
_MAX_UNIX_TIME = 253402300799  # 9999-12-31T23:59:59Z, the last time datetime can hold


@dataclass(frozen=True)
class RekorKey:
    """One transparency log public key from a trusted root, with its validity window."""

    log_id: bytes
    key: PublicKey
    valid_from: datetime | None
    valid_until: datetime | None

    def valid_at(self, when: datetime) -> bool:
        """True when ``when`` lies in the key's validity window (end inclusive)."""
        if self.valid_from is not None and when < self.valid_from:
            return False
        return not (self.valid_until is not None and when > self.valid_until)


@dataclass(frozen=True)
class RekorBundle:
    """The parsed ``dev.sigstore.cosign/bundle`` annotation."""

    signed_entry_timestamp: bytes
    body: bytes
    integrated_time: int
    log_index: int
    log_id: bytes


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedSignatureError("trusted root time is not a string")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise MalformedSignatureError(f"trusted root time {value!r} is not RFC 3339") from exc


def rekor_keys_from_trusted_root(trusted_root: Mapping[str, Any] | bytes | str) -> list[RekorKey]:
    """Read the ``tlogs`` of a sigstore ``trusted_root.json`` document."""
    doc: Any = trusted_root
    if isinstance(trusted_root, bytes | str):
        try:
            doc = jsonsafe.loads(trusted_root, "trusted root")
        except MalformedDocumentError as exc:
            raise MalformedSignatureError(str(exc)) from exc
    if not isinstance(doc, Mapping):
        raise MalformedSignatureError("trusted root is not a JSON object")
    out: list[RekorKey] = []
    for tlog in doc.get("tlogs") or []:
        try:
            pk = tlog["publicKey"]
            der = base64.b64decode(pk["rawBytes"], validate=True)
            valid = pk.get("validFor") or {}
            if not isinstance(valid, Mapping):
                raise TypeError("validFor is not an object")
            log_id = base64.b64decode(tlog["logId"]["keyId"], validate=True)
        except (KeyError, TypeError, AttributeError, binascii.Error, ValueError) as exc:
            raise MalformedSignatureError(f"trusted root tlog entry is malformed: {exc}") from exc
        try:
            key = public_key_from_der(der)
        except Exception:  # an Ed25519 rekor-tiles key etc: unusable for SETs, skip it
            continue
        out.append(RekorKey(log_id, key, _parse_time(valid.get("start")),
                            _parse_time(valid.get("end"))))
    return out


def parse_rekor_bundle(annotation: str | bytes) -> RekorBundle:
    """Parse the ``dev.sigstore.cosign/bundle`` annotation value."""
    if len(annotation) > MAX_BUNDLE_BYTES:
        raise MalformedSignatureError("Rekor bundle annotation is larger than 1 MiB")
    try:
        doc = jsonsafe.loads_object(annotation, "Rekor bundle annotation")
        payload = doc["Payload"]
        set_ = base64.b64decode(doc["SignedEntryTimestamp"], validate=True)
        body = base64.b64decode(payload["body"], validate=True)
        integrated = payload["integratedTime"]
        index = payload["logIndex"]
        log_id = bytes.fromhex(payload["logID"])
    except MalformedDocumentError as exc:
        raise MalformedSignatureError(str(exc)) from exc
    except (KeyError, TypeError, binascii.Error, ValueError) as exc:
        raise MalformedSignatureError(f"Rekor bundle annotation is malformed: {exc}") from exc
    for name, v in (("integratedTime", integrated), ("logIndex", index)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise MalformedSignatureError(f"Rekor bundle {name} is not a non-negative integer")
    if integrated > _MAX_UNIX_TIME:
        raise MalformedSignatureError("Rekor bundle integratedTime is after the year 9999")
    return RekorBundle(set_, body, integrated, index, log_id)


def canonical_set_payload(bundle: RekorBundle) -> bytes:
    """The bytes the SET signs: RFC 8785 JSON of body, integratedTime, logID, logIndex."""
    return rfc8785.dumps({
        "body": base64.b64encode(bundle.body).decode(),
        "integratedTime": bundle.integrated_time,
        "logID": bundle.log_id.hex(),
        "logIndex": bundle.log_index,
    })


def verify_set(bundle: RekorBundle, keys: list[RekorKey]) -> RekorKey:
    """Verify the SET with the log key named by ``logID``; return that key.

    The integrated time must fall inside the key's validity window.
    """
    when = datetime.fromtimestamp(bundle.integrated_time, tz=UTC)
    candidates = [k for k in keys if k.log_id == bundle.log_id]
    if not candidates:
        raise TransparencyLogError(
            f"no trusted Rekor key has log ID {bundle.log_id.hex()}"
        )
    data = canonical_set_payload(bundle)
    for k in candidates:
        if not k.valid_at(when):
            continue
        try:
            verify_signature(k.key, bundle.signed_entry_timestamp, data)
        except Exception:
            continue
        return k
    raise TransparencyLogError("the Rekor signed entry timestamp does not verify")


def check_entry_body(bundle: RekorBundle, *, signature: bytes, payload: bytes,
                     key: PublicKey | None = None,
                     certificate: x509.Certificate | None = None) -> None:
    """Check that the logged ``hashedrekord`` is about this signature.

    The entry must hold the same signature bytes, the sha256 of ``payload``, and the same
    public key (key-based) or certificate (keyless).
    """
    if (key is None) == (certificate is None):
        raise ValueError("give exactly one of key or certificate")
    try:
        entry = jsonsafe.loads_object(bundle.body, "Rekor entry body")
        kind = entry["kind"]
        spec = entry["spec"]
    except MalformedDocumentError as exc:
        raise TransparencyLogError(str(exc)) from exc
    except (KeyError, TypeError) as exc:
        raise TransparencyLogError(f"Rekor entry body is not a log entry: {exc}") from exc
    if kind != "hashedrekord":
        raise TransparencyLogError(f"Rekor entry kind {kind!r} is not supported (hashedrekord)")
    try:
        h = spec["data"]["hash"]
        logged_sig = base64.b64decode(spec["signature"]["content"], validate=True)
        logged_key = base64.b64decode(spec["signature"]["publicKey"]["content"], validate=True)
    except (KeyError, TypeError, binascii.Error, ValueError) as exc:
        raise TransparencyLogError(f"Rekor hashedrekord entry is malformed: {exc}") from exc
    if not isinstance(h, dict):
        raise TransparencyLogError("Rekor hashedrekord entry hash is not an object")
    if h.get("algorithm") != "sha256" or h.get("value") != hashlib.sha256(payload).hexdigest():
        raise TransparencyLogError("Rekor entry does not record the sha256 of this payload")
    if logged_sig != signature:
        raise TransparencyLogError("Rekor entry records a different signature")
    if certificate is not None:
        try:
            logged_cert = x509.load_pem_x509_certificate(logged_key)
        except (ValueError, x509.InvalidVersion) as exc:
            raise TransparencyLogError("Rekor entry does not hold a certificate") from exc
        if logged_cert != certificate:
            raise TransparencyLogError("Rekor entry records a different certificate")
        return
    assert key is not None
    try:
        logged_pub = load_public_key(logged_key)
    except Exception as exc:
        raise TransparencyLogError("Rekor entry does not hold a public key") from exc
    if public_key_der(logged_pub) != public_key_der(key):
        raise TransparencyLogError("Rekor entry records a different public key")
