"""Choose and load a signer: cosign with a key, cosign keyless, or notation.

One function, :func:`load_signer`, used by ``push artifact --sign``, ``sign artifact``, the
GitHub Action and tests alike: key material is read (and decrypted) once, up front, and the
returned coroutine signs one digest. How a password is obtained is the caller's business
(the CLI prompts or reads ``COSIGN_PASSWORD``), so it is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ocigitops.errors import UsageError
from ocigitops.reference import Reference
from ocigitops.registry import RegistryClient

#: ``(client, repository, digest, media type, size) -> result`` of one signature.
SignFn = Callable[[RegistryClient, Reference, str, str, int], Coroutine[Any, Any, Any]]


@dataclass(frozen=True)
class SignOptions:
    """What to sign with; the CLI's ``--key``, ``--keyless``, ``--notation`` flags."""

    key: Path | None = None
    keyless: bool = False
    notation: bool = False
    #: notation: the certificate chain (PEM, leaf first).
    cert: Path | None = None
    #: cosign storage: a v3 bundle referrer, or the v2 ``.sig`` tag.
    fmt: Literal["bundle", "legacy"] = "bundle"
    envelope: Literal["jws", "cose"] = "jws"
    annotations: dict[str, str] = field(default_factory=dict)
    identity_token: str | None = None


def load_signer(opts: SignOptions, password: Callable[[], bytes]) -> SignFn:
    """Load the key material ``opts`` names and return the signing coroutine.

    ``password`` is called only for an encrypted cosign key. Raises UsageError when the
    options do not name a complete way to sign.
    """
    from ocigitops.verifier.keys import load_private_key

    annotations = opts.annotations or None
    if opts.notation:
        from cryptography import x509

        from ocigitops.publisher.sign_notation import sign_notation

        if opts.key is None or opts.cert is None:
            raise UsageError("--notation needs --key KEY.pem and --cert CHAIN.pem")
        chain = x509.load_pem_x509_certificates(opts.cert.read_bytes())
        nkey = load_private_key(opts.key.read_bytes(), None)

        async def notation_sign(client: RegistryClient, repo: Reference, digest: str,
                                media_type: str, size: int) -> Any:
            return await sign_notation(client, repo, digest, media_type, size, nkey, chain,
                                       envelope=opts.envelope, user_metadata=annotations)

        return notation_sign
    if opts.keyless:
        from ocigitops.publisher.sign_cosign import sign_cosign_keyless

        async def keyless_sign(client: RegistryClient, repo: Reference, digest: str,
                               media_type: str, size: int) -> Any:
            return await sign_cosign_keyless(client, repo, digest,
                                             identity_token=opts.identity_token)

        return keyless_sign
    if opts.key is None:
        raise UsageError("pass --key FILE, --keyless, or --notation --key --cert")
    from ocigitops.publisher.sign_cosign import sign_cosign_key

    pem = opts.key.read_bytes()
    ckey = load_private_key(pem, password() if b"ENCRYPTED" in pem else None)

    async def key_sign(client: RegistryClient, repo: Reference, digest: str, media_type: str,
                       size: int) -> Any:
        return await sign_cosign_key(client, repo, digest, ckey, fmt=opts.fmt,
                                     annotations=annotations)

    return key_sign
