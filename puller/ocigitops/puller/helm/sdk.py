"""The Helm engine on Helm's Go SDK, in this process, through ``helm-python-sdk``.

``helm-python-sdk`` (import name ``helm_python``) binds with ctypes to ``libhelm_c``, a C ABI
over Helm's Go SDK (v4.2.3 in 0.2.2) bundled in the wheel. Its public ``Config`` methods pass
only a subset of the options the C ABI accepts (install has no ``disable_hooks``,
``skip_crds``, ``replace``, ``post_renderer``...), so this module calls the ABI's functions
(``helm_install``, ``helm_upgrade``...) through the package's own ctypes table
(``helm_python._native``) with the full options JSON, which the library decodes strictly
(an unknown key is an error, so a renamed option fails loudly, not silently). That table is
private API: the dependency is pinned to ``>=0.2.2,<0.3``.

Blocking calls run in a worker thread (``asyncio.to_thread``). Helm bounds its own waits
with ``timeout_seconds``; install and upgrade also get a cancellation context that is
cancelled when our deadline (the timeout plus a grace) passes. Other calls cannot be
cancelled inside Go: past the deadline we stop waiting and raise, and the thread finishes
on its own.

Loading the library costs memory once per process (a ~244 MB file mapped; the resident
share is measured in ``docs/helm-engine.md``), so it is imported on first use only.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ocigitops.puller.helm import postrender
from ocigitops.puller.helm.engine import (
    ChartInput,
    ChartLoadError,
    ClusterAccess,
    ClusterAccessError,
    Common,
    EngineUnavailableError,
    HelmError,
    InstallError,
    InstallRequest,
    PostRenderError,
    PostRenderStrategy,
    Release,
    ReleaseNotFoundError,
    ReleaseRef,
    RenderError,
    RollbackError,
    RollbackRequest,
    TestFailedError,
    TestRequest,
    TestResult,
    UninstallError,
    UninstallRequest,
    UninstallResult,
    UpgradeError,
    UpgradeRequest,
    WaitTimeoutError,
    check_chart,
    check_common,
    check_crd_policy,
    classify,
    hook_from_json,
    parse_time,
    values_digest,
)

T = TypeVar("T")

GRACE = 15.0
"""Seconds past Helm's own timeout before we give up waiting for the SDK call."""


def _helm() -> Any:
    """Import ``helm_python`` (loads the Go library into this process, once)."""
    try:
        import helm_python
    except ImportError as e:
        raise EngineUnavailableError(
            "the Helm SDK engine needs helm-python-sdk: pip install 'ocigitops[helm]' "
            f"({e})") from None
    except OSError as e:  # the bundled library does not load here (libc, architecture)
        raise EngineUnavailableError(f"the Helm SDK library does not load: {e}") from None
    return helm_python


def _wait(common: Common) -> str:
    return "watcher" if common.wait else "hookOnly"


def _seconds(timeout: float) -> int:
    return max(1, math.ceil(timeout))


class SdkEngine:
    """:class:`~ocigitops.puller.helm.engine.HelmEngine` on Helm's Go SDK, in process."""

    name = "sdk"

    def __init__(self) -> None:
        self._plugin_ready = False

    # --- plumbing -------------------------------------------------------------------

    def _config(self, access: ClusterAccess, ref: ReleaseRef) -> Any:
        helm = _helm()
        imp = access.impersonate
        # kubeconfig_content: the library writes it to a private temporary file that it
        # removes when the config is closed.
        return helm.Config(
            kubeconfig_content=access.kubeconfig,
            kube_context=access.context,
            kube_as_user=imp.user if imp else None,
            kube_as_groups=list(imp.groups) if imp and imp.groups else None,
            namespace=ref.storage,
        )

    async def _call(self, limit: float, fn: Callable[[], T],
                    cancel: Callable[[], None] | None = None) -> T:
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn), limit + GRACE)
        except TimeoutError:
            if cancel is not None:
                cancel()
            raise WaitTimeoutError(f"the Helm SDK did not return within {limit + GRACE:.0f}s"
                                   ) from None

    def _map(self, e: Exception, fallback: type[HelmError], ref: ReleaseRef) -> HelmError:
        helm = _helm()
        detail = str(e)
        if isinstance(e, helm.HelmNotFoundError):
            return ReleaseNotFoundError(f"release {ref.name}: {detail}", release=ref.name)
        if isinstance(e, helm.HelmCancelledError):
            return WaitTimeoutError(f"release {ref.name}: {detail}", release=ref.name)
        if isinstance(e, helm.HelmChartLoadError | helm.HelmChartInvalidError):
            return ChartLoadError(f"release {ref.name}: {detail}", release=ref.name)
        if isinstance(e, helm.HelmRenderError):
            return RenderError(f"release {ref.name}: {detail}", release=ref.name)
        if isinstance(e, helm.HelmKubeError):
            return ClusterAccessError(f"release {ref.name}: {detail}", release=ref.name)
        return classify(detail, fallback, release=ref.name)

    def _post_render_opts(self, srv: postrender.PostRenderServer | None,
                          strategy: PostRenderStrategy) -> dict[str, Any]:
        if srv is None:
            return {}
        if not self._plugin_ready:
            postrender.ensure_plugin(postrender.sdk_plugins_dir())
            self._plugin_ready = True
        return {"post_renderer": postrender.PLUGIN_NAME,
                "post_renderer_args": [srv.socket_path],
                "post_render_strategy": strategy.value}

    async def _write(self, access: ClusterAccess, ref: ReleaseRef, fn_name: str,
                     chart: ChartInput, opts: dict[str, Any], common: Common,
                     fallback: type[HelmError], pr: postrender.PostRenderServer | None,
                     ) -> Release:
        helm = _helm()
        from helm_python import _native

        check_chart(chart.path, ref)
        ctx = helm.HelmContext()
        values = json.dumps(dict(chart.values))

        def run() -> str:
            with self._config(access, ref) as cfg:
                out: str = _native.call_string(
                    fn_name, cfg._raw(), ctx._raw(), _native.HANDLE(0), str(chart.path),
                    ref.name, values, json.dumps(opts))
                return out

        try:
            await self._call(common.timeout, run, ctx.cancel)
        except HelmError:
            raise
        except Exception as e:
            err = self._map(e, fallback, ref)
            if pr is not None and pr.error is not None:
                raise PostRenderError(f"release {ref.name}: post-renderer failed: {pr.error}",
                                      release=ref.name) from None
            raise err from None
        finally:
            ctx.close()
        return await self.get(access, ref)

    # --- operations -----------------------------------------------------------------

    async def install(self, access: ClusterAccess, req: InstallRequest) -> Release:
        """See :meth:`HelmEngine.install`."""
        check_common(req.ref)
        c = req.common
        with postrender.serving(req.post_renderer) as srv:
            opts: dict[str, Any] = {
                "namespace": req.ref.namespace,
                "timeout_seconds": _seconds(c.timeout),
                "wait": _wait(c),
                "wait_for_jobs": c.wait_for_jobs,
                "disable_hooks": c.disable_hooks,
                "disable_openapi_validation": req.disable_openapi_validation,
                "skip_schema_validation": req.skip_schema_validation,
                "skip_crds": check_crd_policy(req.crds, upgrade=False),
                "replace": req.replace,
                "create_namespace": req.create_namespace,
                **({"description": c.description} if c.description else {}),
                **self._post_render_opts(srv, req.post_render_strategy),
            }
            return await self._write(access, req.ref, "helm_install", req.chart, opts, c,
                                     InstallError, srv)

    async def upgrade(self, access: ClusterAccess, req: UpgradeRequest) -> Release:
        """See :meth:`HelmEngine.upgrade`."""
        check_common(req.ref, recreate=req.recreate)
        check_crd_policy(req.crds, upgrade=True)
        c = req.common
        with postrender.serving(req.post_renderer) as srv:
            opts: dict[str, Any] = {
                "namespace": req.ref.namespace,
                "timeout_seconds": _seconds(c.timeout),
                "wait": _wait(c),
                "wait_for_jobs": c.wait_for_jobs,
                "disable_hooks": c.disable_hooks,
                "disable_openapi_validation": req.disable_openapi_validation,
                "skip_schema_validation": req.skip_schema_validation,
                # Exactly the given values, never the previous release's (Flux's rule).
                "reset_values": True,
                "force_replace": req.force,
                "force_conflicts": req.force_conflicts,
                "max_history": req.max_history,
                "cleanup_on_fail": req.cleanup_on_fail,
                **({"description": c.description} if c.description else {}),
                **self._post_render_opts(srv, req.post_render_strategy),
            }
            return await self._write(access, req.ref, "helm_upgrade", req.chart, opts, c,
                                     UpgradeError, srv)

    async def rollback(self, access: ClusterAccess, req: RollbackRequest) -> Release:
        """See :meth:`HelmEngine.rollback`."""
        check_common(req.ref, recreate=req.recreate)
        from helm_python import _native

        c = req.common
        opts = {"version": req.revision, "timeout_seconds": _seconds(c.timeout),
                "wait": _wait(c), "wait_for_jobs": c.wait_for_jobs,
                "disable_hooks": c.disable_hooks, "force_replace": req.force,
                "force_conflicts": req.force_conflicts,
                "cleanup_on_fail": req.cleanup_on_fail, "max_history": req.max_history}

        def run() -> None:
            with self._config(access, req.ref) as cfg:
                _native.call_status("helm_rollback", cfg._raw(), req.ref.name,
                                    json.dumps(opts))

        try:
            await self._call(c.timeout, run)
        except HelmError:
            raise
        except Exception as e:
            raise self._map(e, RollbackError, req.ref) from None
        return await self.get(access, req.ref)

    async def uninstall(self, access: ClusterAccess, req: UninstallRequest) -> UninstallResult:
        """See :meth:`HelmEngine.uninstall`."""
        check_common(req.ref)
        from helm_python import _native

        c = req.common
        opts = {"keep_history": req.keep_history, "timeout_seconds": _seconds(c.timeout),
                "wait": _wait(c), "disable_hooks": c.disable_hooks,
                "ignore_not_found": req.ignore_not_found,
                "deletion_propagation": req.deletion_propagation.value,
                **({"description": c.description} if c.description else {})}

        def run() -> str:
            with self._config(access, req.ref) as cfg:
                out: str = _native.call_string("helm_uninstall", cfg._raw(), req.ref.name,
                                               json.dumps(opts))
                return out

        try:
            doc = json.loads(await self._call(c.timeout, run) or "{}")
        except HelmError:
            raise
        except Exception as e:
            raise self._map(e, UninstallError, req.ref) from None
        if "release" not in doc:
            return UninstallResult(release=None, info=str(doc.get("info", "")))
        release: Release | None = None
        if req.keep_history:
            release = await self.get(access, req.ref)
        return UninstallResult(release=release, info=str(doc.get("info", "")))

    async def test(self, access: ClusterAccess, req: TestRequest) -> TestResult:
        """See :meth:`HelmEngine.test`."""
        check_common(req.ref)
        from helm_python import _native

        opts: dict[str, Any] = {"timeout_seconds": _seconds(req.timeout)}
        if req.include:
            opts["include_names"] = list(req.include)
        if req.exclude:
            opts["exclude_names"] = list(req.exclude)

        def run() -> str:
            with self._config(access, req.ref) as cfg:
                out: str = _native.call_string("helm_test_run", cfg._raw(), req.ref.name,
                                               json.dumps(opts))
                return out

        failure: HelmError | None = None
        try:
            await self._call(req.timeout, run)
        except HelmError as e:
            failure = e
        except Exception as e:
            failure = self._map(e, TestFailedError, req.ref)
        if isinstance(failure, ReleaseNotFoundError | ClusterAccessError):
            raise failure
        release = await self.get(access, req.ref)
        result = TestResult(release=release, hooks=tuple(h for h in release.hooks if h.is_test))
        if failure is not None or not result.succeeded:
            why = str(failure) if failure else f"release {req.ref.name}: a test hook failed"
            raise TestFailedError(why, release=req.ref.name, result=result)
        return result

    async def get(self, access: ClusterAccess, ref: ReleaseRef, *, revision: int = 0,
                  time_limit: float = 60.0) -> Release:
        """See :meth:`HelmEngine.get`."""
        from helm_python import _native

        _helm()
        opts = {"revision": revision} if revision else {}

        def run() -> str:
            with self._config(access, ref) as cfg:
                out: str = _native.call_string("helm_get", cfg._raw(), ref.name,
                                               json.dumps(opts) if opts else None)
                return out

        try:
            doc = json.loads(await self._call(time_limit, run))
        except HelmError:
            raise
        except Exception as e:
            raise self._map(e, ReleaseNotFoundError, ref) from None
        return release_from_get_all(doc)

    async def history(self, access: ClusterAccess, ref: ReleaseRef, *, max_revisions: int = 0,
                      time_limit: float = 60.0) -> list[Release]:
        """See :meth:`HelmEngine.history`. Entries carry no manifest, hooks or values
        digest (the SDK's history summaries do not include them: ``config_digest`` is
        empty)."""
        from helm_python import _native

        _helm()
        opts = {"max": max_revisions} if max_revisions else {}

        def run() -> str:
            with self._config(access, ref) as cfg:
                out: str = _native.call_string("helm_history", cfg._raw(), ref.name,
                                               json.dumps(opts) if opts else None)
                return out

        try:
            docs = json.loads(await self._call(time_limit, run))
        except HelmError:
            raise
        except Exception as e:
            raise self._map(e, ReleaseNotFoundError, ref) from None
        out = [release_from_summary(d, config_digest="") for d in docs]
        return sorted(out, key=lambda r: r.revision)


def release_from_summary(s: Mapping[str, Any], *, config_digest: str,
                         info: Mapping[str, Any] | None = None,
                         hooks: list[Any] | None = None) -> Release:
    """A :class:`Release` from the SDK's release summary (plus ``helm_get``'s extras)."""
    info = info or {}
    return Release(
        name=str(s.get("name", "")),
        namespace=str(s.get("namespace", "")),
        revision=int(s.get("revision", 0)),
        status=str(info.get("status") or s.get("status", "")),
        chart_name=str(s.get("chart_name", "")),
        chart_version=str(s.get("chart_version", "")),
        app_version=str(s.get("app_version", "") or ""),
        config_digest=config_digest,
        manifest=str(s.get("manifest", "") or ""),
        hooks=tuple(hook_from_json(h) for h in hooks or ()),
        description=str(info.get("description", "") or ""),
        first_deployed=parse_time(info.get("first_deployed")),
        last_deployed=parse_time(info.get("last_deployed") or s.get("deployed_at")),
        deleted=parse_time(info.get("deleted")),
    )


def release_from_get_all(doc: Mapping[str, Any]) -> Release:
    """A :class:`Release` from ``helm_get``'s document (summary, hooks, config, info)."""
    return release_from_summary(doc.get("summary") or {},
                                config_digest=values_digest(doc.get("config") or {}),
                                info=doc.get("info") or {}, hooks=doc.get("hooks") or [])
