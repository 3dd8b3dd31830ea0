"""Attest an artifact: a signed in-toto statement about its digest, stored as cosign v3 does.

``cosign attest --new-bundle-format`` (v3.0.2), field for field where it matters:

- the statement (:func:`ocigitops.verifier.intoto.build_statement`): subject = the manifest
  digest named by the repository, the predicate type of ``--type`` (cosign's names, or a URI),
  the predicate as cosign builds it for that type;
- a DSSE envelope (payload type ``application/vnd.in-toto+json``) over it, in a sigstore
  bundle v0.3 (:func:`ocigitops.publisher.sign_cosign.build_key_bundle` with a key; the
  sigstore-python flow keyless);
- stored as an OCI referrer of the artifact: artifactType and layer media type
  ``application/vnd.dev.sigstore.bundle.v0.3+json``, empty config, annotations
  ``dev.sigstore.bundle.content: dsse-envelope``, ``dev.sigstore.bundle.predicateType``
  and ``org.opencontainers.image.created``; where the registry has no referrers API, the
  ``sha256-<hex>`` tag-schema index, as cosign writes it there too.

No transparency-log entry is written with a key (there is no Rekor here: ``cosign attest
--tlog-upload=false``), so the attestation's time for a policy's ``maxAge`` is the one the
predicate carries (``custom``'s ``Timestamp``; a scan report's ``CreatedAt``):
:mod:`ocigitops.verifier.attestations` explains.

Other producers call :func:`attest_predicate` with a predicate they built (``scan --attest``
passes trivy's report and its predicate type); ``attest artifact`` is :func:`attest_artifact`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocigitops.errors import UsageError
from ocigitops.options import RegistryOptions
from ocigitops.publisher.signing import PasswordPrompt, cosign_password
from ocigitops.publisher.signresult import SignResult
from ocigitops.reference import Reference, parse_reference
from ocigitops.registry import Descriptor, RegistryClient
from ocigitops.verifier.intoto import build_predicate, build_statement, predicate_type_uri

#: ``(client, repository, subject, statement, predicate type) -> result``: signs a statement
#: and stores the bundle as a referrer of ``subject``.
AttestFn = Callable[[RegistryClient, Reference, Descriptor, bytes, str],
                    Coroutine[Any, Any, SignResult]]


@dataclass(frozen=True)
class AttestOptions:
    """How to sign an attestation: a cosign ``key``, or ``keyless`` (Fulcio, Rekor)."""

    key: Path | None = None
    keyless: bool = False
    identity_token: str | None = None


def load_attester(opts: AttestOptions, password: Callable[[], bytes]) -> AttestFn:
    """Load the key ``opts`` names (asking ``password`` for an encrypted one) and return
    the coroutine that signs and stores a statement. UsageError if none is named."""
    from ocigitops.publisher import sign_cosign as sc

    if opts.key is not None and opts.keyless:
        raise UsageError("pass either --key or --keyless, not both")
    if opts.keyless:
        async def keyless(client: RegistryClient, repo: Reference, subject: Descriptor,
                          statement: bytes, predicate_type: str) -> SignResult:
            token = sc._resolve_token(opts.identity_token)
            bundle, identity = await asyncio.to_thread(sc._keyless_sign, token, statement,
                                                       False, None)
            return await sc._store_bundle(client, repo, subject, bundle,
                                          kind="cosign-keyless-attestation", signer=identity,
                                          predicate_type=predicate_type)

        return keyless
    if opts.key is None:
        raise UsageError("pass --key FILE (a cosign private key) or --keyless")
    from ocigitops.verifier.keys import key_hint, load_private_key

    pem = opts.key.read_bytes()
    key = load_private_key(pem, password() if b"ENCRYPTED" in pem else None)

    async def with_key(client: RegistryClient, repo: Reference, subject: Descriptor,
                       statement: bytes, predicate_type: str) -> SignResult:
        bundle = sc.build_key_bundle(key, statement)
        return await sc._store_bundle(client, repo, subject, bundle,
                                      kind="cosign-attestation",
                                      signer=f"key sha256:{key_hint(key)}",
                                      predicate_type=predicate_type)

    return with_key


async def attest_predicate(client: RegistryClient, repo: Reference, digest: str,
                           predicate_type: str, predicate: Any, attester: AttestFn
                           ) -> SignResult:
    """Attest ``predicate`` (parsed JSON) of ``predicate_type`` (a URI) about
    ``repo@digest``, which must exist; returns where the attestation is stored."""
    from ocigitops.publisher.sign_cosign import _subject

    repo = repo.repo_only()
    subject = await _subject(client, repo, digest)
    statement = build_statement(repo.name, subject.digest, predicate_type, predicate)
    return await attester(client, repo, subject, statement, predicate_type)


@dataclass(frozen=True)
class AttestedArtifact:
    """``attest artifact``'s result."""

    repository_url: str
    predicate_type: str
    attestation: SignResult

    def to_json(self) -> dict[str, str]:
        """The ``-o json|yaml`` document."""
        return {**self.attestation.to_json(), "predicateType": self.predicate_type}

    def summary(self) -> str:
        """One line: what was attested, with which predicate type, where it is stored."""
        a = self.attestation
        return (f"attested {self.repository_url}@{a.subject} ({self.predicate_type}, "
                f"{a.signer}): {a.location} (via {a.stored_via})")


def read_predicate(type_: str, path: Path) -> Any:
    """The predicate for ``--type type_`` from the file at ``path`` (small: read at once)."""
    return build_predicate(type_, path.read_bytes())


async def attest_artifact(url: str, predicate_file: Path, type_: str, options: AttestOptions,
                          registry: RegistryOptions, *, prompt: PasswordPrompt | None = None
                          ) -> AttestedArtifact:
    """The whole ``attest artifact`` command: read the predicate, load the key (before any
    registry traffic), resolve ``url`` to its digest and attest that digest."""
    ref = parse_reference(url, require_scheme=True)
    uri = predicate_type_uri(type_)
    predicate = read_predicate(type_, predicate_file)
    attester = load_attester(options, password=lambda: cosign_password(prompt))
    async with registry.client() as client:
        m = await client.resolve(ref)
        result = await attest_predicate(client, ref.repo_only(), m.digest, uri, predicate,
                                        attester)
    return AttestedArtifact(ref.repo_only().url(), uri, result)
