"""GitRepository reconciliation, with source-controller's semantics.

Per interval: one ref lookup (``ls-remote``: one request over HTTP). Nothing more when the
resolved revision, the ignore rules, the sparse checkout, the verification mode and the
generation are unchanged and the artifact is still cached. A new commit is fetched
shallowly (depth 1, one object), its signatures verified when ``spec.verify`` asks,
archived in Flux's artifact format into the content-addressed cache, and consumers are
woken (``changed``). A failed fetch or verification never replaces the last good
artifact: the status says which signature or key failed and the artifact stays.

``spec.include``: the included GitRepositories' current artifacts (from this process's
cache) are grafted into the commit's tree before it is archived (:mod:`ocigitops.puller.
git.include`); an include without an artifact sets ``IncludeUnavailable`` and waits, and
``references`` makes a new artifact of an included repository wake the including ones.
The artifact is rebuilt when the included artifacts' revisions or digests change, as
source-controller decides it.

The Git work is blocking (dulwich, paramiko); it runs in a thread, bounded by
``spec.timeout`` (every read inside is bounded by the same deadline).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocigitops.errors import DeadlineExceededError, OcigitopsError, UsageError
from ocigitops.puller import conditions as cond
from ocigitops.puller.api.gitrepository import (
    INCLUDE_UNAVAILABLE,
    KIND,
    PLURAL,
    GitRepository,
    GitRepositoryInclude,
    GitRepositoryStatus,
    parse_git_repository,
)
from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.api.ocirepository import Artifact
from ocigitops.puller.api.schema import ValidationError, from_dict, to_dict
from ocigitops.puller.cache import ArtifactCache
from ocigitops.puller.git.auth import GitAuth, auth_from_secret, proxy_from_secret
from ocigitops.puller.git.client import (
    FetchResult,
    InvalidVerificationModeError,
    VerifyMode,
    fetch_artifact,
    lookup,
)
from ocigitops.puller.git.errors import (
    GitAuthError,
    GitURLError,
    SignatureError,
    UnsupportedGitFeatureError,
)
from ocigitops.puller.git.include import IncludeCopyError, IncludeDir
from ocigitops.puller.git.refs import RefSpec, Resolved
from ocigitops.puller.git.signatures import TrustedKeys, trusted_keys
from ocigitops.puller.git.transport import Remote
from ocigitops.puller.git.url import parse_git_url
from ocigitops.puller.kube import DynamicClient
from ocigitops.puller.reconcile import Outcome, prepare
from ocigitops.puller.runtime.reconciler import (
    Deps,
    ObjectKey,
    Progress,
    Reconciler,
    no_progress,
)
from ocigitops.puller.sources.contract import SourceKind

# Reasons, with source-controller's names.
GIT_OPERATION_FAILED = "GitOperationFailed"
INVALID_COMMIT_SIGNATURE = "InvalidCommitSignature"
INVALID_TAG_SIGNATURE = "InvalidTagSignature"
INVALID_VERIFICATION_MODE = "InvalidVerificationMode"
URL_INVALID = "URLInvalid"
UNSUPPORTED_FIELD = "UnsupportedField"
# IncludeUnavailable reasons: source-controller's, plus IncludeCycle (ours: Flux does not
# wake an including repository when an included one changes, so a cycle costs it nothing;
# here it would wake both forever).
INCLUDE_NOT_FOUND = "NotFound"
INCLUDE_NO_ARTIFACT = "NoArtifact"
INCLUDE_COPY_FAILURE = "CopyFailure"
INCLUDE_CYCLE = "IncludeCycle"
#: At most this many GitRepositories are read while looking for an include cycle.
MAX_INCLUDE_WALK = 32

#: Grace past ``spec.timeout`` before the reconcile stops waiting for the Git thread (the
#: thread stops itself at the deadline; this only covers a read already in flight).
_GRACE = 5.0


@dataclass
class GitContext:
    """The I/O a GitRepository reconcile needs (injected, so tests use real servers)."""

    kube: DynamicClient
    cache: ArtifactCache
    progress: Progress = no_progress

    @classmethod
    def from_deps(cls, deps: Deps) -> GitContext:
        """The context the runtime builds for this kind."""
        return cls(kube=deps.kube, cache=deps.cache, progress=deps.progress)


class _Stalled(OcigitopsError):
    """A spec problem only an edit fixes (reason carried along)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _ref_spec(repo: GitRepository) -> RefSpec:
    r = repo.spec.ref
    if r is None:
        return RefSpec()
    return RefSpec(branch=r.branch or None, tag=r.tag or None, semver=r.semver or None,
                   name=r.name or None, commit=r.commit or None)


def _unsupported(repo: GitRepository) -> str | None:
    spec = repo.spec
    if spec.provider != "generic":
        return (f"provider {spec.provider!r} is not supported yet: use provider generic with"
                " a secretRef")
    if spec.recurse_submodules:
        return ("spec.recurseSubmodules is not supported yet: include the submodules as"
                " GitRepositories, or remove the field")
    return None


async def _secret(ctx: GitContext, ns: str, name: str, what: str) -> Mapping[str, bytes]:
    data = await ctx.kube.secret_data(ns, name)
    if data is None:
        raise GitAuthError(f"{what} Secret {ns}/{name} not found")
    return data


async def _remote(ctx: GitContext, repo: GitRepository) -> Remote:
    ns = repo.metadata.namespace
    url = parse_git_url(repo.spec.url, allow_http=repo.spec.insecure)
    auth: GitAuth
    if repo.spec.secret_ref is not None:
        name = repo.spec.secret_ref.name
        data = await _secret(ctx, ns, name, "auth")
        auth = auth_from_secret(data, url, what=f"Secret {ns}/{name}")
    else:
        auth = auth_from_secret(None, url)
    proxy = None
    if repo.spec.proxy_secret_ref is not None:
        name = repo.spec.proxy_secret_ref.name
        proxy = proxy_from_secret(await _secret(ctx, ns, name, "proxy"),
                                  what=f"proxy Secret {ns}/{name}")
    return Remote(url=url, auth=auth, proxy=proxy, timeout=repo.spec.timeout_seconds)


async def _keys(ctx: GitContext, repo: GitRepository) -> TrustedKeys | None:
    v = repo.spec.verify
    if v is None:
        return None
    ns = repo.metadata.namespace
    data = await ctx.kube.secret_data(ns, v.secret_ref.name)
    if data is None:
        raise SignatureError(f"verification Secret {ns}/{v.secret_ref.name} not found")
    return trusted_keys(data, what=f"verification Secret {ns}/{v.secret_ref.name}")


async def _in_thread(fn: Any, limit: float, *args: Any, **kw: Any) -> Any:
    try:
        async with asyncio.timeout(limit + _GRACE):
            return await asyncio.to_thread(fn, *args, **kw)
    except TimeoutError:
        raise DeadlineExceededError(f"the Git operation did not finish within {limit:g}s"
                                    " (spec.timeout)") from None


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    # A local file we just wrote, read in 1 MiB chunks: as the cache's own reads.
    with open(path, "rb") as f:  # noqa: ASYNC230
        while chunk := f.read(1024 * 1024):
            yield chunk


class _IncludeUnavailable(OcigitopsError):
    """An include cannot be used now (``IncludeUnavailable=True`` with ``reason``);
    ``waiting``: it may become available by itself (no artifact yet)."""

    def __init__(self, reason: str, message: str, *, waiting: bool = False) -> None:
        super().__init__(message)
        self.reason, self.waiting = reason, waiting


@dataclass(frozen=True)
class _Included:
    """One ``spec.include`` entry and the included repository's current artifact."""

    spec: GitRepositoryInclude
    artifact: dict[str, Any]

    @property
    def digest(self) -> str:
        return str(self.artifact["digest"])


def _include_names(obj: Mapping[str, Any]) -> list[str]:
    out = []
    for inc in (obj.get("spec") or {}).get("include") or []:
        ref = inc.get("repository") if isinstance(inc, Mapping) else None
        if isinstance(ref, Mapping) and isinstance(ref.get("name"), str):
            out.append(ref["name"])
    return out


async def _check_cycle(ctx: GitContext, repo: GitRepository,
                       first: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse an include chain that leads back to ``repo`` (bounded walk)."""
    ns, me = repo.metadata.namespace, repo.metadata.name
    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [
        (i.repository.name, (me, i.repository.name)) for i in repo.spec.include]
    while todo:
        name, chain = todo.pop()
        if name == me:
            raise _IncludeUnavailable(INCLUDE_CYCLE, "include cycle: "
                                      + " -> ".join(chain))
        if name in seen:
            continue
        seen.add(name)
        if len(seen) > MAX_INCLUDE_WALK:
            raise _IncludeUnavailable(INCLUDE_CYCLE, f"includes of includes go deeper than"
                                      f" {MAX_INCLUDE_WALK} GitRepositories")
        obj = first.get(name)
        if obj is None:
            obj = await ctx.kube.get(API_VERSION, KIND, name, ns)
        if obj is not None:
            todo += [(n, (*chain, n)) for n in _include_names(obj)]


async def _includes(ctx: GitContext, repo: GitRepository) -> list[_Included]:
    """The included repositories' artifacts, as source-controller's fetchIncludes."""
    ns = repo.metadata.namespace
    found: dict[str, Mapping[str, Any]] = {}
    out: list[_Included] = []
    for inc in repo.spec.include:
        name = inc.repository.name
        obj = await ctx.kube.get(API_VERSION, KIND, name, ns)
        if obj is None:
            raise _IncludeUnavailable(INCLUDE_NOT_FOUND, f"could not get resource for include"
                                      f" '{name}': {KIND} {ns}/{name} not found",
                                      waiting=True)
        found[name] = obj
        raw = (obj.get("status") or {}).get("artifact")
        try:
            art = to_dict(from_dict(Artifact, raw), omit_empty=True) \
                if isinstance(raw, Mapping) else None
        except ValidationError:
            art = None
        if not art or not art.get("digest"):
            raise _IncludeUnavailable(INCLUDE_NO_ARTIFACT, f"no artifact available for"
                                      f" include '{name}'", waiting=True)
        if not ctx.cache.has(str(art["digest"])):
            # Another process's artifact (or one from before a restart): the included
            # repository's next reconcile stores it here and wakes us.
            raise _IncludeUnavailable(INCLUDE_NO_ARTIFACT, f"the artifact of include"
                                      f" '{name}' is not in this controller's storage yet",
                                      waiting=True)
        out.append(_Included(inc, art))
    await _check_cycle(ctx, repo, found)
    return out


def _observed_include(repo: GitRepository) -> list[dict[str, Any]]:
    return [to_dict(i, omit_empty=True) for i in repo.spec.include]


def _includes_unchanged(repo: GitRepository, status: Mapping[str, Any],
                        included: Sequence[_Included]) -> bool:
    """source-controller's gitContentConfigChanged, for the include part."""
    if list(status.get("observedInclude") or []) != _observed_include(repo):
        return False
    had = [(a.get("revision"), a.get("digest")) for a in status.get("includedArtifacts") or []
           if isinstance(a, Mapping)]
    return had == [(i.artifact.get("revision"), i.digest) for i in included]


def _mode(repo: GitRepository) -> VerifyMode | None:
    v = repo.spec.verify
    if v is None:
        return None
    return "HEAD" if v.mode == "head" else v.mode


def _up_to_date(repo: GitRepository, status: Mapping[str, Any],
                conditions: list[dict[str, Any]], generation: int, resolved: Resolved,
                cache: ArtifactCache, included: Sequence[_Included]) -> bool:
    art = status.get("artifact") or {}
    mode = _mode(repo)
    verified = mode is None or (status.get("sourceVerificationMode") == mode
                                and cond.is_true(conditions, cond.SOURCE_VERIFIED))
    return bool(art.get("revision") == resolved.revision
                and status.get("observedIgnore") == repo.spec.ignore
                and list(status.get("observedSparseCheckout") or [])
                == list(repo.spec.sparse_checkout)
                and status.get("observedGeneration") == generation
                and _includes_unchanged(repo, status, included)
                and verified and art.get("digest") and cache.has(art["digest"]))


def _fail(status: dict[str, Any], conditions: list[dict[str, Any]], generation: int,
          requeue: float | None, reason: str, message: str, *, stalled: bool = False,
          fetch: bool = True) -> Outcome:
    message = message.splitlines()[0] if message else reason
    if fetch:
        cond.set_condition(conditions, cond.FETCH_FAILED, cond.TRUE, reason, message,
                           generation)
    cond.mark_failed(conditions, reason, message, generation, stalled=stalled)
    status["observedGeneration"] = generation
    return Outcome(status, None if stalled else requeue, [("Warning", reason, message)],
                   failed=True)


async def reconcile(obj: Mapping[str, Any], ctx: GitContext) -> Outcome:
    """Reconcile one GitRepository object (a dict from the API server)."""
    prep = prepare(obj, GitRepositoryStatus, parse_git_repository)
    if isinstance(prep, Outcome):
        return prep
    repo, start = prep.obj, prep.start
    generation, status, conditions = start.generation, start.status, start.conditions
    interval = repo.spec.interval_seconds
    unsupported = _unsupported(repo)
    if unsupported:
        reason = cond.UNSUPPORTED_PROVIDER if repo.spec.provider != "generic" \
            else UNSUPPORTED_FIELD
        return _fail(status, conditions, generation, None, reason, unsupported,
                     stalled=True, fetch=False)
    try:
        return await _reconcile(obj, repo, ctx, status, conditions, generation, interval)
    except _Stalled as e:
        return _fail(status, conditions, generation, None, e.reason, str(e), stalled=True)
    except _IncludeUnavailable as e:
        cond.set_condition(conditions, INCLUDE_UNAVAILABLE, cond.TRUE, e.reason, str(e),
                           generation)
        out = _fail(status, conditions, generation, interval, e.reason, str(e), fetch=False)
        # Waiting: woken when the included repository gets its artifact (references),
        # polled at --requeue-dependency meanwhile.
        out.waiting = e.waiting
        return out
    except IncludeCopyError as e:
        cond.set_condition(conditions, INCLUDE_UNAVAILABLE, cond.TRUE, INCLUDE_COPY_FAILURE,
                           str(e), generation)
        return _fail(status, conditions, generation, interval, INCLUDE_COPY_FAILURE, str(e),
                     fetch=False)
    except (GitURLError, UsageError) as e:
        return _fail(status, conditions, generation, None, URL_INVALID, str(e), stalled=True,
                     fetch=False)
    except UnsupportedGitFeatureError as e:
        return _fail(status, conditions, generation, None, UNSUPPORTED_FIELD, str(e),
                     stalled=True, fetch=False)
    except InvalidVerificationModeError as e:
        cond.set_condition(conditions, cond.SOURCE_VERIFIED, cond.FALSE,
                           INVALID_VERIFICATION_MODE, str(e), generation)
        return _fail(status, conditions, generation, None, INVALID_VERIFICATION_MODE, str(e),
                     stalled=True, fetch=False)
    except SignatureError as e:
        reason = INVALID_TAG_SIGNATURE if "tag '" in str(e).split(":")[0] \
            else INVALID_COMMIT_SIGNATURE
        msg = f"signature verification failed: {e}"
        cond.set_condition(conditions, cond.SOURCE_VERIFIED, cond.FALSE, reason, msg,
                           generation)
        return _fail(status, conditions, generation, interval, reason, msg, fetch=False)
    except GitAuthError as e:
        return _fail(status, conditions, generation, interval, cond.AUTHENTICATION_FAILED,
                     str(e))
    except OcigitopsError as e:
        return _fail(status, conditions, generation, interval, GIT_OPERATION_FAILED, str(e))
    except Exception as e:  # whatever a server made a library raise
        return _fail(status, conditions, generation, interval, GIT_OPERATION_FAILED,
                     f"unexpected {type(e).__name__} while fetching: {str(e)[:300]}")


async def _reconcile(obj: Mapping[str, Any], repo: GitRepository, ctx: GitContext,
                     status: dict[str, Any], conditions: list[dict[str, Any]],
                     generation: int, interval: float) -> Outcome:
    remote = await _remote(ctx, repo)
    spec_ref = _ref_spec(repo)
    spec_ref.check()
    timeout = repo.spec.timeout_seconds
    included = await _includes(ctx, repo)
    cond.remove(conditions, INCLUDE_UNAVAILABLE)
    _refs, resolved = await _in_thread(lookup, timeout, remote, spec_ref)
    if _up_to_date(repo, status, conditions, generation, resolved, ctx.cache, included):
        cond.remove(conditions, cond.FETCH_FAILED)
        cond.remove(conditions, cond.ARTIFACT_OUTDATED)
        cond.mark_ready(conditions, cond.SUCCEEDED,
                        f"stored artifact for revision '{resolved.revision}'", generation)
        return Outcome(status, interval)

    art = status.get("artifact") or {}
    msg = f"building artifact: new revision '{resolved.revision}' for '{repo.spec.url}'"
    if art.get("revision") not in (None, resolved.revision):
        cond.set_condition(conditions, cond.ARTIFACT_OUTDATED, cond.TRUE, "NewRevision", msg,
                           generation)
    cond.mark_reconciling(conditions, cond.PROGRESSING, msg, generation)
    await ctx.progress(obj, status)
    keys = await _keys(ctx, repo)
    mode = _mode(repo)
    ns, name = repo.metadata.namespace, repo.metadata.name
    with tempfile.TemporaryDirectory(prefix="ocigitops-gitart-") as tmp:
        path = Path(tmp) / "artifact.tar.gz"
        dirs = await _unpack_includes(ctx, included, Path(tmp), timeout)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            result: FetchResult = await _in_thread(
                fetch_artifact, timeout, remote, resolved, out, verify=mode, keys=keys,
                ignore=repo.spec.ignore, sparse=repo.spec.sparse_checkout, includes=dirs)
        digest = result.archive.digest
        if not ctx.cache.has(digest):
            await ctx.cache.store(digest, _chunks(path))
    if mode is not None:
        status["sourceVerificationMode"] = mode
        cond.set_condition(conditions, cond.SOURCE_VERIFIED, cond.TRUE, cond.SUCCEEDED,
                           "verified signature of " + ", ".join(result.verified), generation)
    else:
        status.pop("sourceVerificationMode", None)
        cond.remove(conditions, cond.SOURCE_VERIFIED)
    status["artifact"] = to_dict(Artifact(
        digest=digest, path=f"gitrepository/{ns}/{name}/{resolved.commit}.tar.gz",
        url=ctx.cache.path(digest).as_uri(), revision=resolved.revision,
        last_update_time=cond.now_iso(), size=result.archive.size), omit_empty=True)
    status["observedIgnore"] = repo.spec.ignore
    status["observedRecurseSubmodules"] = repo.spec.recurse_submodules
    status["observedSparseCheckout"] = list(repo.spec.sparse_checkout)
    status["observedInclude"] = _observed_include(repo)
    status["includedArtifacts"] = [i.artifact for i in included]
    status["observedGeneration"] = generation
    for key in ("observedSparseCheckout", "observedInclude", "includedArtifacts"):
        if not status[key]:
            status.pop(key)
    if status.get("observedIgnore") is None:
        status.pop("observedIgnore", None)
    cond.remove(conditions, cond.FETCH_FAILED)
    cond.remove(conditions, cond.ARTIFACT_OUTDATED)
    message = f"stored artifact for revision '{resolved.revision}'"
    cond.set_condition(conditions, cond.ARTIFACT_IN_STORAGE, cond.TRUE, cond.SUCCEEDED,
                       message, generation)
    cond.mark_ready(conditions, cond.SUCCEEDED, message, generation)
    new = art.get("revision") != resolved.revision or art.get("digest") != digest
    events: list[tuple[str, str, str]] = []
    if new:
        events.append(("Normal", cond.NEW_ARTIFACT,
                       f"stored artifact for commit '{result.subject}'"))
    return Outcome(status, interval, events, changed=new)


async def _unpack_includes(ctx: GitContext, included: Sequence[_Included], tmp: Path,
                           limit: float) -> list[IncludeDir]:
    """Each included artifact unpacked from the cache (its digest verified while
    reading) under ``tmp``."""
    out = []
    for n, inc in enumerate(included):
        root = tmp / f"include-{n}"
        deadline = time.monotonic() + limit
        await _in_thread(ctx.cache.extract, limit, inc.digest, root, deadline=deadline)
        out.append(IncludeDir(name=inc.spec.repository.name, root=root,
                              from_path=inc.spec.from_path or "", to_path=inc.spec.target))
    return out


def references(obj: Mapping[str, Any]) -> Iterable[ObjectKey]:
    """What wakes a GitRepository: the GitRepositories it includes."""
    ns = str((obj.get("metadata") or {}).get("namespace") or "")
    return [(KIND, ns, name) for name in _include_names(obj)]


def _no_ignore(obj: Mapping[str, Any]) -> str | None:
    # spec.ignore is applied when the artifact is built, as source-controller does:
    # consumers get it already filtered.
    return None


#: GitRepository as a source others consume (the source contract).
SOURCE = SourceKind(kind=KIND, api_version=API_VERSION, ignore=_no_ignore)

#: GitRepository's place in the controller runtime.
RECONCILER: Reconciler[GitContext] = Reconciler(
    name="git", kind=KIND, plural=PLURAL, status_type=GitRepositoryStatus,
    context=GitContext.from_deps, reconcile=reconcile, source=SOURCE, references=references,
    aliases=("gitrepository", "gitrepositories"))

__all__ = ["KIND", "RECONCILER", "SOURCE", "GitContext", "reconcile", "references"]
