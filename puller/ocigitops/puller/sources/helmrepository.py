"""HelmRepository reconciliation, with Flux's semantics.

``type: default`` (HTTP/S): each interval, one request for ``<url>/index.yaml``. With the
``ETag``/``Last-Modified`` of the last fetch it is conditional, so an unchanged index costs
one ``304`` answer and nothing else. A changed index is read strictly (bounded at
:data:`~ocigitops.puller.helmsource.index.INDEX_MAX_BYTES`, no aliases, no duplicate keys)
and stored in the content-addressed cache as the artifact, revision and digest
``sha256:<digest of the index>`` (Flux's). A failed fetch keeps the last index: HelmCharts
keep building from it, and the status says what failed.

``type: oci``: accepted as Flux accepts it. There is nothing to fetch: the object is Ready
with no artifact, and HelmCharts pull ``<url>/<chart>:<version>`` themselves.

The validators of the last fetch are kept in memory (per object, with the URL and
generation they belong to): after a restart the first fetch is a full one, which finds
the same digest and changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ocigitops.digests import digest_of
from ocigitops.errors import (
    AuthenticationError,
    CredentialsError,
    DeadlineExceededError,
    OcigitopsError,
    PermissionDeniedError,
)
from ocigitops.puller import conditions as cond
from ocigitops.puller.api.helmrepository import (
    KIND,
    HelmRepository,
    HelmRepositoryStatus,
    parse_helm_repository,
)
from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.api.ocirepository import Artifact
from ocigitops.puller.api.schema import to_dict
from ocigitops.puller.cache import ArtifactCache
from ocigitops.puller.helmsource.http import (
    BasicAuth,
    HelmHTTP,
    TLSMaterial,
    basic_auth_from_secret,
    tls_from_secret,
)
from ocigitops.puller.helmsource.index import INDEX_MAX_BYTES, index_url, parse_index
from ocigitops.puller.kube import DynamicClient
from ocigitops.puller.reconcile import Outcome, prepare
from ocigitops.puller.runtime.reconciler import Deps, Progress, Reconciler, no_progress
from ocigitops.puller.sources.contract import SourceKind

#: Flux's reasons for a HelmRepository that failed.
INDEXATION_FAILED = "IndexationFailed"
OCI_READY_MESSAGE = ("Helm repository is Ready (type oci: HelmCharts pull their charts"
                     " from it; OCIRepository is the recommended way to consume OCI charts)")


@dataclass(frozen=True)
class Validators:
    """What the last full fetch of an index answered, to make the next one conditional."""

    url: str
    generation: int
    digest: str
    etag: str | None
    last_modified: str | None


@dataclass
class HelmRepositoryContext:
    """The I/O a HelmRepository reconcile needs (injected, so tests use real servers)."""

    kube: DynamicClient
    cache: ArtifactCache
    #: Builds the HTTP client of one repository (``HelmHTTP``'s signature).
    http: Callable[..., HelmHTTP] = HelmHTTP
    validators: dict[tuple[str, str], Validators] = field(default_factory=dict)
    progress: Progress = no_progress

    @classmethod
    def from_deps(cls, deps: Deps) -> HelmRepositoryContext:
        """The context the runtime builds for this kind."""
        return cls(kube=deps.kube, cache=deps.cache, progress=deps.progress)


async def repository_access(kube: DynamicClient, repo: HelmRepository,
                            ) -> tuple[BasicAuth | None, TLSMaterial | None]:
    """The credentials and TLS material ``secretRef`` and ``certSecretRef`` name (Secrets
    in the HelmRepository's namespace). HelmCharts use the same to download charts."""
    ns = repo.metadata.namespace
    auth: BasicAuth | None = None
    tls: TLSMaterial | None = None
    if repo.spec.secret_ref is not None:
        where = f"Secret {ns}/{repo.spec.secret_ref.name}"
        data = await kube.secret_data(ns, repo.spec.secret_ref.name)
        if data is None:
            raise CredentialsError(f"{where} not found")
        auth = basic_auth_from_secret(data, where)
    if repo.spec.cert_secret_ref is not None:
        where = f"Secret {ns}/{repo.spec.cert_secret_ref.name}"
        data = await kube.secret_data(ns, repo.spec.cert_secret_ref.name)
        if data is None:
            raise CredentialsError(f"{where} not found")
        tls = tls_from_secret(data, where)
    return auth, tls


def unsupported_provider(provider: str) -> str | None:
    """The message for a cloud provider (not implemented), or None for ``generic``."""
    if provider == "generic":
        return None
    return (f"provider {provider!r} is not supported yet: use a secretRef with the"
            " registry credentials")


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def reconcile(obj: Mapping[str, Any], ctx: HelmRepositoryContext) -> Outcome:
    """Reconcile one HelmRepository object (a dict from the API server)."""
    prep = prepare(obj, HelmRepositoryStatus, parse_helm_repository)
    if isinstance(prep, Outcome):
        return prep
    repo, start = prep.obj, prep.start
    generation, status, conditions = start.generation, start.status, start.conditions
    msg = unsupported_provider(repo.spec.provider)
    if msg is not None:
        cond.mark_failed(conditions, cond.UNSUPPORTED_PROVIDER, msg, generation, stalled=True)
        status["observedGeneration"] = generation
        return Outcome(status, None, [("Warning", cond.UNSUPPORTED_PROVIDER, msg)],
                       failed=True)
    if repo.spec.is_oci:
        was_ready = cond.is_true(conditions, cond.READY)
        for ctype in (cond.FETCH_FAILED, cond.ARTIFACT_IN_STORAGE, cond.ARTIFACT_OUTDATED):
            cond.remove(conditions, ctype)
        status.pop("artifact", None)
        status.pop("url", None)
        cond.mark_ready(conditions, cond.SUCCEEDED, OCI_READY_MESSAGE, generation)
        status["observedGeneration"] = generation
        # Nothing to poll: a spec change brings the object back.
        return Outcome(status, None, changed=not was_ready)
    interval = repo.spec.interval_seconds
    try:
        async with asyncio.timeout(repo.spec.timeout_seconds):
            return await _reconcile(obj, repo, ctx, status, conditions, generation, interval)
    except TimeoutError:
        return _failed(status, conditions, generation, interval, DeadlineExceededError(
            f"fetching the index did not finish within {repo.spec.timeout_seconds:g}s"
            " (spec.timeout)"))
    except OcigitopsError as e:
        return _failed(status, conditions, generation, interval, e)
    except Exception as e:  # whatever a server made us raise: still a failed fetch
        return _failed(status, conditions, generation, interval, OcigitopsError(
            f"unexpected {type(e).__name__} while fetching the index: {e}"))


def _failed(status: dict[str, Any], conditions: list[dict[str, Any]], generation: int,
            interval: float, e: Exception) -> Outcome:
    # From the error's type, never from words in its message.
    reason = cond.AUTHENTICATION_FAILED if isinstance(
        e, AuthenticationError | PermissionDeniedError | CredentialsError) \
        else INDEXATION_FAILED
    message = str(e).splitlines()[0] if str(e) else type(e).__name__
    if status.get("artifact"):
        message += " (the last index is kept)"
    cond.set_condition(conditions, cond.FETCH_FAILED, cond.TRUE, reason, message, generation)
    cond.mark_failed(conditions, reason, message, generation)
    status["observedGeneration"] = generation
    return Outcome(status, interval, [("Warning", reason, message)], failed=True)


async def _reconcile(obj: Mapping[str, Any], repo: HelmRepository, ctx: HelmRepositoryContext,
                     status: dict[str, Any], conditions: list[dict[str, Any]],
                     generation: int, interval: float) -> Outcome:
    ns, name = repo.metadata.namespace, repo.metadata.name
    url = index_url(repo.spec.url)
    artifact = status.get("artifact") or {}
    stored = artifact.get("digest")
    have = isinstance(stored, str) and bool(stored) and ctx.cache.has(stored)
    last = ctx.validators.get((ns, name))
    conditional = (last is not None and have and last.url == url
                   and last.generation == generation and last.digest == stored)
    if not have or status.get("observedGeneration") != generation:
        cond.mark_reconciling(conditions, cond.PROGRESSING,
                              f"fetching index of '{repo.spec.url}'", generation)
        await ctx.progress(obj, status)
    auth, tls = await repository_access(ctx.kube, repo)
    async with ctx.http(repo.spec.url, auth=auth, tls=tls,
                        pass_credentials=repo.spec.pass_credentials,
                        timeout=repo.spec.timeout_seconds) as http:
        fetched = await http.fetch(url, max_bytes=INDEX_MAX_BYTES, what="repository index",
                                   etag=last.etag if conditional and last else None,
                                   last_modified=last.last_modified
                                   if conditional and last else None)
    if not fetched.modified:
        return _ready(status, conditions, generation, interval, str(stored), new=False)
    # PyYAML reads about 1 MB a second: off the event loop, so other reconciles go on.
    index = await asyncio.to_thread(parse_index, fetched.body)
    digest = digest_of(fetched.body)
    if not ctx.cache.has(digest):
        await ctx.cache.store(digest, _chunks(fetched.body))
    ctx.validators[(ns, name)] = Validators(url, generation, digest, fetched.etag,
                                            fetched.last_modified)
    new = stored != digest
    if new or not artifact:
        status["artifact"] = to_dict(Artifact(
            digest=digest, revision=digest, size=len(fetched.body),
            path=f"helmrepository/{ns}/{name}/index-{digest.partition(':')[2]}.yaml",
            url=ctx.cache.path(digest).as_uri(), last_update_time=cond.now_iso(),
            metadata={}))
    status["url"] = ctx.cache.path(digest).as_uri()
    outcome = _ready(status, conditions, generation, interval, digest, new=new)
    if new:
        charts = sum(len(v) for v in index.entries.values())
        outcome.events.append(("Normal", cond.NEW_ARTIFACT,
                               f"fetched index of size {len(fetched.body)} bytes"
                               f" ({len(index.entries)} charts, {charts} versions) from"
                               f" '{repo.spec.url}'"))
    return outcome


def _ready(status: dict[str, Any], conditions: list[dict[str, Any]], generation: int,
           interval: float, revision: str, *, new: bool) -> Outcome:
    for ctype in (cond.FETCH_FAILED, cond.ARTIFACT_OUTDATED):
        cond.remove(conditions, ctype)
    msg = f"stored artifact: revision '{revision}'"
    cond.set_condition(conditions, cond.ARTIFACT_IN_STORAGE, cond.TRUE, cond.SUCCEEDED, msg,
                       generation)
    cond.mark_ready(conditions, cond.SUCCEEDED, msg, generation)
    status["observedGeneration"] = generation
    return Outcome(status, interval, [], changed=new)


def _no_ignore(obj: Mapping[str, Any]) -> str | None:
    return None


#: HelmRepository as a source HelmCharts consume (its artifact is the index, not a
#: tarball: HelmCharts read it with :func:`~ocigitops.puller.helmsource.index.read_cached`).
SOURCE = SourceKind(kind=KIND, api_version=API_VERSION, ignore=_no_ignore)

#: HelmRepository's place in the controller runtime. ``helm`` is the word Flux's CLI uses
#: (``flux get sources helm``); ``hr`` is HelmRelease's and is not taken.
RECONCILER: Reconciler[HelmRepositoryContext] = Reconciler(
    name="helmrepository", kind=KIND, plural="helmrepositories",
    status_type=HelmRepositoryStatus, context=HelmRepositoryContext.from_deps,
    reconcile=reconcile, source=SOURCE, aliases=("helmrepositories", "helmrepo", "helm"))
