"""The publish path as calls: render -> package -> push -> sign -> attest provenance, and
the other artifact commands (tag, list, diff) over a registry named by options.

Each function here is one command of the CLI, and what the GitHub Action and tests call:
it takes plain values (a URL, a :class:`~ocigitops.options.RegistryOptions`), opens the
registry client itself, and returns a dataclass the caller prints. The functions over an
already open client are in :mod:`ocigitops.publisher.artifacts`.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocigitops.artifact import Metadata
from ocigitops.errors import UsageError
from ocigitops.extract import limits_from
from ocigitops.ignore import DEFAULT_IGNORE
from ocigitops.options import Annotations, RegistryOptions, parse_annotations
from ocigitops.publisher.artifacts import (
    DiffResult,
    ListedArtifact,
    ProgressFactory,
    PushResult,
    diff_artifact,
    list_artifacts,
    push_artifact,
    tag_artifact,
)
from ocigitops.publisher.gitinfo import detect
from ocigitops.publisher.signing import PasswordPrompt, SignOptions, cosign_password, load_signer
from ocigitops.publisher.signresult import SignResult
from ocigitops.reference import parse_reference
from ocigitops.table import format_table

if TYPE_CHECKING:
    from ocigitops.publisher.attest import AttestFn
    from ocigitops.render import RenderMode

#: Receives one human-readable line per step taken (``rendered 3 file(s) with helm``).
Say = Callable[[str], None]


@dataclass(frozen=True)
class PushRequest:
    """What ``push artifact`` is asked to do; every field is one of its flags."""

    #: ``oci://host/repo:tag``; the tag is required.
    url: str
    #: A directory, one file, or ``-`` for one YAML stream on stdin.
    path: str
    #: Default: the Git remote of the checkout holding ``path``, or GitHub Actions'.
    source: str | None = None
    #: Default: ``branch@sha1:commit`` of that checkout, or GitHub Actions'.
    revision: str | None = None
    #: Manifest annotations (a mapping, or ``KEY=VALUE`` strings).
    annotations: Annotations = field(default_factory=dict)
    #: The effective ignore patterns (gitignore syntax); Flux's default list by default.
    ignore: Sequence[str] = DEFAULT_IGNORE
    #: Created time pinned to 1970-01-01T00:00:00Z: same content, same digest.
    reproducible: bool = False
    #: Push only when the content differs from this tag's.
    diff_tag: str | None = None
    #: With ``diff_tag`` and unchanged content: add the tag to the existing digest. Off by
    #: default, as ControlPlane's push action: the existing artifact's revision annotation
    #: names the commit it was built from, so a new tag on it would claim a build of this
    #: commit that never happened; a pipeline that needs the tag asks for it.
    tag_unchanged: bool = False
    #: Archive what symbolic links point to (Flux's ``--resolve-symlinks``); otherwise
    #: each link is left out with a warning.
    resolve_symlinks: bool = False
    #: ``--max-size`` and ``--max-file-size`` (bytes, or ``512Mi``, ``1G``): the limits a
    #: pull checks, checked before uploading; None keeps the defaults.
    max_size: str | int | None = None
    max_file_size: str | int | None = None
    render: RenderMode = "none"
    #: Helm values files (``render="helm"`` only).
    values: Sequence[Path] = ()
    release_name: str | None = None
    #: Namespace for ``helm template`` (``render="helm"`` only).
    namespace: str | None = None
    #: Sign the pushed digest with these options; None: do not sign.
    sign: SignOptions | None = None
    #: Attest the pushed digest with a SLSA provenance v1 predicate of this GitHub Actions
    #: run (:mod:`ocigitops.publisher.provenance`), signed with :attr:`attest_with`.
    provenance: bool = False
    #: The signing flags for the provenance attestation (a cosign key or keyless); the
    #: same flags as :attr:`sign`, given even when the artifact itself is not signed.
    attest_with: SignOptions | None = None


@dataclass(frozen=True)
class PublishResult:
    """What ``push artifact`` did: the push (or the no-op of ``diff_tag``) and signature."""

    push: PushResult
    #: ``oci://host/repo``, without tag or digest.
    repository_url: str
    #: Number of files rendered; None when nothing was rendered.
    rendered: int | None = None
    #: The signature of the pushed digest, when signing was asked for.
    signature: SignResult | None = None
    #: The provenance attestation, when asked for and something was pushed.
    provenance: SignResult | None = None

    @property
    def digest(self) -> str:
        """The manifest digest pushed (or found unchanged at ``diff_tag``)."""
        return self.push.digest

    def lines(self) -> tuple[str, str]:
        """What ``push artifact`` prints without ``-o``: a line for people (stderr), and
        the digest URL (stdout), of the artifact pushed or of the unchanged one found."""
        return self.push.message, self.push.url

    def to_json(self) -> dict[str, object]:
        """The ``-o json|yaml`` document: Flux's fields, ``pushed``, ``tagged`` and
        ``signature``."""
        doc = self.push.to_json()
        if self.signature is not None:
            doc["signature"] = self.signature.to_json()
        if self.provenance is not None:
            doc["provenance"] = self.provenance.to_json()
        return doc


async def publish(request: PushRequest, registry: RegistryOptions, *,
                  prompt: PasswordPrompt | None = None, progress: ProgressFactory | None = None,
                  say: Say | None = None, warn: Say | None = None) -> PublishResult:
    """Render, package, push and (optionally) sign, as ``push artifact`` does.

    Everything that can fail without the network is checked first: the reference, the
    annotations, the size limits and the signing key (``prompt`` asks for its password
    when ``COSIGN_PASSWORD`` is unset), then rendering and packaging (the tree against
    the limits a pull checks), then the push. ``say`` receives a line for each step done
    (rendered, signed); ``warn`` one for each warning (a link left out, an empty
    artifact); ``progress`` makes upload progress callbacks.
    """
    ref = parse_reference(request.url, require_scheme=True)
    if not ref.tag:
        raise UsageError(f"{request.url}: a tag is required, e.g. {request.url}:latest")
    if request.tag_unchanged and not request.diff_tag:
        raise UsageError("--tag-unchanged needs --diff-tag")
    limits = limits_from(request.max_size, request.max_file_size)
    path = request.path
    origin = detect(Path(path) if path != "-" else Path.cwd())
    meta = Metadata(source=request.source or origin.source,
                    revision=request.revision or origin.revision,
                    annotations=parse_annotations(request.annotations))
    # One password prompt even when the key both signs and attests.
    password = functools.cache(lambda: cosign_password(prompt))
    signer = (load_signer(request.sign, password=password)
              if request.sign is not None else None)
    attester, predicate = _provenance(request, password)
    rendered: int | None = None
    with tempfile.TemporaryDirectory(prefix="ocigitops-render-") as tmp:
        content: str | Path = path
        if request.render != "none":
            if path == "-":
                raise UsageError("--render needs --path to be a directory")
            from ocigitops.render import render  # runs kustomize/helm: only when asked

            out = Path(tmp) / "rendered"
            out.mkdir()
            files = render(Path(path), request.render, out, values=list(request.values),
                           release_name=request.release_name, namespace=request.namespace)
            rendered = len(files)
            if say:
                say(f"rendered {rendered} file(s) with {request.render}")
            content = out
        elif request.values or request.release_name:
            raise UsageError("--values and --release-name need --render helm")

        signed: SignResult | None = None
        async with registry.client() as client:
            pushed = await push_artifact(client, ref, content, meta, ignore=request.ignore,
                                         reproducible=request.reproducible,
                                         diff_tag=request.diff_tag,
                                         tag_unchanged=request.tag_unchanged, limits=limits,
                                         resolve_symlinks=request.resolve_symlinks,
                                         warn=warn, progress=progress)
            if signer is not None:
                # Sign by digest: the tag may move, the signature must not.
                m = await client.head_manifest(ref.with_digest(pushed.digest))
                signed = await signer(client, ref.repo_only(), pushed.digest, m.media_type,
                                      m.size)
            attested: SignResult | None = None
            if attester is not None and pushed.pushed:
                from ocigitops.publisher.attest import attest_predicate
                from ocigitops.verifier.intoto import SLSA_PROVENANCE_1

                attested = await attest_predicate(client, ref.repo_only(), pushed.digest,
                                                  SLSA_PROVENANCE_1, predicate, attester)
        if signed is not None and say:
            say(f"signed {pushed.digest} ({signed.kind}): {signed.location}")
        if attested is not None and say:
            say(f"attested provenance of {pushed.digest}: {attested.location}")
        elif attester is not None and not pushed.pushed and warn:
            # As --tag-unchanged: this run built nothing, so it must not claim the build.
            warn("content unchanged: no provenance attested for the existing artifact")
    return PublishResult(push=pushed, repository_url=ref.repo_only().url(), rendered=rendered,
                         signature=signed, provenance=attested)


def _provenance(request: PushRequest, password: Callable[[], bytes]
                ) -> tuple[AttestFn | None, dict[str, Any]]:
    """The attester and predicate of ``--provenance``, checked before any network use."""
    if not request.provenance:
        return None, {}
    from ocigitops.publisher.attest import AttestOptions, load_attester
    from ocigitops.publisher.provenance import github_actions_provenance

    opts = request.attest_with
    if opts is None or opts.notation or (opts.key is None and not opts.keyless):
        raise UsageError("--provenance signs with cosign: pass --key FILE or --keyless")
    predicate = github_actions_provenance(os.environ)
    attester = load_attester(AttestOptions(key=opts.key, keyless=opts.keyless,
                                           identity_token=opts.identity_token), password)
    return attester, predicate


@dataclass(frozen=True)
class TagResult:
    """The digest tagged and the ``oci://`` URL of each new tag."""

    digest: str
    urls: list[str]

    def lines(self) -> list[str]:
        """``oci://host/repo:tag@digest``, one per tag, as ``tag artifact`` prints."""
        return [f"{u}@{self.digest}" for u in self.urls]

    def to_json(self) -> dict[str, object]:
        """``tag artifact -o json|yaml``: the digest and the new tags' URLs."""
        return {"digest": self.digest, "urls": [f"{u}@{self.digest}" for u in self.urls]}


async def tag(url: str, tags: Sequence[str], registry: RegistryOptions) -> TagResult:
    """Add ``tags`` to the artifact at ``url``; the manifest's bytes are copied exactly."""
    ref = parse_reference(url, require_scheme=True)
    async with registry.client() as client:
        digest = await tag_artifact(client, ref, tags)
    return TagResult(digest=digest, urls=[ref.with_tag(t).url() for t in tags])


async def list_repository(url: str, registry: RegistryOptions, *,
                          semver_range: str | None = None,
                          regex: str | None = None) -> list[ListedArtifact]:
    """The artifacts in the repository ``url`` (``oci://host/repo``), filtered by a
    semver range and/or a regular expression on tags, newest tag first.

    A tag or digest in ``url`` is refused rather than ignored (as ``flux list
    artifacts`` ignores it): the listing is of the whole repository, and a user who typed
    ``:v1`` most likely wanted a filter.
    """
    ref = parse_reference(url, require_scheme=True)
    if ref.tag or ref.digest:
        given = f":{ref.tag}" if ref.tag else f"@{ref.digest}"
        raise UsageError(f"{url}: list artifacts takes a repository without a tag or digest"
                         f" ({ref.repo_only().url()}); drop {given!r}, and use --filter-regex"
                         " or --filter-semver to select tags")
    async with registry.client() as client:
        return await list_artifacts(client, ref, semver_range=semver_range, regex=regex)


def artifacts_table(rows: Sequence[ListedArtifact]) -> str:
    """The table ``list artifacts`` prints: artifact, digest, source, revision."""
    return format_table([("ARTIFACT", "DIGEST", "SOURCE", "REVISION")]
                        + [(r.url, r.digest, r.source, r.revision) for r in rows])


async def diff(url: str, path: str, registry: RegistryOptions,
               ignore: Sequence[str] = DEFAULT_IGNORE, *, resolve_symlinks: bool = False
               ) -> DiffResult:
    """Compare the content of ``path`` with the artifact at ``url`` (annotations aside)."""
    ref = parse_reference(url, require_scheme=True)
    async with registry.client() as client:
        return await diff_artifact(client, ref, path, ignore,
                                   resolve_symlinks=resolve_symlinks)
