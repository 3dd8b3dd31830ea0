"""Day-to-day operations on our objects: list, request a reconcile, suspend, resume, and
wait for the rollout of a pushed digest.

The CLI's ``get``, ``reconcile``, ``suspend`` and ``resume`` commands are thin shells over
these functions, which tests call directly. The functions taking a ``kubeconfig`` are whole
commands (they open and close the API client); the ones taking a
:class:`~ocigitops.puller.kube.DynamicClient` work on an open one.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx

from ocigitops.errors import DeadlineExceededError, OcigitopsError, UsageError
from ocigitops.puller import conditions as cond
from ocigitops.puller.api.meta import API_VERSION, RECONCILE_REQUESTED_AT
from ocigitops.puller.kube import DynamicClient, KubeError
from ocigitops.table import format_table
from ocigitops.version import __version__

#: Flux's default ``--timeout``, also the default here.
DEFAULT_TIMEOUT = 300.0


@dataclass(frozen=True)
class Cluster:
    """How to reach the cluster: the flags every cluster command takes, as Flux's
    (``--kubeconfig``, ``--context``, ``--timeout``; the namespace is per command)."""

    kubeconfig: str | None = None
    context: str | None = None
    #: Deadline of the whole command, seconds.
    timeout: float = DEFAULT_TIMEOUT


@dataclass
class Row:
    """One line of ``get``."""

    namespace: str
    name: str
    revision: str
    suspended: bool
    ready: str
    message: str

    def to_json(self) -> dict[str, Any]:
        """The row for ``-o json|yaml``."""
        return {"namespace": self.namespace, "name": self.name, "revision": self.revision,
                "suspended": self.suspended, "ready": self.ready, "message": self.message}


def _row(obj: dict[str, Any], kind: str) -> Row:
    md, st = obj.get("metadata") or {}, obj.get("status") or {}
    ready = cond.find(list(st.get("conditions") or []), cond.READY) or {}
    if kind == "HelmRelease":
        # As flux get hr: the chart version of the newest release revision.
        history = st.get("history") or [{}]
        revision = history[0].get("chartVersion") or st.get("lastAttemptedRevision", "")
    else:
        revision = ((st.get("artifact") or {}).get("revision", "")
                    if kind in SOURCE_KINDS.values() else st.get("lastAppliedRevision", ""))
    return Row(md.get("namespace", ""), md.get("name", ""), str(revision or ""),
               bool((obj.get("spec") or {}).get("suspend")), str(ready.get("status", "Unknown")),
               str(ready.get("message", "")))


async def list_objects(dyn: DynamicClient, kind: str, namespace: str | None) -> list[Row]:
    """Rows for every object of ``kind`` (in ``namespace``, or all when None)."""
    objs = await dyn.list(API_VERSION, kind, namespace)
    return sorted((_row(o, kind) for o in objs), key=lambda r: (r.namespace, r.name))


async def _get(dyn: DynamicClient, kind: str, name: str, namespace: str) -> dict[str, Any]:
    obj = await dyn.get(API_VERSION, kind, name, namespace)
    if obj is None:
        raise KubeError(f"{kind} {namespace}/{name} not found", status=404, reason="NotFound")
    return obj


async def request_reconcile(dyn: DynamicClient, kind: str, name: str, namespace: str, *,
                            wait: float = 120.0) -> Row:
    """Annotate ``requestedAt`` and wait until the controller handled it; the final row.

    Raises when the object is suspended, when the wait runs out, or when it ends not Ready.
    """
    obj = await _get(dyn, kind, name, namespace)
    if (obj.get("spec") or {}).get("suspend"):
        raise OcigitopsError(f"{kind} {namespace}/{name} is suspended: resume it first")
    token = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9}Z"
    await dyn.patch_metadata(API_VERSION, kind, name, namespace,
                             {"annotations": {RECONCILE_REQUESTED_AT: token}})
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        obj = await _get(dyn, kind, name, namespace)
        st = obj.get("status") or {}
        ready = cond.find(list(st.get("conditions") or []), cond.READY) or {}
        handled = st.get("lastHandledReconcileAt") == token
        # A failure that will be retried keeps Reconciling=True with reason
        # ProgressingWithRetry (a source or dependency not ready yet, a failed apply): that
        # is the answer to this request, not "still working"; waiting for Reconciling to
        # clear would end in a misleading "did not handle the request" after the timeout.
        working = (cond.find(list(st.get("conditions") or []), cond.RECONCILING) or {}).get(
            "reason") not in (None, cond.PROGRESSING_WITH_RETRY)
        done = handled and ready.get("status") in (cond.TRUE, cond.FALSE) and not working
        if done:
            row = _row(obj, kind)
            if row.ready != cond.TRUE:
                raise OcigitopsError(f"{kind} {namespace}/{name} reconciliation failed:"
                                     f" {row.message}")
            return row
        await asyncio.sleep(0.5)
    raise OcigitopsError(f"{kind} {namespace}/{name}: the controller did not handle the"
                         f" request within {wait:.0f}s (is it running?)")


async def set_suspend(dyn: DynamicClient, kind: str, name: str, namespace: str,
                      suspend: bool) -> None:
    """Set ``spec.suspend``."""
    await _get(dyn, kind, name, namespace)
    await dyn.merge_patch(API_VERSION, kind, name, namespace, {"spec": {"suspend": suspend}})


# -- whole commands: open the API client from a kubeconfig, act, close ----------------------


@asynccontextmanager
async def connect(cluster: Cluster | str | None) -> AsyncIterator[DynamicClient]:
    """An API client for ``cluster`` (a bare kubeconfig path or None is accepted too),
    closed on exit; the block must end within ``cluster.timeout``.

    A kubeconfig that cannot be read (ConfigurationError naming the file tried), an API
    server that cannot be reached (ClusterUnreachableError naming server, context and
    kubeconfig) and a deadline that passes (DeadlineExceededError) are one line for the
    user, as every other failure, not a traceback.
    """
    if not isinstance(cluster, Cluster):
        cluster = Cluster(kubeconfig=cluster)
    dyn = DynamicClient.from_kubeconfig(cluster.kubeconfig, context=cluster.context,
                                        timeout=min(cluster.timeout, 30.0))
    try:
        async with asyncio.timeout(cluster.timeout):
            yield dyn
    except httpx.TransportError as e:
        raise dyn.unreachable(e) from e
    except TimeoutError as e:
        raise DeadlineExceededError(f"the cluster work did not finish within"
                                    f" {cluster.timeout:g}s (--timeout)") from e
    finally:
        await dyn.aclose()


@dataclass(frozen=True)
class Target:
    """One object a command names: its kind and name (the namespace comes separately)."""

    kind: str
    name: str


#: ``source <word>``: the source kinds, as Flux's CLI names them (``source helm`` is
#: HelmRepository, ``source chart`` HelmChart; ``hr`` is HelmRelease's).
SOURCE_KINDS = {"oci": "OCIRepository", "git": "GitRepository", "helm": "HelmRepository",
                "chart": "HelmChart"}

#: The words naming a kind on the command line, as Flux's CLI takes them.
KIND_WORDS = ("source", "kustomization", "ks", "helmrelease", "hr")

#: The words of the kinds named by one word (not ``source``), and their kind.
CONSUMER_KINDS = {"kustomization": "Kustomization", "ks": "Kustomization",
                  "helmrelease": "HelmRelease", "hr": "HelmRelease"}


def parse_target(kind: str, args: Sequence[str], *, all_: bool = False) -> Target:
    """The object named by ``source oci|git NAME``, ``kustomization|ks NAME`` or
    ``helmrelease|hr NAME``
    (``kind`` is the first word, ``args`` the rest). With ``all_`` the name is left out
    and ``name`` is empty. Raises UsageError showing the expected form."""
    name = "" if all_ else "NAME"
    if kind == "source":
        words = "|".join(SOURCE_KINDS)
        if len(args) != (1 if all_ else 2) or args[0] not in SOURCE_KINDS:
            raise UsageError(f"usage: source {words} {name}".rstrip() + (
                f" (source kinds here: {', '.join(SOURCE_KINDS)})"
                if args and args[0] not in SOURCE_KINDS else ""))
        return Target(SOURCE_KINDS[args[0]], "" if all_ else args[1])
    if kind not in CONSUMER_KINDS:
        raise UsageError(f"unknown kind {kind!r}: use {', '.join(KIND_WORDS)}")
    if len(args) != (0 if all_ else 1):
        raise UsageError(f"usage: {kind} {name}".rstrip() + (" (--all names no object)"
                                                          if all_ else ""))
    return Target(CONSUMER_KINDS[kind], "" if all_ else args[0])


async def get_objects(cluster: Cluster | str | None, kind: str,
                      namespace: str | None) -> list[Row]:
    """``get``: rows for every object of ``kind`` in ``namespace`` (None: all of them)."""
    async with connect(cluster) as dyn:
        return await list_objects(dyn, kind, namespace)


def objects_table(rows: Sequence[Row], all_namespaces: bool) -> str:
    """The table ``get`` prints; with a NAMESPACE column first for ``--all-namespaces``."""
    head = ["NAME", "REVISION", "SUSPENDED", "READY", "MESSAGE"]
    table = [(["NAMESPACE"] if all_namespaces else []) + head]
    table += [([r.namespace] if all_namespaces else [])
              + [r.name, r.revision, str(r.suspended), r.ready, r.message] for r in rows]
    return format_table(table)


@dataclass(frozen=True)
class ReconcileResult:
    """A reconcile the controller handled: the object and its final row."""

    target: Target
    namespace: str
    row: Row
    #: The source's row when it was reconciled first (``--with-source``).
    source: Row | None = None

    def summary(self) -> str:
        """One line: ``Kustomization NS/NAME reconciled: MESSAGE``."""
        return (f"{self.target.kind} {self.namespace}/{self.target.name} reconciled:"
                f" {self.row.message}")

    def to_json(self) -> dict[str, Any]:
        """The result for ``-o json|yaml``."""
        return {"kind": self.target.kind, "namespace": self.namespace,
                "name": self.target.name, "status": self.row.to_json(),
                "source": self.source.to_json() if self.source else None}


async def reconcile(kubeconfig: Cluster | str | None, target: Target, namespace: str, *,
                    with_source: bool = False, wait: float = 120.0) -> ReconcileResult:
    """``reconcile``: ask the controller to reconcile ``target`` now and wait for it.

    With ``with_source``, a Kustomization's source (a HelmRelease's ``chartRef``) is
    reconciled first (in the source's namespace, default the object's), so the object is
    built from the newest
    artifact. ``wait`` bounds each wait for the controller, in seconds. Raises as
    :func:`request_reconcile` does.
    """
    if not isinstance(kubeconfig, Cluster):
        kubeconfig = Cluster(kubeconfig=kubeconfig)
    # A few seconds past the waits, so a wait that runs out reports "the controller did
    # not handle the request" (the useful message) rather than the bare deadline.
    async with connect(replace(kubeconfig, timeout=kubeconfig.timeout + 10)) as dyn:
        source = None
        if with_source and target.kind in ("Kustomization", "HelmRelease"):
            obj = await dyn.get(API_VERSION, target.kind, target.name, namespace)
            field = "sourceRef" if target.kind == "Kustomization" else "chartRef"
            ref = ((obj or {}).get("spec") or {}).get(field) or {}
            if ref.get("name"):
                source = await request_reconcile(dyn, ref.get("kind", "OCIRepository"),
                                                 ref["name"], ref.get("namespace") or namespace,
                                                 wait=wait)
        row = await request_reconcile(dyn, target.kind, target.name, namespace, wait=wait)
    return ReconcileResult(target=target, namespace=namespace, row=row, source=source)


@dataclass(frozen=True)
class SuspendResult:
    """The objects whose ``spec.suspend`` was set, and to what."""

    target: Target
    namespace: str
    suspended: bool
    #: The names changed (one, or every object of the kind with ``--all``).
    names: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line per object: ``Kustomization NS/NAME suspended`` (or ``resumed``);
        ``no Kustomization in NS`` when ``--all`` found none."""
        state = "suspended" if self.suspended else "resumed"
        names = self.names or (self.target.name,)
        if names == ("",):
            return f"no {self.target.kind} in namespace {self.namespace}"
        return "\n".join(f"{self.target.kind} {self.namespace}/{n} {state}" for n in names)

    def to_json(self) -> dict[str, Any]:
        """The result for ``-o json|yaml``."""
        return {"kind": self.target.kind, "namespace": self.namespace,
                "suspended": self.suspended,
                "names": [n for n in (self.names or (self.target.name,)) if n]}


async def suspend(kubeconfig: Cluster | str | None, target: Target, namespace: str,
                  suspended: bool = True) -> SuspendResult:
    """``suspend`` (``suspended=True``) or ``resume`` (False) reconciliation of ``target``;
    of every object of its kind in ``namespace`` when ``target.name`` is empty (``--all``,
    as Flux's)."""
    async with connect(kubeconfig) as dyn:
        if target.name:
            names: tuple[str, ...] = (target.name,)
        else:
            names = tuple(r.name for r in await list_objects(dyn, target.kind, namespace))
        for name in names:
            await set_suspend(dyn, target.kind, name, namespace, suspended)
    return SuspendResult(target=target, namespace=namespace, suspended=suspended,
                         names=names or ("",))


# -- version ------------------------------------------------------------------------------

#: Where ``deploy/`` installs the controller, and the label carrying its version.
CONTROLLER_NAMESPACE = "ocigitops-system"
CONTROLLER_DEPLOYMENT = "ocigitops-controller"
VERSION_LABEL = "app.kubernetes.io/version"


@dataclass(frozen=True)
class VersionInfo:
    """``version``: the client's, and what the cluster says when it was asked."""

    client: str
    #: The controller Deployment's version, None when not asked or not found.
    controller: str | None = None
    #: The API server's ``gitVersion``.
    server: str | None = None
    #: Why the controller version is missing (no cluster, not installed), or None.
    note: str | None = None

    def lines(self) -> list[str]:
        """``ocigitops: v0.1.0`` and, when known, ``controller:``/``kubernetes:`` lines."""
        out = [f"ocigitops: v{self.client}"]
        if self.controller:
            out.append(f"controller: {self.controller}")
        if self.server:
            out.append(f"kubernetes: {self.server}")
        return out

    def to_json(self) -> dict[str, Any]:
        """The result for ``-o json|yaml``."""
        return {"client": f"v{self.client}", "controller": self.controller,
                "kubernetes": self.server}


def _deployment_version(dep: dict[str, Any]) -> str | None:
    # The version label deploy/ sets (kept equal to the image tag), else the image tag:
    # both say what was deployed; neither can be checked against the running code.
    label = ((dep.get("metadata") or {}).get("labels") or {}).get(VERSION_LABEL)
    if label:
        return str(label)
    containers = ((((dep.get("spec") or {}).get("template") or {}).get("spec") or {})
                  .get("containers") or [])
    image = str((containers[0] if containers else {}).get("image", ""))
    name, _, tag = image.rpartition(":")
    return tag if name and "/" not in tag else None


async def versions(cluster: Cluster | None, namespace: str = CONTROLLER_NAMESPACE,
                   ) -> VersionInfo:
    """``version``: the client version and, with ``cluster``, the controller's (from its
    Deployment's version label or image tag in ``namespace``) and the API server's.

    A cluster that cannot be reached or has no controller is not an error here: the
    client version is still the answer, and ``note`` says why the rest is missing.
    """
    if cluster is None:
        return VersionInfo(__version__)
    try:
        async with connect(cluster) as dyn:
            server = await dyn.server_version()
            dep = await dyn.get("apps/v1", "Deployment", CONTROLLER_DEPLOYMENT, namespace)
    except OcigitopsError as e:
        return VersionInfo(__version__, note=f"controller version unknown: {e}")
    if dep is None:
        return VersionInfo(__version__, server=server,
                           note=f"no controller: Deployment {namespace}/"
                                f"{CONTROLLER_DEPLOYMENT} not found")
    return VersionInfo(__version__, controller=_deployment_version(dep) or "unknown",
                       server=server)


# -- wait rollout: tell CI what the cluster did with a digest it pushed ---------------------

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class RolloutTarget:
    """``oci://REPO[:TAG]@DIGEST``: what CI pushed. With TAG, an OCIRepository that follows
    that tag is expected to resolve to DIGEST (CI just pushed it there)."""

    repository: str
    digest: str
    tag: str = ""

    @classmethod
    def parse(cls, url: str) -> RolloutTarget:
        """Raises UsageError unless ``url`` is ``oci://REPO[:TAG]@sha256:<hex>``."""
        if not url.startswith("oci://") or "@" not in url:
            raise UsageError(f"{url!r}: wait rollout takes oci://REPOSITORY[:TAG]@DIGEST (the"
                             " digest push artifact printed)")
        ref, digest = url.removeprefix("oci://").rsplit("@", 1)
        if not _DIGEST.match(digest):
            raise UsageError(f"{url!r}: {digest!r} is not a sha256:<64 hex> digest")
        head, _, last = ref.rpartition("/")
        if not head:
            raise UsageError(f"{url!r} names no repository (oci://HOST/REPOSITORY@DIGEST)")
        name, _, tag = last.partition(":")
        return cls(f"{head}/{name}".lower(), digest, tag)


@dataclass(frozen=True)
class RolloutState:
    """Where one object stands with the digest: ``waiting``, ``done`` or ``failed``."""

    kind: str
    namespace: str
    name: str
    state: str
    message: str

    def line(self) -> str:
        """``OCIRepository NS/NAME: done: MESSAGE``."""
        return f"{self.kind} {self.namespace}/{self.name}: {self.state}: {self.message}"

    def to_json(self) -> dict[str, str]:
        """The state for ``-o json|yaml``."""
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name,
                "state": self.state, "message": self.message}


@dataclass(frozen=True)
class RolloutResult:
    """Every OCIRepository that resolved to the digest and every consumer that applied it."""

    target: RolloutTarget
    objects: tuple[RolloutState, ...]

    def summary(self) -> str:
        """One line per object, then ``rolled out``."""
        return "\n".join([*(o.line() for o in self.objects),
                          f"{self.target.repository}@{self.target.digest} rolled out"])

    def to_json(self) -> dict[str, Any]:
        """The result for ``-o json|yaml``."""
        return {"repository": self.target.repository, "digest": self.target.digest,
                "objects": [o.to_json() for o in self.objects]}


_STILL_WORKING = (cond.PROGRESSING, cond.PROGRESSING_WITH_RETRY, cond.DEPENDENCY_NOT_READY)


def _conditions(obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The Ready condition and whether the status is of the current generation."""
    st = obj.get("status") or {}
    ready = cond.find(list(st.get("conditions") or []), cond.READY) or {}
    current = st.get("observedGeneration") == (obj.get("metadata") or {}).get("generation")
    return ready, current


def _source_state(obj: dict[str, Any], target: RolloutTarget) -> RolloutState | None:
    """The OCIRepository's state with the digest, or None when it does not resolve to it
    (another repository, or another tag or digest)."""
    md, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    url = str(spec.get("url") or "").removeprefix("oci://").rstrip("/").lower()
    if url != target.repository:
        return None
    ref = spec.get("ref") or {}
    revision = str(((obj.get("status") or {}).get("artifact") or {}).get("revision") or "")
    stored = revision.endswith(target.digest)
    follows = ref.get("digest") == target.digest or (
        bool(target.tag) and not ref.get("digest") and not ref.get("semver")
        and (ref.get("tag") or "latest") == target.tag)
    if not stored and not follows:
        return None
    ready, _ = _conditions(obj)
    key = ("OCIRepository", md.get("namespace", ""), md.get("name", ""))
    if stored and ready.get("status") == cond.TRUE:
        return RolloutState(*key, "done", f"stored {revision}")
    # A source failure is not final: it may predate the push (the tag did not exist yet)
    # and the source retries; the timeout reports it if it lasts.
    return RolloutState(*key, "waiting", f"has {revision or 'no artifact'}" + (
        f" ({ready.get('reason')}: {ready.get('message')})"
        if ready.get("status") == cond.FALSE else ""))


def _consumer_state(obj: dict[str, Any], kind: str, digest: str) -> RolloutState:
    md, st = obj.get("metadata") or {}, obj.get("status") or {}
    key = (kind, md.get("namespace", ""), md.get("name", ""))
    if (obj.get("spec") or {}).get("suspend"):
        return RolloutState(*key, "failed", "suspended: it will not apply the digest")
    attempted = str(st.get("lastAttemptedRevision") or "")
    applied = (str(st.get("lastAppliedRevision") or "") if kind == "Kustomization"
               else attempted)
    ready, current = _conditions(obj)
    if digest in applied and ready.get("status") == cond.TRUE and current:
        return RolloutState(*key, "done", f"applied {applied} and healthy")
    if digest in attempted and ready.get("status") == cond.FALSE and current \
            and ready.get("reason") not in _STILL_WORKING:
        return RolloutState(*key, "failed", f"{ready.get('reason')}: {ready.get('message')}")
    return RolloutState(*key, "waiting", f"applied {applied or 'nothing'} so far"
                        + (f" ({ready.get('reason')}: {ready.get('message')})"
                           if ready.get("status") == cond.FALSE else ""))


async def rollout_states(dyn: DynamicClient, target: RolloutTarget,
                         namespace: str | None) -> list[RolloutState]:
    """One look: the OCIRepositories resolving to the digest and their consumers
    (Kustomizations by ``sourceRef``, HelmReleases by ``chartRef``)."""
    states: list[RolloutState] = []
    sources = set()
    for obj in await dyn.list(API_VERSION, "OCIRepository", namespace):
        state = _source_state(obj, target)
        if state is not None:
            states.append(state)
            sources.add((state.namespace, state.name))
    for kind, field in (("Kustomization", "sourceRef"), ("HelmRelease", "chartRef")):
        for obj in await dyn.list(API_VERSION, kind, namespace):
            ref = (obj.get("spec") or {}).get(field) or {}
            ns = ref.get("namespace") or (obj.get("metadata") or {}).get("namespace", "")
            if ref.get("kind", "OCIRepository") == "OCIRepository" \
                    and (ns, ref.get("name")) in sources:
                states.append(_consumer_state(obj, kind, target.digest))
    return sorted(states, key=lambda s: (s.kind != "OCIRepository", s.namespace, s.name))


async def wait_rollout(cluster: Cluster | str | None, url: str, *,
                       namespace: str | None = None, interval: float = 2.0,
                       progress: Callable[[str], None] | None = None) -> RolloutResult:
    """``wait rollout``: wait until every OCIRepository resolving to the digest of ``url``
    (``oci://REPO[:TAG]@DIGEST``; one pinning DIGEST, following TAG, or already storing
    DIGEST) has stored it and every Kustomization or HelmRelease consuming those sources has
    applied it and is Ready, in ``namespace`` (None: all). ``progress`` gets a line each time
    an object's state changes. Raises OcigitopsError naming the object and its Ready
    condition when one fails, and DeadlineExceededError naming what is still waited for
    when ``cluster.timeout`` runs out."""
    if not isinstance(cluster, Cluster):
        cluster = Cluster(kubeconfig=cluster)
    target = RolloutTarget.parse(url)
    seen: dict[tuple[str, str, str], str] = {}
    deadline = time.monotonic() + cluster.timeout
    states: list[RolloutState] = []
    async with connect(replace(cluster, timeout=cluster.timeout + 10)) as dyn:
        while True:
            states = await rollout_states(dyn, target, namespace)
            for s in states:
                if progress and seen.get((s.kind, s.namespace, s.name)) != s.line():
                    progress(s.line())
                seen[(s.kind, s.namespace, s.name)] = s.line()
            failed = [s for s in states if s.state == "failed"]
            if failed:
                raise OcigitopsError(f"rollout of {target.digest} failed: {failed[0].line()}")
            sources_done = [s for s in states if s.kind == "OCIRepository"
                            and s.state == "done"]
            if sources_done and all(s.state == "done" for s in states):
                return RolloutResult(target, tuple(states))
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(interval, max(deadline - time.monotonic(), 0.05)))
    waiting = [s.line() for s in states if s.state != "done"] or [
        f"no OCIRepository of {target.repository} resolved to {target.digest}"
        + ("" if target.tag else " (give oci://REPO:TAG@DIGEST to follow a tag)")]
    raise DeadlineExceededError(f"the rollout did not finish within {cluster.timeout:g}s"
                                f" (--timeout): {'; '.join(waiting)}")
