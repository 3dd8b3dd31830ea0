"""HelmChart reconciliation, with Flux's semantics: a chart archive as the artifact.

From a **HelmRepository** (HTTP/S): the version ``spec.version`` selects in the stored index
(read from the cache and hashed again), downloaded with the repository's credentials
(sent only to the index's host unless ``passCredentials``), checked against the index's
digest, then unpacked and checked (bounded, path-safe, one top folder, its ``Chart.yaml``
naming the chart and version the index promised). Revision: the chart version.

From an **OCI HelmRepository** (``type: oci``): ``<url>/<chart>`` is resolved (a version
range lists the tags; Helm's ``_`` in tags reads back as ``+``), verified with
``spec.verify`` (OCIRepository's policy, through the same mapping) before anything is
fetched, and the chart layer (``application/vnd.cncf.helm.chart.content.v1.tar+gzip``) is
read by the verified digest. A refused signature sets ``SourceVerified=False`` and keeps the
last chart.

From a **GitRepository** or an **OCIRepository**: the source's artifact (through the source
contract) is unpacked and the folder ``spec.chart`` packaged in Python
(:func:`ocigitops.chart.package_chart`: no helm binary). Revision: the chart version, plus
``+<first 12 hex of the source revision>`` with ``reconcileStrategy: Revision``. With
``spec.verify`` and an OCIRepository source, the source must have verified its artifact
(its ``spec.verify``): the HelmChart refuses an artifact no authority verified.

``valuesFiles`` (relative to the chart for HelmRepository charts, to the source root
otherwise) are merged in order into the packaged chart's ``values.yaml``, and the
HelmChart's generation is added to the revision (``6.0.3+1``), as Flux does.

Nothing is fetched or built when the chart name, revision, generation and source revision
are those of the stored artifact. A failure never replaces the last good chart.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocigitops import mediatypes as mt
from ocigitops.artifact import parse_manifest
from ocigitops.auth import CredentialResolver, Credentials, DockerConfig
from ocigitops.chart import (
    CHART_MAX_FILE,
    ChartError,
    ChartMeta,
    inside,
    merged_values,
    oci_tag,
    package_chart,
    parse_chart_yaml,
    relative_path,
    unpack_chart,
    version_of_tag,
)
from ocigitops.digests import digest_of
from ocigitops.errors import (
    AuthenticationError,
    CredentialsError,
    DeadlineExceededError,
    DigestMismatchError,
    NotFoundError,
    OcigitopsError,
    PermissionDeniedError,
    SizeLimitError,
)
from ocigitops.puller import conditions as cond
from ocigitops.puller.api.helmchart import (
    KIND,
    HelmChart,
    HelmChartStatus,
    parse_helm_chart,
)
from ocigitops.puller.api.helmrepository import HelmRepository, parse_helm_repository
from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.api.ocirepository import Artifact
from ocigitops.puller.api.schema import ValidationError, to_dict
from ocigitops.puller.api.verification import (
    attestation_requirements,
    build_signature_policy,
    referenced_secrets,
)
from ocigitops.puller.cache import ArtifactCache
from ocigitops.puller.helmsource.http import CHART_DOWNLOAD_MAX, HelmHTTP
from ocigitops.puller.helmsource.index import (
    RepositoryIndex,
    index_url,
    parse_index,
    read_cached,
    resolve_url,
    select_version,
)
from ocigitops.puller.kube import DynamicClient
from ocigitops.puller.reconcile import Outcome, prepare
from ocigitops.puller.runtime.reconciler import (
    Deps,
    ObjectKey,
    Progress,
    Reconciler,
    no_progress,
)
from ocigitops.puller.sources.contract import (
    ArtifactNotReadyError,
    SourceError,
    SourceKind,
    SourceNotFoundError,
    get_artifact,
)
from ocigitops.puller.sources.helmrepository import repository_access, unsupported_provider
from ocigitops.puller.sources.oci import _failures, _verification_status, _verified_message
from ocigitops.reference import Reference, parse_reference
from ocigitops.registry import Manifest, RegistryClient
from ocigitops.tags import select_latest
from ocigitops.verifier.errors import PolicyError
from ocigitops.verifier.verify import verify_artifact

# Flux's reasons (source-controller's HelmChart).
CHART_PULL_FAILED = "ChartPullFailed"
CHART_PACKAGE_FAILED = "ChartPackageFailed"
SOURCE_UNAVAILABLE = "SourceUnavailable"
#: How long unpacking a source's artifact may take (a HelmChart has no spec.timeout).
EXTRACT_TIMEOUT = 60.0
#: An exact version (``1.2.3``, ``v1.2.3-rc.1+b``): pulled by its tag, no tag listing.
_EXACT = re.compile(r"^v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")


class InvalidChartSpecError(OcigitopsError):
    """The HelmChart cannot work as written: only an edit fixes it (Stalled)."""


@dataclass
class HelmChartContext:
    """The I/O a HelmChart reconcile needs (injected, so tests use real servers)."""

    kube: DynamicClient
    cache: ArtifactCache
    #: The source kinds that exist and those this process reconciles (the contract's).
    sources: Mapping[str, SourceKind]
    served: frozenset[str] | set[str]
    registry: Callable[..., RegistryClient] = RegistryClient
    http: Callable[..., HelmHTTP] = HelmHTTP
    requeue_dependency: float = 30.0
    progress: Progress = no_progress
    #: Parsed indexes by digest: an index is read (and hashed) once per revision, not by
    #: every HelmChart at every interval (a large YAML index takes seconds to parse).
    indexes: dict[str, RepositoryIndex] = field(default_factory=dict)

    @classmethod
    def from_deps(cls, deps: Deps) -> HelmChartContext:
        """The context the runtime builds for this kind."""
        return cls(kube=deps.kube, cache=deps.cache, sources=deps.sources,
                   served=deps.served, requeue_dependency=deps.options.requeue_dependency,
                   progress=deps.progress)


@dataclass
class _Work:
    """One reconcile's state: the object, its working status, a private directory."""

    obj: Mapping[str, Any]
    chart: HelmChart
    ctx: HelmChartContext
    status: dict[str, Any]
    conditions: list[dict[str, Any]]
    generation: int
    interval: float
    tmp: Path

    @property
    def ns(self) -> str:
        return self.chart.metadata.namespace

    def revision(self, version: str, source_revision: str | None = None) -> str:
        """Flux's artifact revision: the chart version, plus build metadata for
        ``reconcileStrategy: Revision`` (12 hex of the source revision) and for values
        files (the generation)."""
        meta: list[str] = []
        if self.chart.spec.reconcile_strategy == "Revision" and source_revision:
            meta.append(source_revision.rpartition(":")[2][:12])
        if self.chart.spec.values_files:
            meta.append(str(self.generation))
        if not meta:
            return version
        return version + ("." if "+" in version else "+") + ".".join(meta)

    def unchanged(self, revision: str) -> bool:
        """The stored artifact is this revision, of this spec, and still cached."""
        art = self.status.get("artifact") or {}
        return (art.get("revision") == revision
                and self.status.get("observedChartName") == self.chart.spec.chart
                and self.status.get("observedGeneration") == self.generation
                and bool(art.get("digest")) and self.ctx.cache.has(art["digest"]))

    def keep(self, source_revision: str) -> Outcome:
        """Ready with the stored artifact (nothing new to build)."""
        self.status["observedSourceArtifactRevision"] = source_revision
        for ctype in (cond.FETCH_FAILED, cond.ARTIFACT_OUTDATED):
            cond.remove(self.conditions, ctype)
        revision = (self.status.get("artifact") or {}).get("revision")
        cond.mark_ready(self.conditions, cond.SUCCEEDED,
                        f"stored artifact: revision '{revision}'", self.generation)
        return Outcome(self.status, self.interval)

    async def working(self, message: str) -> None:
        """Report work in progress (Reconciling=True) before a fetch or build."""
        art = self.status.get("artifact") or {}
        if art.get("revision"):
            cond.set_condition(self.conditions, cond.ARTIFACT_OUTDATED, cond.TRUE,
                               "NewChart", message, self.generation)
        cond.mark_reconciling(self.conditions, cond.PROGRESSING, message, self.generation)
        await self.ctx.progress(self.obj, self.status)


async def _bytes(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def reconcile(obj: Mapping[str, Any], ctx: HelmChartContext) -> Outcome:
    """Reconcile one HelmChart object (a dict from the API server)."""
    prep = prepare(obj, HelmChartStatus, parse_helm_chart)
    if isinstance(prep, Outcome):
        return prep
    chart, start = prep.obj, prep.start
    with tempfile.TemporaryDirectory(prefix="ocigitops-helmchart-") as tmp:
        w = _Work(obj, chart, ctx, start.status, start.conditions, start.generation,
                  chart.spec.interval_seconds, Path(tmp))
        try:
            return await _dispatch(w)
        except ArtifactNotReadyError as e:
            return _waiting(w, f"{e}, retrying in {ctx.requeue_dependency:g}s")
        except SourceError as e:
            return _waiting(w, str(e))
        except InvalidChartSpecError as e:
            msg = str(e)
            cond.mark_failed(w.conditions, cond.INVALID_SPEC, msg, w.generation, stalled=True)
            w.status["observedGeneration"] = w.generation
            return Outcome(w.status, None, [("Warning", cond.INVALID_SPEC, msg)], failed=True)
        except TimeoutError:
            return _failed(w, DeadlineExceededError("fetching the chart did not finish in"
                                                    " time (the source's spec.timeout)"))
        except (OcigitopsError, PolicyError) as e:
            return _failed(w, e)
        except Exception as e:  # whatever a server or a chart made us raise
            return _failed(w, OcigitopsError(f"unexpected {type(e).__name__} while building"
                                             f" the chart: {e}"))


def _waiting(w: _Work, message: str) -> Outcome:
    cond.mark_failed(w.conditions, SOURCE_UNAVAILABLE, message, w.generation)
    return Outcome(w.status, w.ctx.requeue_dependency, waiting=True)


def _failed(w: _Work, e: Exception) -> Outcome:
    # From the error's type, never from words in its message.
    if isinstance(e, AuthenticationError | PermissionDeniedError | CredentialsError):
        reason = cond.AUTHENTICATION_FAILED
    elif isinstance(e, ChartError) and not isinstance(e, SizeLimitError):
        reason = CHART_PACKAGE_FAILED
    else:
        reason = CHART_PULL_FAILED
    message = str(e).splitlines()[0] if str(e) else type(e).__name__
    if w.status.get("artifact"):
        message += " (the last chart is kept)"
    cond.set_condition(w.conditions, cond.FETCH_FAILED, cond.TRUE, reason, message,
                       w.generation)
    cond.mark_failed(w.conditions, reason, message, w.generation)
    w.status["observedGeneration"] = w.generation
    return Outcome(w.status, w.interval, [("Warning", reason, message)], failed=True)


async def _dispatch(w: _Work) -> Outcome:
    ref = w.chart.spec.source_ref
    verify = w.chart.spec.verify
    if verify is not None:
        try:
            attestation_requirements(verify)  # the spec alone: CEL compiles, before I/O
        except PolicyError as e:
            raise InvalidChartSpecError(f"spec.verify: {e}") from None
    if ref.kind != "HelmRepository":
        return await _from_source(w)
    if ref.kind not in w.ctx.served:
        raise SourceError("source kind HelmRepository is not reconciled by this controller:"
                          " enable it in --controllers")
    raw = await w.ctx.kube.get(API_VERSION, "HelmRepository", ref.name, w.ns)
    if raw is None:
        raise SourceNotFoundError(f"Source 'HelmRepository/{w.ns}/{ref.name}' not found")
    try:
        repo = parse_helm_repository(raw)
    except (ValidationError, ValueError) as e:
        raise SourceError(f"HelmRepository {w.ns}/{ref.name} is invalid: {e}") from None
    msg = unsupported_provider(repo.spec.provider)
    if msg is not None:
        raise SourceError(f"HelmRepository {w.ns}/{ref.name}: {msg}")
    if repo.spec.is_oci:
        return await _from_oci_repository(w, repo)
    if verify is not None:
        raise InvalidChartSpecError("spec.verify applies to charts from an OCI registry (a"
                                    " HelmRepository of type oci, or an OCIRepository):"
                                    " charts from an HTTP repository carry no signature")
    return await _from_http_repository(w, repo)


#: Parsed indexes kept per process (the newest ones; each is a few MB in memory).
INDEX_CACHE_SIZE = 8


async def _index(ctx: HelmChartContext, digest: str) -> RepositoryIndex:
    index = ctx.indexes.get(digest)
    if index is None:
        data = await asyncio.to_thread(read_cached, ctx.cache, digest)
        index = await asyncio.to_thread(parse_index, data)
        ctx.indexes[digest] = index
        while len(ctx.indexes) > INDEX_CACHE_SIZE:
            del ctx.indexes[next(iter(ctx.indexes))]
    return index


# -- HelmRepository over HTTP(S) -----------------------------------------------------------


async def _from_http_repository(w: _Work, repo: HelmRepository) -> Outcome:
    spec = w.chart.spec
    art = await get_artifact(w.ctx.kube, w.ctx.cache, w.ctx.sources, w.ctx.served,
                             "HelmRepository", w.ns, repo.metadata.name)
    index = await _index(w.ctx, art.digest)
    cv = select_version(index, spec.chart, spec.version)
    revision = w.revision(cv.version)
    if w.unchanged(revision):
        return w.keep(art.revision)
    await w.working(f"pulling chart '{spec.chart}' version '{cv.version}'")
    auth, tls = await repository_access(w.ctx.kube, repo)
    url = resolve_url(index_url(repo.spec.url), cv.urls[0])
    async with asyncio.timeout(repo.spec.timeout_seconds), \
            w.ctx.http(repo.spec.url, auth=auth, tls=tls,
                       pass_credentials=repo.spec.pass_credentials,
                       timeout=repo.spec.timeout_seconds) as http:
        fetched = await http.fetch(url, max_bytes=CHART_DOWNLOAD_MAX,
                                   what=f"chart {spec.chart} {cv.version}")
    if cv.digest is not None:
        actual = hashlib.sha256(fetched.body).hexdigest()
        if actual != cv.digest:
            raise DigestMismatchError(f"chart {spec.chart} {cv.version} hashes to sha256:"
                                      f"{actual}, the index says sha256:{cv.digest}")
    return await _from_archive(w, fetched.body, cv.version, revision, art.revision)


# -- HelmRepository of type oci ------------------------------------------------------------


async def _oci_credentials(w: _Work, repo: HelmRepository) -> CredentialResolver:
    if repo.spec.secret_ref is None:
        return CredentialResolver(use_docker_config=False)
    name = repo.spec.secret_ref.name
    data = await w.ctx.kube.secret_data(w.ns, name)
    if data is None:
        raise CredentialsError(f"Secret {w.ns}/{name} not found")
    if ".dockerconfigjson" in data:
        config = DockerConfig.from_secret_data(data, source=f"Secret {w.ns}/{name}")
        return CredentialResolver(configs=[config], use_docker_config=False)
    if "username" in data and "password" in data:
        return CredentialResolver(creds=Credentials(username=data["username"].decode(),
                                                    password=data["password"].decode()),
                                  use_docker_config=False)
    raise CredentialsError(f"Secret {w.ns}/{name} holds neither .dockerconfigjson nor"
                           " username and password")


async def _oci_tls(w: _Work, repo: HelmRepository) -> dict[str, str | None]:
    out: dict[str, str | None] = {"ca_file": None, "cert_file": None, "key_file": None}
    if repo.spec.cert_secret_ref is None:
        return out
    name = repo.spec.cert_secret_ref.name
    data = await w.ctx.kube.secret_data(w.ns, name)
    if data is None:
        raise CredentialsError(f"Secret {w.ns}/{name} not found")
    for key, arg in (("ca.crt", "ca_file"), ("tls.crt", "cert_file"), ("tls.key", "key_file")):
        if key in data:
            p = w.tmp / key
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data[key])
            out[arg] = str(p)
    return out


async def _oci_version(client: RegistryClient, base: Reference, constraint: str,
                       ) -> tuple[str, str]:
    """(tag, chart version) ``constraint`` selects in the repository ``base``."""
    constraint = (constraint or "*").strip()
    if _EXACT.match(constraint):
        return oci_tag(constraint), constraint
    versions = {version_of_tag(t): t for t in await client.list_tags(base)}
    chosen = select_latest(list(versions), constraint)
    if chosen is None:
        raise NotFoundError(f"no version of chart {base.name} matches {constraint!r}")
    return versions[chosen], chosen


async def _from_oci_repository(w: _Work, repo: HelmRepository) -> Outcome:
    spec = w.chart.spec
    if "/" in spec.chart or ":" in spec.chart or "@" in spec.chart:
        raise InvalidChartSpecError(f"spec.chart {spec.chart!r} must be a chart name for"
                                    " a HelmRepository of type oci")
    base = parse_reference(f"{repo.spec.url.rstrip('/')}/{spec.chart}", require_scheme=True)
    creds = await _oci_credentials(w, repo)
    tls = await _oci_tls(w, repo)
    timeout = repo.spec.timeout_seconds
    async with w.ctx.registry(creds, insecure=repo.spec.insecure, timeout=timeout,
                              deadline=timeout, **tls) as client:
        tag, version = await _oci_version(client, base, spec.version)
        desc = await client.head_manifest(base.with_tag(tag))
        digest = desc.digest
        pinned = base.with_tag(tag).with_digest(digest)
        source_revision = f"{tag}@{digest}"
        revision = w.revision(version)
        verified = spec.verify is None or (
            (w.status.get("verification") or {}).get("digest") == digest
            and cond.is_true(w.conditions, cond.SOURCE_VERIFIED))
        if verified and w.unchanged(revision):
            return w.keep(source_revision)
        await w.working(f"pulling chart '{spec.chart}' version '{version}' from"
                        f" '{repo.spec.url}'")
        manifest_bytes: Manifest | None = None
        if spec.verify is not None:
            secrets: dict[str, dict[str, bytes]] = {}
            for name in referenced_secrets(spec.verify):
                data = await w.ctx.kube.secret_data(w.ns, name)
                if data is None:
                    raise PolicyError(f"verification Secret {w.ns}/{name} not found")
                secrets[name] = data
            policy = build_signature_policy(spec.verify, secrets)
            outcome = await verify_artifact(client, pinned, policy)
            w.status["verification"] = _verification_status(outcome.digest, outcome.result)
            if not outcome.passed or outcome.digest != digest:
                why = (_failures(policy, outcome.result) if not outcome.passed else
                       f"verified digest {outcome.digest} is not the resolved {digest}")
                return _refused(w, f"verification of chart {spec.chart} {version}"
                                   f" ({digest}) failed: {why}")
            cond.set_condition(w.conditions, cond.SOURCE_VERIFIED, cond.TRUE, cond.SUCCEEDED,
                               _verified_message(source_revision, outcome.result),
                               w.generation)
            manifest_bytes = outcome.manifest
        else:
            cond.remove(w.conditions, cond.SOURCE_VERIFIED)
            w.status.pop("verification", None)
        m = manifest_bytes or await client.get_manifest(pinned)  # hashed against the digest
        if m.digest != digest:
            raise DigestMismatchError(f"manifest {m.digest} is not the resolved {digest}")
        layer = parse_manifest(m.data, m.media_type).select_layer(mt.HELM_CHART)
        if layer.size > CHART_DOWNLOAD_MAX:
            raise SizeLimitError(f"chart layer {layer.digest} is {layer.size} bytes, over the"
                                 f" {CHART_DOWNLOAD_MAX}-byte limit")
        blob = await client.fetch_blob(pinned, layer, max_size=CHART_DOWNLOAD_MAX)
    return await _from_archive(w, blob, version, revision, source_revision)


def _refused(w: _Work, message: str) -> Outcome:
    """A signature the policy refused: SourceVerified=False, the last chart kept."""
    cond.set_condition(w.conditions, cond.SOURCE_VERIFIED, cond.FALSE,
                       cond.VERIFICATION_ERROR, message, w.generation)
    cond.mark_failed(w.conditions, cond.VERIFICATION_ERROR, message, w.generation)
    w.status["observedGeneration"] = w.generation
    return Outcome(w.status, w.interval, [("Warning", cond.VERIFICATION_ERROR, message)],
                   failed=True)


# -- an archive from a repository ------------------------------------------------------------


async def _from_archive(w: _Work, data: bytes, version: str, revision: str,
                        source_revision: str) -> Outcome:
    """Check a downloaded chart archive; merge values files into it when asked."""
    spec = w.chart.spec
    deadline = time.monotonic() + EXTRACT_TIMEOUT
    loaded = await asyncio.to_thread(unpack_chart, io.BytesIO(data), _fresh(w.tmp / "chart"),
                                     deadline=deadline)
    if loaded.meta.name != spec.chart:
        raise ChartError(f"the archive of chart {spec.chart!r} holds chart"
                         f" {loaded.meta.name!r}")
    if loaded.meta.version != version:
        raise ChartError(f"the archive of {spec.chart} {version} holds version"
                         f" {loaded.meta.version!r}")
    out = w.tmp / "chart.tgz"
    found: tuple[str, ...] | None = None
    if spec.values_files:
        values, found = _values(loaded.root, "the chart", spec.values_files,
                                spec.ignore_missing_values_files)
        if values is not None:
            await asyncio.to_thread(package_chart, loaded.root, out, values=values)
            return await _store(w, out, loaded.meta, revision, source_revision, found,
                                packaged=True)
    out.write_bytes(data)
    return await _store(w, out, loaded.meta, revision, source_revision, found, packaged=False)


def _fresh(path: Path) -> Path:
    path.mkdir()
    return path


def _values(root: Path, where: str, files: tuple[str, ...], ignore_missing: bool,
            ) -> tuple[bytes | None, tuple[str, ...]]:
    """The merged values of ``files`` under ``root`` (``None`` when none was found and
    missing ones are ignored) and the files found."""
    docs: list[tuple[str, bytes]] = []
    for name in files:
        p = inside(root, relative_path(name, f"values file {name!r}"), f"values file {name!r}")
        if not p.is_file():
            if ignore_missing:
                continue
            raise ChartError(f"values file {name!r} not found in {where}")
        size = p.stat().st_size
        if size > CHART_MAX_FILE:
            raise SizeLimitError(f"values file {name!r} is {size} bytes, over the"
                                 f" {CHART_MAX_FILE}-byte limit")
        docs.append((name, p.read_bytes()))
    if not docs:
        return None, ()
    return merged_values(docs), tuple(n for n, _ in docs)


# -- GitRepository / OCIRepository -----------------------------------------------------------


async def _from_source(w: _Work) -> Outcome:
    spec = w.chart.spec
    ref = spec.source_ref
    art = await get_artifact(w.ctx.kube, w.ctx.cache, w.ctx.sources, w.ctx.served, ref.kind,
                             w.ns, ref.name)
    if spec.verify is not None:
        if ref.kind != "OCIRepository":
            raise InvalidChartSpecError(f"spec.verify applies to charts from an OCI registry:"
                                        f" a {ref.kind} source is not signed")
        if not art.authorities:
            return _refused(w, f"the artifact of source {art.ident} (revision"
                               f" {art.revision}) was not verified by any authority: set"
                               " spec.verify on the OCIRepository")
        cond.set_condition(w.conditions, cond.SOURCE_VERIFIED, cond.TRUE, cond.SUCCEEDED,
                           f"source {art.ident} verified revision {art.revision} by"
                           f" {', '.join(art.authorities)}", w.generation)
    else:
        cond.remove(w.conditions, cond.SOURCE_VERIFIED)
    art_status = w.status.get("artifact") or {}
    if (w.status.get("observedSourceArtifactRevision") == art.revision
            and art_status.get("revision") and w.unchanged(art_status["revision"])):
        return w.keep(art.revision)
    await w.working(f"building chart '{spec.chart}' from {art.ident} revision"
                    f" '{art.revision}'")
    src = _fresh(w.tmp / "source")
    deadline = time.monotonic() + EXTRACT_TIMEOUT
    await asyncio.to_thread(art.extract, src, deadline=deadline)
    chart_dir = inside(src, relative_path(spec.chart, "spec.chart"), "spec.chart")
    chart_yaml = chart_dir / "Chart.yaml"
    if not chart_yaml.is_file() or chart_yaml.is_symlink():
        raise ChartError(f"no chart at {spec.chart!r} in {art.ident} (no Chart.yaml)")
    if chart_yaml.stat().st_size > CHART_MAX_FILE:
        raise SizeLimitError(f"{spec.chart}/Chart.yaml is over the {CHART_MAX_FILE}-byte"
                             " limit")
    meta = parse_chart_yaml(chart_yaml.read_bytes(), f"{spec.chart}/Chart.yaml")
    revision = w.revision(meta.version, art.revision)
    if w.unchanged(revision):
        # ChartVersion: a new source revision with the same chart version is no new chart.
        return w.keep(art.revision)
    values, found = _values(src, art.ident, spec.values_files,
                            spec.ignore_missing_values_files) \
        if spec.values_files else (None, None)
    out = w.tmp / "chart.tgz"
    packaged = await asyncio.to_thread(package_chart, chart_dir, out, values=values)
    return await _store(w, out, packaged.meta, revision, art.revision, found, packaged=True)


# -- the artifact ------------------------------------------------------------------------------


async def _store(w: _Work, path: Path, meta: ChartMeta, revision: str, source_revision: str,
                 values_found: tuple[str, ...] | None, *, packaged: bool) -> Outcome:
    # A chart archive is at most CHART_DOWNLOAD_MAX (pulled) or a packaged chart of at
    # most CHART_LIMITS (100 MiB before compression): read once, hashed, stored.
    data = await asyncio.to_thread(path.read_bytes)
    data_digest = digest_of(data)
    if not w.ctx.cache.has(data_digest):
        await w.ctx.cache.store(data_digest, _bytes(data))
    old = w.status.get("artifact") or {}
    new = old.get("revision") != revision or old.get("digest") != data_digest
    name = w.chart.metadata.name
    w.status["artifact"] = to_dict(Artifact(
        digest=data_digest, revision=revision, size=len(data),
        path=f"helmchart/{w.ns}/{name}/{meta.name}-{revision}.tgz",
        url=w.ctx.cache.path(data_digest).as_uri(), last_update_time=cond.now_iso(),
        metadata={}))
    w.status["url"] = w.ctx.cache.path(data_digest).as_uri()
    w.status["observedChartName"] = w.chart.spec.chart
    w.status["observedSourceArtifactRevision"] = source_revision
    if values_found is not None:
        w.status["observedValuesFiles"] = list(values_found)
    else:
        w.status.pop("observedValuesFiles", None)
    w.status["observedGeneration"] = w.generation
    for ctype in (cond.FETCH_FAILED, cond.ARTIFACT_OUTDATED):
        cond.remove(w.conditions, ctype)
    verb = "packaged" if packaged else "pulled"
    msg = f"{verb} '{meta.name}' chart with version '{meta.version}'"
    cond.set_condition(w.conditions, cond.ARTIFACT_IN_STORAGE, cond.TRUE, cond.SUCCEEDED,
                       f"stored artifact: revision '{revision}'", w.generation)
    cond.mark_ready(w.conditions, cond.SUCCEEDED, msg, w.generation)
    events = [("Normal", cond.NEW_ARTIFACT, f"{msg}, revision '{revision}'")] if new else []
    return Outcome(w.status, w.interval, events, changed=new)


def references(obj: Mapping[str, Any]) -> list[ObjectKey]:
    """What wakes a HelmChart: its source."""
    ref = (obj.get("spec") or {}).get("sourceRef")
    ns = (obj.get("metadata") or {}).get("namespace") or ""
    if isinstance(ref, Mapping) and ref.get("name"):
        return [(str(ref.get("kind")), str(ns), str(ref["name"]))]
    return []


def _no_ignore(obj: Mapping[str, Any]) -> str | None:
    return None


#: HelmChart as a source (HelmRelease consumes it): the artifact is the chart archive.
SOURCE = SourceKind(kind=KIND, api_version=API_VERSION, ignore=_no_ignore)

#: HelmChart's place in the controller runtime (Flux's CLI says ``source chart``).
RECONCILER: Reconciler[HelmChartContext] = Reconciler(
    name="helmchart", kind=KIND, plural="helmcharts", status_type=HelmChartStatus,
    context=HelmChartContext.from_deps, reconcile=reconcile, source=SOURCE,
    references=references, aliases=("helmcharts", "hc", "chart"))
