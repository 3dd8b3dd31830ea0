"""The Helm engine on the ``helm`` 4 binary, one subprocess per operation.

Each call runs ``helm`` with:

- the kubeconfig and the values in a private directory (0700), each file 0600, removed
  afterwards; values are never on the command line, nor in a log or an error message;
- a clean environment: ``PATH``, a private ``HOME`` and Helm's XDG directories inside the
  private directory (so a person's ``~/.config/helm`` or a stray ``HELM_*`` variable never
  changes what we do), ``HELM_DRIVER=secret``, and ``HELM_PLUGINS`` pointing at a private
  plugins directory that holds only our post-render bridge;
- ``-o json`` where Helm has it (install, upgrade, status, history, get metadata);
- bounded output (:data:`MAX_STDOUT`, :data:`MAX_STDERR`: past them the process is killed)
  and a deadline: Helm's own ``--timeout`` plus :data:`GRACE`, after which the process group
  is killed.

Post-rendering: Helm 4's ``--post-renderer`` takes the name of a ``postrenderer/v1``
plugin, no longer an executable. The honest way to run a Python callable there is a plugin
that relays to this process (:mod:`ocigitops.puller.helm.postrender`), which this engine
installs in its private plugins directory; Helm then stores the post-rendered manifest as
its own. Rendering with ``helm template``, post-processing and installing the result as a
synthetic chart was rejected: the stored chart would not be the user's, and a person's
``helm upgrade``/``rollback`` would act on it. The CLI has no flag for the post-render
strategy: it is always Helm 4's ``combined`` (hooks included); other strategies are refused.

Helm's CLI stores the release in the namespace it installs to: a storage namespace other
than the target namespace is refused (the SDK engine supports it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocigitops.puller.helm import postrender
from ocigitops.puller.helm.engine import (
    ClusterAccess,
    Common,
    EngineUnavailableError,
    HelmError,
    InstallError,
    InstallRequest,
    PostRenderer,
    PostRenderError,
    PostRenderStrategy,
    Release,
    ReleaseNotFoundError,
    ReleaseRef,
    RollbackError,
    RollbackRequest,
    TestFailedError,
    TestRequest,
    TestResult,
    UninstallError,
    UninstallRequest,
    UninstallResult,
    UnsupportedOptionError,
    UpgradeError,
    UpgradeRequest,
    WaitTimeoutError,
    check_chart,
    check_common,
    check_crd_policy,
    classify,
    hook_from_json,
    one_line,
    parse_time,
    values_digest,
)

MAX_STDOUT = 64 * 1024 * 1024
"""Bytes of stdout read from helm (a release JSON with its chart); past it helm is killed."""
MAX_STDERR = 1024 * 1024
GRACE = 15.0
"""Seconds past Helm's own ``--timeout`` before the process group is killed."""


@dataclass(frozen=True)
class Outcome:
    """A finished helm process."""

    code: int
    stdout: bytes
    stderr: bytes

    @property
    def error_text(self) -> str:
        """Helm's error: its last ``Error:`` line, else the last non-empty stderr line."""
        lines = [ln for ln in self.stderr.decode(errors="replace").splitlines() if ln.strip()]
        for ln in reversed(lines):
            if ln.startswith("Error: "):
                return ln
        return lines[-1] if lines else f"helm exited with code {self.code}"


def find_helm4() -> Path:
    """The helm 4 binary: ``$OCIGITOPS_HELM4``, the tools cache (``helm4-*/bin/helm``, built
    by ``scripts/install-tools helm4``), else ``helm`` on PATH."""
    env = os.environ.get("OCIGITOPS_HELM4")
    if env:
        return Path(env)
    tools = Path(os.environ.get("OCIGITOPS_TOOLS",
                                Path.home() / ".cache" / "ocigitops" / "tools"))
    found = sorted(tools.glob("helm4-*/bin/helm"))
    if found:
        return found[-1]
    which = shutil.which("helm")
    if which:
        return Path(which)
    raise EngineUnavailableError("no helm 4 binary: run `scripts/install-tools helm4` or set "
                                 "OCIGITOPS_HELM4")


class _Workdir:
    """A private directory for one helm call: kubeconfig, values, HOME, plugins."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="ocigitops-helm-"))  # mode 0700

    def secret_file(self, name: str, text: str) -> Path:
        p = self.path / name
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return p

    def env(self, plugins: Path | None) -> dict[str, str]:
        home = self.path / "home"
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            "HELM_PLUGINS": str(plugins or home / "plugins"),
            "HELM_DRIVER": "secret",
        }

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def _workdir() -> Iterator[_Workdir]:
    w = _Workdir()
    try:
        yield w
    finally:
        w.close()


async def _read_bounded(stream: asyncio.StreamReader | None, limit: int) -> bytes:
    if stream is None:
        return b""
    buf = bytearray()
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise HelmError(f"helm wrote more than {limit} bytes of output")


async def _stop_reads(reads: Sequence[asyncio.Future[bytes]]) -> None:
    for r in reads:
        r.cancel()
    await asyncio.gather(*reads, return_exceptions=True)


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


#: How long to wait for a killed helm's exit to be reported.
REAP_WAIT = 10.0


async def _kill_and_reap(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the process group, then wait a bounded time for the exit: in a full test run
    on Python 3.11 the exit of a killed child was once never reported to the loop (cause
    not found), and the unbounded wait hung for good. A child not reported by then is
    left to be reaped later."""
    _kill(proc)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(REAP_WAIT):
            # Read the pipes to their end (the writers are dead, so what is left is at most
            # the pipes' buffers): a reader paused on a full buffer never sees EOF, and its
            # transport would outlive the event loop.
            await asyncio.gather(_discard(proc.stdout), _discard(proc.stderr))
            await proc.wait()


async def _discard(stream: asyncio.StreamReader | None) -> None:
    while stream is not None and await stream.read(65536):
        pass


def _dur(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))}s"


class BinaryEngine:
    """:class:`~ocigitops.puller.helm.engine.HelmEngine` on the helm 4 binary."""

    name = "binary"

    def __init__(self, helm: Path | None = None, *, max_processes: int = 2) -> None:
        # Found on first use, not here: a controller without helm (an image built without
        # it) still starts and runs every other kind; a HelmRelease then reports the
        # EngineUnavailableError in its status.
        self._helm = helm
        self._plugins: Path | None = None
        if max_processes < 1:
            raise ValueError("max_processes must be at least 1")
        #: Helm processes running at once (``--concurrent-helm``), apart from how many
        #: reconciles run: each costs about 70 MiB while it runs.
        self.max_processes = max_processes
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        #: The most helm processes seen running at once (for tests and benchmarks).
        self.peak_processes = 0
        self._running = 0

    @property
    def helm(self) -> Path:
        """The helm 4 binary this engine runs (raises EngineUnavailableError if none)."""
        if self._helm is None:
            self._helm = find_helm4()
        return self._helm

    # --- plumbing -------------------------------------------------------------------

    def _plugins_dir(self) -> Path:
        # One private plugins directory per engine, holding only the bridge.
        if self._plugins is None:
            d = Path(tempfile.mkdtemp(prefix="ocigitops-helm-plugins-"))
            postrender.ensure_plugin(d)
            self._plugins = d
        return self._plugins

    def _semaphore(self) -> asyncio.Semaphore:
        # One per event loop (a semaphore is bound to the loop it first waits on).
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self.max_processes))
        return self._slots[1]

    async def run(self, args: list[str], *, limit: float, env: Mapping[str, str]) -> Outcome:
        """Run ``helm ARGS`` with ``env``; kill its process group after ``limit`` seconds.
        At most ``max_processes`` run at once; waiting for a slot does not count against
        ``limit``."""
        async with self._semaphore():
            self._running += 1
            self.peak_processes = max(self.peak_processes, self._running)
            try:
                return await self._run(args, limit=limit, env=env)
            finally:
                self._running -= 1

    async def _run(self, args: list[str], *, limit: float, env: Mapping[str, str]) -> Outcome:
        try:
            proc = await asyncio.create_subprocess_exec(
                str(self.helm), *args, env=dict(env), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True)
        except OSError as e:
            raise EngineUnavailableError(f"cannot run {self.helm}: {e.strerror or e}") from None
        reads = [asyncio.ensure_future(_read_bounded(proc.stdout, MAX_STDOUT)),
                 asyncio.ensure_future(_read_bounded(proc.stderr, MAX_STDERR))]
        try:
            async with asyncio.timeout(limit):
                out, err = await asyncio.gather(*reads)
                code = await proc.wait()
        except TimeoutError:
            await _stop_reads(reads)
            await _kill_and_reap(proc)
            raise WaitTimeoutError(f"helm {args[0] if args else ''} did not finish within "
                                   f"{limit:.0f}s and was killed") from None
        except BaseException:
            # One bounded read failed (too much output) or we were cancelled: the other
            # read must not outlive this call.
            await _stop_reads(reads)
            await _kill_and_reap(proc)
            raise
        return Outcome(code, out, err)

    def _base(self, w: _Workdir, access: ClusterAccess, ref: ReleaseRef) -> list[str]:
        if ref.storage != ref.namespace:
            raise UnsupportedOptionError(
                f"release {ref.name}: the helm CLI stores a release in its target namespace; "
                f"storage namespace {ref.storage} != {ref.namespace} needs the SDK engine",
                release=ref.name)
        kc = w.secret_file("kubeconfig", access.kubeconfig)
        args = ["--kubeconfig", str(kc), "--namespace", ref.namespace]
        if access.context:
            args += ["--kube-context", access.context]
        if access.impersonate:
            args += ["--kube-as-user", access.impersonate.user]
            for g in access.impersonate.groups:
                args += ["--kube-as-group", g]
        return args

    @staticmethod
    def _common(c: Common) -> list[str]:
        args = ["--timeout", _dur(c.timeout), f"--wait={'watcher' if c.wait else 'hookOnly'}"]
        if c.wait_for_jobs:
            args.append("--wait-for-jobs")
        if c.disable_hooks:
            args.append("--no-hooks")
        if c.description:
            args += ["--description", c.description]
        return args

    def _post_render(self, srv: postrender.PostRenderServer | None,
                     strategy: PostRenderStrategy, ref: ReleaseRef) -> list[str]:
        if srv is None:
            return []
        if strategy is not PostRenderStrategy.COMBINED:
            raise UnsupportedOptionError(
                f"release {ref.name}: the helm CLI has no post-render strategy flag "
                f"(always combined); {strategy.value} needs the SDK engine", release=ref.name)
        return ["--post-renderer", postrender.PLUGIN_NAME,
                "--post-renderer-args", srv.socket_path]

    def _fail(self, o: Outcome, fallback: type[HelmError], ref: ReleaseRef,
              srv: postrender.PostRenderServer | None = None) -> HelmError:
        if srv is not None and srv.error is not None:
            return PostRenderError(f"release {ref.name}: post-renderer failed: {srv.error}",
                                   release=ref.name)
        return classify(o.error_text, fallback, release=ref.name)

    async def _write(self, access: ClusterAccess, ref: ReleaseRef, verb: str, chart: Path,
                     values: Mapping[str, Any], flags: list[str], c: Common,
                     fallback: type[HelmError], post_renderer: PostRenderer | None,
                     strategy: PostRenderStrategy) -> Release:
        check_chart(chart, ref)
        with _workdir() as w, postrender.serving(post_renderer) as srv:
            vf = w.secret_file("values.json", json.dumps(dict(values)))
            args = [verb, ref.name, str(chart), *self._base(w, access, ref),
                    "--values", str(vf), *self._common(c), *flags,
                    *self._post_render(srv, strategy, ref), "--output", "json"]
            plugins = self._plugins_dir() if srv is not None else None
            o = await self.run(args, limit=c.timeout + GRACE, env=w.env(plugins))
            if o.code != 0:
                raise self._fail(o, fallback, ref, srv)
        return release_from_json(_json(o.stdout, ref))

    # --- operations -----------------------------------------------------------------

    async def install(self, access: ClusterAccess, req: InstallRequest) -> Release:
        """See :meth:`HelmEngine.install`."""
        check_common(req.ref)
        flags: list[str] = []
        if req.disable_openapi_validation:
            flags.append("--disable-openapi-validation")
        if req.skip_schema_validation:
            flags.append("--skip-schema-validation")
        if check_crd_policy(req.crds, upgrade=False):
            flags.append("--skip-crds")
        if req.replace:
            flags.append("--replace")
        if req.create_namespace:
            flags.append("--create-namespace")
        return await self._write(access, req.ref, "install", req.chart.path, req.chart.values,
                                 flags, req.common, InstallError, req.post_renderer,
                                 req.post_render_strategy)

    async def upgrade(self, access: ClusterAccess, req: UpgradeRequest) -> Release:
        """See :meth:`HelmEngine.upgrade`."""
        check_common(req.ref, recreate=req.recreate)
        check_crd_policy(req.crds, upgrade=True)
        # Exactly the given values, never the previous release's (Flux's rule).
        flags = ["--reset-values"]
        if req.disable_openapi_validation:
            flags.append("--disable-openapi-validation")
        if req.skip_schema_validation:
            flags.append("--skip-schema-validation")
        if req.force:
            flags.append("--force-replace")
        if req.force_conflicts:
            flags.append("--force-conflicts")
        if req.max_history:
            flags += ["--history-max", str(req.max_history)]
        if req.cleanup_on_fail:
            flags.append("--cleanup-on-fail")
        return await self._write(access, req.ref, "upgrade", req.chart.path, req.chart.values,
                                 flags, req.common, UpgradeError, req.post_renderer,
                                 req.post_render_strategy)

    async def rollback(self, access: ClusterAccess, req: RollbackRequest) -> Release:
        """See :meth:`HelmEngine.rollback`."""
        check_common(req.ref, recreate=req.recreate)
        c = req.common
        with _workdir() as w:
            args = ["rollback", req.ref.name]
            if req.revision:
                args.append(str(req.revision))
            args += [*self._base(w, access, req.ref), *self._common(c)]
            if req.force:
                args.append("--force-replace")
            if req.force_conflicts:
                args.append("--force-conflicts")
            if req.cleanup_on_fail:
                args.append("--cleanup-on-fail")
            if req.max_history:
                args += ["--history-max", str(req.max_history)]
            o = await self.run(args, limit=c.timeout + GRACE, env=w.env(None))
            if o.code != 0:
                raise self._fail(o, RollbackError, req.ref)
        return await self.get(access, req.ref)

    async def uninstall(self, access: ClusterAccess, req: UninstallRequest) -> UninstallResult:
        """See :meth:`HelmEngine.uninstall`."""
        check_common(req.ref)
        c = req.common
        with _workdir() as w:
            args = ["uninstall", req.ref.name, *self._base(w, access, req.ref),
                    "--timeout", _dur(c.timeout), f"--wait={'watcher' if c.wait else 'hookOnly'}",
                    "--cascade", req.deletion_propagation.value]
            if c.disable_hooks:
                args.append("--no-hooks")
            if c.description:
                args += ["--description", c.description]
            if req.keep_history:
                args.append("--keep-history")
            if req.ignore_not_found:
                args.append("--ignore-not-found")
            o = await self.run(args, limit=c.timeout + GRACE, env=w.env(None))
            if o.code != 0:
                raise self._fail(o, UninstallError, req.ref)
        info = one_line(o.stdout.decode(errors="replace"))
        if req.ignore_not_found and "not found" in info:
            return UninstallResult(release=None, info=info)
        release = await self.get(access, req.ref) if req.keep_history else None
        return UninstallResult(release=release, info=info)

    async def test(self, access: ClusterAccess, req: TestRequest) -> TestResult:
        """See :meth:`HelmEngine.test`."""
        check_common(req.ref)
        with _workdir() as w:
            args = ["test", req.ref.name, *self._base(w, access, req.ref),
                    "--timeout", _dur(req.timeout)]
            for name in req.include:
                args += ["--filter", f"name={name}"]
            for name in req.exclude:
                args += ["--filter", f"!name={name}"]
            o = await self.run(args, limit=req.timeout + GRACE, env=w.env(None))
        failure = None if o.code == 0 else classify(o.error_text, TestFailedError,
                                                    release=req.ref.name)
        if isinstance(failure, ReleaseNotFoundError):
            raise failure
        release = await self.get(access, req.ref)
        result = TestResult(release=release, hooks=tuple(h for h in release.hooks if h.is_test))
        if failure is not None or not result.succeeded:
            why = str(failure) if failure else f"release {req.ref.name}: a test hook failed"
            raise TestFailedError(why, release=req.ref.name, result=result)
        return result

    async def get(self, access: ClusterAccess, ref: ReleaseRef, *, revision: int = 0,
                  time_limit: float = 60.0) -> Release:
        """See :meth:`HelmEngine.get`: ``helm status -o json`` (manifest, hooks, values,
        info) and ``helm get metadata -o json`` (chart name and versions, which status
        leaves out), concurrently."""
        rev = ["--revision", str(revision)] if revision else []
        with _workdir() as w:
            base = self._base(w, access, ref)
            env = w.env(None)
            status, meta = await asyncio.gather(
                self.run(["status", ref.name, *base, *rev, "--output", "json"],
                         limit=time_limit, env=env),
                self.run(["get", "metadata", ref.name, *base, *rev, "--output", "json"],
                         limit=time_limit, env=env))
        for o in (status, meta):
            if o.code != 0:
                raise self._fail(o, ReleaseNotFoundError, ref)
        doc = _json(status.stdout, ref)
        m = _json(meta.stdout, ref)
        doc["chart"] = {"metadata": {"name": m.get("chart", ""), "version": m.get("version", ""),
                                     "appVersion": m.get("appVersion", "")}}
        return release_from_json(doc)

    async def history(self, access: ClusterAccess, ref: ReleaseRef, *, max_revisions: int = 0,
                      time_limit: float = 60.0) -> list[Release]:
        """See :meth:`HelmEngine.history` (``helm history -o json``; no manifests, and no
        values digest: ``config_digest`` is empty)."""
        with _workdir() as w:
            args = ["history", ref.name, *self._base(w, access, ref), "--output", "json"]
            if max_revisions:
                args += ["--max", str(max_revisions)]
            o = await self.run(args, limit=time_limit, env=w.env(None))
        if o.code != 0:
            raise self._fail(o, ReleaseNotFoundError, ref)
        docs = json.loads(o.stdout or b"[]")
        if not isinstance(docs, list):
            raise HelmError(f"release {ref.name}: helm history printed no list")
        out = [release_from_history(d, ref) for d in docs if isinstance(d, dict)]
        return sorted(out, key=lambda r: r.revision)


def _json(data: bytes, ref: ReleaseRef) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        raise HelmError(f"release {ref.name}: helm printed no JSON", release=ref.name) from None
    if not isinstance(doc, dict):
        raise HelmError(f"release {ref.name}: helm printed no JSON object", release=ref.name)
    return doc


def release_from_json(doc: Mapping[str, Any]) -> Release:
    """A :class:`Release` from Helm's stored release JSON (what ``status``/``install -o
    json`` print and what the storage Secret holds, gzip and base64 removed)."""
    info = doc.get("info") or {}
    meta = (doc.get("chart") or {}).get("metadata") or {}
    return Release(
        name=str(doc.get("name", "")),
        namespace=str(doc.get("namespace", "")),
        revision=int(doc.get("version", 0)),
        status=str(info.get("status", "")),
        chart_name=str(meta.get("name", "")),
        chart_version=str(meta.get("version", "")),
        app_version=str(meta.get("appVersion", "") or ""),
        config_digest=values_digest(doc.get("config") or {}),
        manifest=str(doc.get("manifest", "") or ""),
        hooks=tuple(hook_from_json(h) for h in doc.get("hooks") or ()),
        description=str(info.get("description", "") or ""),
        first_deployed=parse_time(info.get("first_deployed")),
        last_deployed=parse_time(info.get("last_deployed")),
        deleted=parse_time(info.get("deleted")),
    )


_CHART = re.compile(r"(.+?)-(v?\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]*)?)")


def release_from_history(d: Mapping[str, Any], ref: ReleaseRef) -> Release:
    """A :class:`Release` from one ``helm history -o json`` entry (``chart`` is
    ``<name>-<version>``, split at the first ``-<semver>``)."""
    chart = str(d.get("chart", ""))
    m = _CHART.fullmatch(chart)
    name, version = (m.group(1), m.group(2)) if m else (chart, "")
    return Release(name=ref.name, namespace=ref.namespace, revision=int(d.get("revision", 0)),
                   status=str(d.get("status", "")), chart_name=name, chart_version=version,
                   app_version=str(d.get("app_version", "") or ""), config_digest="",
                   description=str(d.get("description", "") or ""),
                   last_deployed=parse_time(d.get("updated")))
