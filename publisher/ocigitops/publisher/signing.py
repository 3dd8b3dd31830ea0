"""Choose and load a signer: cosign with a key, cosign keyless, or notation; sign an
artifact in a registry with it.

One function, :func:`load_signer`, used by ``push artifact --sign``, ``sign artifact``, the
GitHub Action and tests alike: key material is read (and decrypted) once, up front, and the
returned coroutine signs one digest. How a password is obtained is the caller's business
(the CLI prompts or reads ``COSIGN_PASSWORD``, see :func:`cosign_password`), so it is
passed in. :func:`sign_artifact` is the whole ``sign artifact`` command.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ocigitops.errors import UsageError
from ocigitops.options import Annotations, RegistryOptions, parse_annotations
from ocigitops.publisher.signresult import SignResult
from ocigitops.reference import Reference, parse_reference
from ocigitops.registry import RegistryClient

#: ``(client, repository, digest, media type, size) -> result`` of one signature.
SignFn = Callable[[RegistryClient, Reference, str, str, int], Coroutine[Any, Any, Any]]
#: Asks the user for the key password; the argument says whether to ask twice (confirm).
PasswordPrompt = Callable[[bool], str]


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
    #: Signed annotations (cosign ``-a``, notation user metadata): a mapping, or
    #: ``KEY=VALUE`` strings, parsed when the signer is loaded.
    annotations: Annotations = field(default_factory=dict)
    identity_token: str | None = None


def cosign_password(prompt: PasswordPrompt | None = None, *, confirm: bool = False) -> bytes:
    """The cosign key password: ``COSIGN_PASSWORD``, else ``prompt`` on a terminal.

    As cosign does: the variable wins (an empty value is a valid, empty password); without
    it, asking needs a terminal on stdin, so CI without the variable fails with a UsageError
    rather than hanging on a prompt nobody sees.
    """
    env = os.environ.get("COSIGN_PASSWORD")
    if env is not None:
        return env.encode()
    if prompt is None or not sys.stdin.isatty():
        raise UsageError("set COSIGN_PASSWORD (no terminal to prompt for the key password)")
    return prompt(confirm).encode()


def load_signer(opts: SignOptions, password: Callable[[], bytes]) -> SignFn:
    """Load the key material ``opts`` names and return the signing coroutine.

    ``password`` is called only for an encrypted cosign key. Raises UsageError when the
    options do not name a complete way to sign.
    """
    from ocigitops.verifier.keys import load_private_key

    annotations = parse_annotations(opts.annotations) or None
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


@dataclass(frozen=True)
class SignedArtifact:
    """``sign artifact``'s result: the repository and the signature made of its digest."""

    #: ``oci://host/repo``, without tag or digest.
    repository_url: str
    signature: SignResult

    def to_json(self) -> dict[str, str]:
        """The ``-o json|yaml`` document (the signature's fields)."""
        return self.signature.to_json()

    def summary(self) -> str:
        """One line: what was signed, how, and where the signature is stored."""
        s = self.signature
        return f"signed {self.repository_url}@{s.subject} ({s.kind}): {s.location}"


async def sign_artifact(url: str, options: SignOptions, registry: RegistryOptions, *,
                        prompt: PasswordPrompt | None = None) -> SignedArtifact:
    """Sign the artifact at ``url`` (by the digest its tag or digest resolves to).

    The key is loaded (``prompt`` asks for an encrypted cosign key's password when
    ``COSIGN_PASSWORD`` is unset) before the registry is contacted. The digest signed is
    the one the manifest's bytes hash to, with their size and media type: a registry
    cannot make us sign something other than what ``url`` names.
    """
    ref = parse_reference(url, require_scheme=True)
    signer = load_signer(options, password=lambda: cosign_password(prompt))
    async with registry.client() as client:
        m = await client.resolve(ref)
        result: SignResult = await signer(client, ref.repo_only(), m.digest, m.media_type,
                                          len(m.data))
    return SignedArtifact(repository_url=ref.repo_only().url(), signature=result)
