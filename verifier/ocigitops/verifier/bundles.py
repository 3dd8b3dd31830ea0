"""Sigstore bundle verification: keyless (via sigstore-python) and key-based (here).

Keyless bundles are handed to ``sigstore.verify.Verifier`` with an offline ``TrustedRoot`` and
our :class:`~ocigitops.verifier.identity.IdentityPolicy`. sigstore-python does not verify
bundles signed
with a managed key (``verificationMaterial.publicKey``), which is what ``cosign sign --key``
writes since cosign v3, so that path is implemented here: the signature (message or DSSE over
PAE), the in-toto subject, the Rekor entry (inclusion proof, checkpoint and SET, through
sigstore-python's log entry model so the Merkle and note code is the audited one), the entry
body against the signature and key, and RFC 3161 timestamps (rfc3161-client, as sigstore does).

Deliberate differences from sigstore-python 4.5: a trusted root's timestamp authority validity
end is inclusive (as the sigstore-conformance suite and sigstore-go say); DSSE results are
checked against the in-toto subject digest rather than returned unchecked; and Rekor v1
``intoto`` 0.0.2 entries (older cosign attestations) are accepted with their own body check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sigstore
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from rfc3161_client import TimeStampResponse, VerifierBuilder, decode_timestamp_response
from rfc3161_client import VerificationError as Rfc3161VerificationError
from sigstore.errors import Error as SigstoreError
from sigstore.errors import VerificationError as SigstoreVerificationError
from sigstore.hashes import Hashed
from sigstore.models import Bundle, TransparencyLogEntry, TrustedRoot
from sigstore.verify import Verifier
from sigstore_models.bundle.v1 import Bundle as _RawBundle
from sigstore_models.common.v1 import HashAlgorithm
from sigstore_models.trustroot import v1 as trustroot_v1

from ocigitops import jsonsafe
from ocigitops.errors import MalformedDocumentError
from ocigitops.verifier.errors import (
    CertificateError,
    DigestMismatchError,
    IdentityMismatchError,
    MalformedSignatureError,
    OversizedInputError,
    SignatureVerificationError,
    TimestampError,
    TransparencyLogError,
)
from ocigitops.verifier.identity import (
    IdentityPolicy,
    certificate_issuer,
    certificate_subjects,
    github_claims,
)
from ocigitops.verifier.keys import PublicKey, key_hint, load_public_key, public_key_der
from ocigitops.verifier.results import SignatureVerification, Signer
from ocigitops.verifier.sigalg import verify_prehashed, verify_signature
from ocigitops.verifier.simplesigning import check_digest

MAX_BUNDLE_BYTES = 1 << 20
MAX_TIMESTAMPS = 32
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
#: The predicate type of the in-toto statement ``cosign sign`` (v3) signs. A bundle with
#: another predicate (SLSA provenance, a vulnerability scan...) is an attestation: it
#: says something about the artifact, it does not approve it, and ``cosign verify`` does
#: not take it as a signature (attestations are ``cosign verify-attestation``'s job).
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
BUNDLE_MEDIA_TYPES = frozenset({
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle.v0.3+json",
})

# sigstore-python ships the public-good trusted root it was released with; reading it directly
# keeps verification offline (no TUF refresh).
PUBLIC_GOOD_TRUSTED_ROOT = (
    Path(sigstore.__file__).parent / "_store" / "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev"
    / "trusted_root.json"
)


def _one_line(exc: BaseException) -> str:
    """An exception message on one line, bounded (pydantic writes several lines)."""
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else (text or type(exc).__name__)


def _strict_json(data: bytes | str, what: str) -> Any:
    """Strict JSON: duplicate keys (also equal ignoring case, as Go matches struct fields)
    and deep nesting are a :class:`MalformedSignatureError`, not a parser differential."""
    try:
        return jsonsafe.loads(data, what)
    except MalformedDocumentError as exc:
        raise MalformedSignatureError(str(exc)) from exc


def _read_limited(data: bytes | str, what: str, cap: int = MAX_BUNDLE_BYTES) -> bytes:
    # Attestation bundles (a predicate inside) get a larger cap than signatures: the
    # caller passes it (ocigitops.verifier.intoto.MAX_ATTESTATION_BUNDLE_BYTES).
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > cap:
        shown = f"{cap >> 20} MiB" if cap % (1 << 20) == 0 else f"{cap}-byte"
        raise OversizedInputError(f"{what} is {len(raw)} bytes, over the {shown} cap")
    return raw


def _with_tlog_entries(raw: bytes) -> bytes:
    """cosign v3 omits ``verificationMaterial.tlogEntries`` when it is empty (signing with
    ``--tlog-upload=false``); the protobuf models require the field. Add it as empty.

    The bundle is read strictly first: the protobuf models' parser keeps the last of
    duplicate keys, Go's protojson refuses them, and so do we.
    """
    doc = _strict_json(raw, "bundle")
    vm = doc.get("verificationMaterial") if isinstance(doc, dict) else None
    if isinstance(vm, dict) and "tlogEntries" not in vm:
        vm["tlogEntries"] = []
        return json.dumps(doc).encode()
    return raw


def _inclusive_tsa_end(doc: dict[str, Any]) -> None:
    # sigstore-python compares ``gen_time < end``; the spec and conformance suite want the
    # end instant included. Datetimes have microsecond resolution, so +1 us is exactly "<=".
    for tsa in doc.get("timestampAuthorities") or []:
        vf = tsa.get("validFor") if isinstance(tsa, dict) else None
        if not isinstance(vf, dict):
            continue
        end = vf.get("end")
        if isinstance(end, str):
            try:
                t = datetime.fromisoformat(end.replace("Z", "+00:00"))
            except ValueError:
                continue
            vf["end"] = (t + timedelta(microseconds=1)).isoformat().replace("+00:00", "Z")


def load_trusted_root(source: bytes | str | Path | None = None) -> TrustedRoot:
    """Load a sigstore ``trusted_root.json`` (content as bytes/str, or a path).

    ``None`` gives the Sigstore public-good production root shipped with sigstore-python.
    """
    if source is None:
        source = PUBLIC_GOOD_TRUSTED_ROOT
    raw = source.read_bytes() if isinstance(source, Path) else (
        source.encode() if isinstance(source, str) else source)
    try:
        doc = jsonsafe.loads_object(raw, "trusted root")
        _inclusive_tsa_end(doc)
        return TrustedRoot(trustroot_v1.TrustedRoot.from_json(json.dumps(doc)))
    except (ValueError, SigstoreError, MalformedDocumentError) as exc:
        raise MalformedSignatureError(f"trusted root is invalid: {_one_line(exc)}") from exc


def _hashed(artifact: bytes | None, digest: str | None) -> Hashed:
    if (artifact is None) == (digest is None):
        raise ValueError("give exactly one of artifact or digest")
    if artifact is not None:
        return Hashed(algorithm=HashAlgorithm.SHA2_256, digest=hashlib.sha256(artifact).digest())
    assert digest is not None
    check_digest(digest)
    alg, hexd = digest.split(":", 1)
    if alg != "sha256":
        raise DigestMismatchError(f"only sha256 artifact digests are supported, got {alg}")
    return Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(hexd))


def _digest_str(h: Hashed) -> str:
    return "sha256:" + h.digest.hex()


def _check_statement(payload_type: str, payload: bytes, want: Hashed,
                     predicate_type: str | None = None) -> dict[str, Any]:
    """The DSSE payload must be an in-toto statement with ``want`` among its subjects.

    ``predicate_type``, when given, must be the statement's ``predicateType``: a signature
    check passes :data:`COSIGN_SIGN_PREDICATE`, so an attestation signed by the same key
    (SLSA provenance, a scan) does not count as a signature.
    """
    if payload_type != INTOTO_PAYLOAD_TYPE:
        raise MalformedSignatureError(
            f"DSSE payload type {payload_type!r} is not {INTOTO_PAYLOAD_TYPE}")
    stmt = _strict_json(payload, "in-toto statement")
    subjects = stmt.get("subject") if isinstance(stmt, dict) else None
    if not isinstance(subjects, list):
        raise MalformedSignatureError("DSSE payload is not an in-toto statement with subjects")
    got = stmt.get("predicateType")
    if predicate_type is not None and got != predicate_type:
        shown = repr(got) if len(repr(got)) <= 120 else repr(got)[:120] + "..."
        raise SignatureVerificationError(
            f"bundle is an attestation (predicate type {shown}), not a signature: only "
            f"{predicate_type} approves the artifact, as in cosign verify")
    hexd = want.digest.hex()
    for s in subjects:
        d = s.get("digest") if isinstance(s, dict) else None
        if isinstance(d, dict) and d.get("sha256") == hexd:
            return dict(stmt)
    raise DigestMismatchError(f"in-toto statement has no subject with digest sha256:{hexd}")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


# -- keyless -------------------------------------------------------------------------------

def verify_bundle_keyless(
    bundle: bytes | str,
    identity: IdentityPolicy,
    *,
    artifact: bytes | None = None,
    digest: str | None = None,
    trusted_root: TrustedRoot | None = None,
    predicate_type: str | None = None,
    max_bytes: int = MAX_BUNDLE_BYTES,
) -> SignatureVerification:
    """Verify a Fulcio-certificate bundle for ``artifact`` bytes or its ``sha256:`` digest.

    The certificate must chain to ``trusted_root`` (default: public good), the identity must
    satisfy ``identity``, and the Rekor entry and timestamps must verify. For DSSE bundles the
    in-toto statement must list the digest as a subject and, when ``predicate_type`` is
    given (:data:`COSIGN_SIGN_PREDICATE` to verify a signature), have that predicate type.
    """
    want = _hashed(artifact, digest)
    raw = _read_limited(bundle, "bundle", max_bytes)
    _strict_json(raw, "bundle")
    try:
        b = Bundle.from_json(raw)
    except Exception as exc:  # sigstore and cryptography raise many types on garbage
        raise MalformedSignatureError(f"bundle is invalid: {_one_line(exc)}") from exc
    root = trusted_root if trusted_root is not None else load_trusted_root()
    cert = b.signing_certificate
    try:
        identity.verify(cert)
    except (SigstoreError, ValueError, x509.DuplicateExtension) as exc:  # or unreadable
        raise IdentityMismatchError(f"signer identity rejected: {exc}") from exc
    try:
        statement: dict[str, Any] | None = None
        payload_type: str | None = None
        kind = b.log_entry._inner.kind_version
        if b._dsse_envelope is not None and (kind.kind, kind.version) == ("intoto", "0.0.2"):
            payload_type, payload = _IntotoVerifier(trusted_root=root).verify_intoto(b, identity)
            statement = _check_statement(payload_type, payload, want, predicate_type)
        elif b._dsse_envelope is not None:
            verifier = Verifier(trusted_root=root)
            payload_type, payload = verifier.verify_dsse(b, identity)
            statement = _check_statement(payload_type, payload, want, predicate_type)
        else:
            Verifier(trusted_root=root).verify_artifact(
                artifact if artifact is not None else want, b, identity)
    except SigstoreError as exc:
        msg = str(exc)
        cls = CertificateError if "certificate" in msg.lower() else SignatureVerificationError
        raise cls(f"bundle did not verify: {msg}") from exc
    subjects = certificate_subjects(cert)
    signer = Signer(kind="keyless", subject=subjects[0] if subjects else None,
                    issuer=certificate_issuer(cert), claims=github_claims(cert))
    return SignatureVerification(
        digest=_digest_str(want), signer=signer, kind="sigstore-bundle",
        payload_type=payload_type, statement=statement,
        predicate_type=statement.get("predicateType") if statement else None,
        signed_at=_integrated_time(b),
    )


def _integrated_time(b: Bundle) -> datetime | None:
    t = b.log_entry._inner.integrated_time
    return datetime.fromtimestamp(t, tz=UTC) if t else None


class _IntotoVerifier(Verifier):
    """sigstore's Verifier extended to Rekor v1 ``intoto`` 0.0.2 entries.

    sigstore-python 4.5 handles ``dsse`` and ``hashedrekord`` entries only, while cosign
    attestations logged before Rekor's ``dsse`` type exist as ``intoto`` entries. Time
    establishment and the entry body check are redone here for that kind; the certificate,
    SCT, identity, inclusion proof and SET steps stay sigstore's own.
    """

    def _establish_time(self, bundle: Bundle) -> list[Any]:
        from ocigitops.verifier.sigstore_private import (
            TimestampSource,
            TimestampVerificationResult,
        )

        times: list[Any] = []
        if bundle.verification_material.timestamp_verification_data:
            if not self._trusted_root.get_timestamp_authorities():
                raise SigstoreVerificationError(
                    "bundle has signed timestamps but the trusted root has no TSA")
            times.extend(self._verify_timestamp_authority(bundle))
        inner = bundle.log_entry._inner
        if inner.integrated_time and inner.inclusion_promise:
            times.append(TimestampVerificationResult(
                source=TimestampSource.TRANSPARENCY_SERVICE,
                time=datetime.fromtimestamp(inner.integrated_time, tz=UTC)))
        return times

    def verify_intoto(self, bundle: Bundle, policy: IdentityPolicy) -> tuple[str, bytes]:
        """Verify a DSSE bundle whose log entry is ``intoto`` 0.0.2."""
        from sigstore import dsse as sigstore_dsse

        self._verify_common_signing_cert(bundle, policy)
        envelope = bundle._dsse_envelope
        if envelope is None:
            raise SigstoreVerificationError("intoto log entry without a DSSE envelope")
        key = bundle.signing_certificate.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise SigstoreVerificationError("only ECDSA Fulcio certificates are supported")
        sigstore_dsse._verify(key, envelope)
        _check_intoto_body(bundle)
        return envelope._inner.payload_type, envelope._inner.payload


def _unwrap_b64(value: str) -> bytes:
    """Decode the doubly base64-encoded signature of an intoto entry (b"" if it is not)."""
    try:
        return base64.b64decode(base64.b64decode(value, validate=True), validate=True)
    except (binascii.Error, ValueError):
        return b""


def _check_intoto_body(bundle: Bundle) -> None:
    """The ``intoto`` 0.0.2 entry must carry this payload's hash, signature and certificate.

    In that entry type the envelope's payload and signatures are base64-encoded once more.
    """
    envelope = bundle._dsse_envelope
    assert envelope is not None
    try:
        body = jsonsafe.loads(bundle.log_entry._inner.canonicalized_body, "intoto log entry")
        content = body["spec"]["content"]
        ph = content["payloadHash"]
        logged = content["envelope"]["signatures"]
        want_sigs = sorted(s.sig for s in envelope._inner.signatures)
        got_sigs = sorted(_unwrap_b64(s["sig"]) for s in logged)
        certs = {x509.load_pem_x509_certificate(base64.b64decode(s["publicKey"]))
                 for s in logged}
    except (ValueError, KeyError, TypeError, binascii.Error, MalformedDocumentError,
            x509.InvalidVersion) as exc:
        raise SigstoreVerificationError(f"intoto log entry is malformed: {_one_line(exc)}") \
            from exc
    if not isinstance(ph, dict):
        raise SigstoreVerificationError("intoto log entry payload hash is not an object")
    if ph.get("algorithm") != "sha256" or \
            ph.get("value") != hashlib.sha256(envelope._inner.payload).hexdigest():
        raise SigstoreVerificationError("log entry payload hash does not match bundle")
    if got_sigs != want_sigs:
        raise SigstoreVerificationError("log entry signatures do not match bundle")
    if certs != {bundle.signing_certificate}:
        raise SigstoreVerificationError("log entry certificate does not match bundle")


# -- key-based -----------------------------------------------------------------------------

def _verify_tsa(responses: list[TimeStampResponse], signature: bytes,
                root: TrustedRoot) -> list[datetime]:
    if len(responses) > MAX_TIMESTAMPS:
        raise TimestampError(f"bundle has more than {MAX_TIMESTAMPS} timestamps")
    times: list[datetime] = []
    for tsr in responses:
        for ca in root.get_timestamp_authorities():
            certs = ca.certificates(allow_expired=True)
            if len(certs) < 2:
                continue
            builder = VerifierBuilder().tsa_certificate(certs[0]).add_root_certificate(certs[-1])
            for c in certs[1:-1]:
                builder = builder.add_intermediate_certificate(c)
            try:
                builder.build().verify_message(tsr, signature)
            except (Rfc3161VerificationError, ValueError):
                continue
            gen = tsr.tst_info.gen_time
            end = ca.validity_period_end
            if ca.validity_period_start <= gen and (end is None or gen < end):
                times.append(gen)
                break
    return times


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise TransparencyLogError(f"log entry {what} is missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TransparencyLogError(f"log entry {what} is not base64") from exc


def _same_key(logged: bytes, key: PublicKey, *, pem: bool) -> bool:
    try:
        other = load_public_key(logged) if pem else None
        der = public_key_der(other) if other is not None else logged
    except Exception:
        return False
    return der == public_key_der(key)


def _check_key_entry_body(body: bytes, kind: str, version: str, *, key: PublicKey,
                          signature: bytes, data_digest: bytes,
                          dsse_payload: bytes | None) -> None:
    """The logged entry must be about this signature, key and content."""
    try:
        entry = jsonsafe.loads_object(body, "log entry body")
        spec = entry["spec"]
    except (MalformedDocumentError, KeyError, TypeError) as exc:
        raise TransparencyLogError(f"log entry body is malformed: {_one_line(exc)}") from exc
    if entry.get("kind") != kind or entry.get("apiVersion") != version:
        raise TransparencyLogError("log entry body kind/version differ from the bundle's")
    try:
        if kind == "hashedrekord" and version == "0.0.1":
            h = spec["data"]["hash"]
            ok = (h["algorithm"] == "sha256" and h["value"] == data_digest.hex()
                  and _b64(spec["signature"]["content"], "signature") == signature
                  and _same_key(_b64(spec["signature"]["publicKey"]["content"], "key"), key,
                                pem=True))
        elif kind == "hashedrekord" and version == "0.0.2":
            v2 = spec["hashedRekordV002"]
            sig = v2["signature"]
            ok = (v2["data"]["algorithm"] == "SHA2_256"
                  and _b64(v2["data"]["digest"], "digest") == data_digest
                  and _b64(sig["content"], "signature") == signature
                  and _same_key(_b64(sig["verifier"]["publicKey"]["rawBytes"], "key"), key,
                                pem=False))
        elif kind == "dsse" and version == "0.0.1" and dsse_payload is not None:
            ph = spec["payloadHash"]
            sigs = spec["signatures"]
            ok = (ph["algorithm"] == "sha256"
                  and ph["value"] == hashlib.sha256(dsse_payload).hexdigest()
                  and len(sigs) == 1
                  and _b64(sigs[0]["signature"], "signature") == signature
                  and _same_key(_b64(sigs[0]["verifier"], "key"), key, pem=True))
        else:
            raise TransparencyLogError(f"log entry kind {kind}/{version} is not supported")
    except (KeyError, TypeError, AttributeError) as exc:
        raise TransparencyLogError(f"log entry body is malformed: {_one_line(exc)}") from exc
    if not ok:
        raise TransparencyLogError("transparency log entry is inconsistent with the bundle")


def verify_bundle_with_key(
    bundle: bytes | str,
    key: PublicKey,
    *,
    artifact: bytes | None = None,
    digest: str | None = None,
    trusted_root: TrustedRoot | None = None,
    require_tlog: bool = True,
    predicate_type: str | None = None,
    max_bytes: int = MAX_BUNDLE_BYTES,
) -> SignatureVerification:
    """Verify a bundle signed with a managed key (``verificationMaterial.publicKey``).

    ``require_tlog=False`` is cosign's ``--insecure-ignore-tlog``: the log entry is then
    checked only if present. ``predicate_type`` (:data:`COSIGN_SIGN_PREDICATE` to verify a
    signature) is required of a DSSE bundle's statement when given. Raises a
    :class:`SignatureVerificationError` subclass.
    """
    want = _hashed(artifact, digest)
    raw = _with_tlog_entries(_read_limited(bundle, "bundle", max_bytes))
    try:
        b = _RawBundle.from_json(raw)
    except ValueError as exc:
        raise MalformedSignatureError(f"bundle is invalid: {_one_line(exc)}") from exc
    if b.media_type not in BUNDLE_MEDIA_TYPES:
        raise MalformedSignatureError(f"unsupported bundle media type {b.media_type!r}")
    vm = b.verification_material
    if vm.public_key is None:
        raise SignatureVerificationError(
            "bundle carries a certificate, not a public key hint: verify it as keyless"
        )
    # The hint only names a key; trust comes from the signature check below.
    hint = vm.public_key.hint

    # (1) signature over the content
    dsse_payload: bytes | None = None
    statement: dict[str, Any] | None = None
    payload_type: str | None = None
    if b.dsse_envelope is not None:
        env = b.dsse_envelope
        if len(env.signatures) != 1:
            raise SignatureVerificationError("DSSE envelope must hold exactly one signature")
        signature = env.signatures[0].sig
        verify_signature(key, signature, pae(env.payload_type, env.payload))
        payload_type, dsse_payload = env.payload_type, env.payload
        statement = _check_statement(env.payload_type, env.payload, want, predicate_type)
        logged_digest = hashlib.sha256(pae(env.payload_type, env.payload)).digest()
    elif b.message_signature is not None:
        ms = b.message_signature
        signature = ms.signature
        if ms.message_digest is not None and ms.message_digest.digest != want.digest:
            raise DigestMismatchError("bundle message digest differs from the artifact digest")
        if artifact is not None:
            verify_signature(key, signature, artifact)
        else:
            verify_prehashed(key, signature, want.digest, hashes.SHA256())
        logged_digest = want.digest
    else:
        raise MalformedSignatureError("bundle has neither a message signature nor a DSSE envelope")

    # (2) transparency log and time
    times: list[datetime] = []
    entries = vm.tlog_entries or []
    if len(entries) > 1:
        raise TransparencyLogError("bundle must hold at most one transparency log entry")
    root = trusted_root if trusted_root is not None else load_trusted_root()
    if entries:
        from ocigitops.verifier.sigstore_private import KeyringPurpose

        inner = entries[0]
        try:
            entry = TransparencyLogEntry(inner)
            entry._verify(root.rekor_keyring(KeyringPurpose.VERIFY))
        except (SigstoreError, ValueError) as exc:
            raise TransparencyLogError(f"transparency log entry did not verify: {exc}") from exc
        _check_key_entry_body(
            inner.canonicalized_body, inner.kind_version.kind, inner.kind_version.version,
            key=key, signature=signature, data_digest=logged_digest, dsse_payload=dsse_payload,
        )
        if inner.integrated_time and inner.inclusion_promise:
            times.append(datetime.fromtimestamp(inner.integrated_time, tz=UTC))
    elif require_tlog:
        raise TransparencyLogError("bundle has no transparency log entry")
    tvd = vm.timestamp_verification_data
    if tvd is not None and tvd.rfc3161_timestamps:
        try:
            responses = [decode_timestamp_response(t.signed_timestamp)
                         for t in tvd.rfc3161_timestamps]
        except ValueError as exc:
            raise TimestampError("bundle holds an unreadable RFC 3161 timestamp") from exc
        if len({r.tst_info.gen_time for r in responses}) != len(responses):
            raise TimestampError("bundle holds duplicate timestamps")
        tsa_times = _verify_tsa(responses, signature, root)
        if not tsa_times:
            raise TimestampError("no RFC 3161 timestamp verified against the trusted root")
        times.extend(tsa_times)
    if require_tlog and not times:
        raise TransparencyLogError("no verified signing time (no SET and no valid timestamp)")

    return SignatureVerification(
        digest=_digest_str(want),
        signer=Signer(kind="key", key_hint=key_hint(key)),
        kind="sigstore-bundle",
        payload_type=payload_type,
        statement=statement,
        predicate_type=statement.get("predicateType") if statement else None,
        signed_at=min(times) if times else None,
        details=(f"bundle key hint {hint}",) if hint else (),
    )


def bundle_certificate(bundle: bytes | str) -> x509.Certificate | None:
    """The signing certificate of a keyless bundle, or None for a key-based one."""
    try:
        b = _RawBundle.from_json(_with_tlog_entries(_read_limited(bundle, "bundle")))
    except ValueError as exc:
        raise MalformedSignatureError(f"bundle is invalid: {_one_line(exc)}") from exc
    vm = b.verification_material
    try:
        if vm.certificate is not None:
            return x509.load_der_x509_certificate(vm.certificate.raw_bytes)
        if vm.x509_certificate_chain is not None and vm.x509_certificate_chain.certificates:
            return x509.load_der_x509_certificate(
                vm.x509_certificate_chain.certificates[0].raw_bytes)
    except (ValueError, x509.InvalidVersion) as exc:  # not DER, or not a certificate
        raise MalformedSignatureError(f"bundle certificate is invalid: {_one_line(exc)}") from exc
    return None


def is_key_bundle(bundle: Mapping[str, Any]) -> bool:
    """True when a parsed bundle JSON carries ``verificationMaterial.publicKey``."""
    vm = bundle.get("verificationMaterial")
    return isinstance(vm, dict) and "publicKey" in vm
