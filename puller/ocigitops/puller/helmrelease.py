"""HelmRelease reconciliation, with Flux helm-controller's semantics, on the Helm engine.

1. Refuse what is not implemented (``UnsupportedField``, Stalled, nothing installed).
2. The chart: ``chartRef`` to an OCIRepository (its artifact is the chart archive, layer
   selected with ``operation: copy``) or a HelmChart, or ``chart``, a template of the
   HelmChart ``<namespace>-<name>`` this HelmRelease creates (in the source's namespace)
   and deletes with it; read through the source contract. Then ``dependsOn``
   HelmReleases must be Ready.
3. The values: ``valuesFrom`` in order (``targetPath`` puts one value at a path), then
   ``values`` over them; their digest is the ``configDigest``.
4. Install (no release yet) or upgrade (chart, values or post-renderers changed, the last
   revision is not ``deployed``, or the release is not in ``history``: adoption, as Flux)
   through the engine (the helm 4 binary by default, see ``docs/helm-engine.md``), with
   ``postRenderers`` as its post-renderer (``helmrelease_post``: the sandboxed kustomize);
   nothing is done when the release is in sync. ``install.crds: CreateReplace`` and
   ``upgrade.crds: Create|CreateReplace``: the chart's ``crds/`` are applied by the
   controller first (``helmrelease_crds``).
5. On failure: count it (``installFailures``/``upgradeFailures``/``failures``), remediate
   (uninstall after a failed install; rollback or uninstall after a failed upgrade) while
   retries remain or ``remediateLastFailure`` says so, and retry; past ``retries`` the
   object is Stalled with ``RetriesExceeded`` until its spec, chart or values change.
   ``RetryOnFailure`` never remediates and retries every ``retryInterval``.
6. ``test.enable``: ``helm test`` after each install and upgrade (``TestSuccess``).
7. ``driftDetection``: on a release in sync, objects changed or deleted in the cluster are
   reported (``warn``) or applied again (``enabled``), but for the paths its ``ignore``
   rules name (``helmrelease_drift``).
8. Deletion uninstalls the release (finalizer), unless suspended.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from lightkube.config.kubeconfig import SERVICE_ACCOUNT

from ocigitops.duration import format_duration, parse_duration
from ocigitops.errors import OcigitopsError
from ocigitops.puller import conditions as cond
from ocigitops.puller.api.helmrelease import (
    DEFAULT_MAX_HISTORY,
    DEFAULT_VALUES_KEY,
    HISTORY_LIMIT,
    KIND,
    UNSUPPORTED_UNLESS,
    HelmRelease,
    HelmReleaseStatus,
    parse_helmrelease,
)
from ocigitops.puller.api.meta import API_VERSION, FINALIZER
from ocigitops.puller.api.schema import ValidationError, to_dict
from ocigitops.puller.helm.binary import BinaryEngine
from ocigitops.puller.helm.engine import (
    ChartInput,
    ClusterAccess,
    Common,
    CRDPolicy,
    DeletionPropagation,
    HelmEngine,
    HelmError,
    Impersonation,
    InstallError,
    InstallRequest,
    PostRenderer,
    Release,
    ReleaseNotFoundError,
    ReleaseRef,
    RollbackRequest,
    TestFailedError,
    TestRequest,
    TestResult,
    UninstallRequest,
    UnsupportedOptionError,
    UpgradeError,
    UpgradeRequest,
    values_digest,
)
from ocigitops.puller.helmrelease_crds import CRDError, apply_crds, chart_crds
from ocigitops.puller.helmrelease_drift import (
    IgnoreRule,
    InvalidIgnoreRuleError,
    ignored,
    keep_live,
    parse_ignore_rules,
    without,
)
from ocigitops.puller.helmrelease_post import (
    InvalidPostRendererError,
    deprecated_fields,
    post_renderer,
    post_renderers_digest,
)
from ocigitops.puller.kube import DynamicClient, KubeError
from ocigitops.puller.reconcile import (
    CrossNamespaceRefError,
    DependencyNotReadyError,
    Outcome,
    begin,
    check_dependencies,
    check_namespace,
    prepare,
)
from ocigitops.puller.runtime.reconciler import (
    Deps,
    ObjectKey,
    Progress,
    Reconciler,
    no_progress,
)
from ocigitops.puller.sources.contract import (
    ArtifactNotReadyError,
    SourceArtifact,
    SourceError,
    SourceKind,
    get_artifact,
)

# Flux's reasons (helm-controller api/v2).
RELEASED = "Released"
REMEDIATED = "Remediated"
TEST_SUCCESS = "TestSuccess"
TEST_SUCCEEDED = "TestSucceeded"
TEST_FAILED = "TestFailed"
INSTALL_SUCCEEDED = "InstallSucceeded"
INSTALL_FAILED = "InstallFailed"
UPGRADE_SUCCEEDED = "UpgradeSucceeded"
UPGRADE_FAILED = "UpgradeFailed"
ROLLBACK_SUCCEEDED = "RollbackSucceeded"
ROLLBACK_FAILED = "RollbackFailed"
UNINSTALL_SUCCEEDED = "UninstallSucceeded"
UNINSTALL_FAILED = "UninstallFailed"
RETRIES_EXCEEDED = "RetriesExceeded"
UNSUPPORTED_FIELD = "UnsupportedField"
INIT_FAILED = "InitFailed"
SOURCE_NOT_READY = "SourceNotReady"
VALUES_ERROR = "ValuesError"

DRIFT_DETECTED = "DriftDetected"
DRIFT_CORRECTED = "DriftCorrected"
DRIFT_MODES = ("disabled", "warn", "enabled")

#: Flux's default ``retryInterval`` for RetryOnFailure.
DEFAULT_RETRY_INTERVAL = 300.0
#: Largest chart archive read from the cache.
CHART_MAX = 100 * 1024 * 1024


class ValuesError(OcigitopsError):
    """A valuesFrom reference is missing or does not hold values."""


#: A dependency is not Ready yet: retry later, not a failure.
NotReadyError = DependencyNotReadyError


# -- pure logic ---------------------------------------------------------------------------------


def merge_values(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's (and Flux's) merge: maps merge recursively, anything else in ``over`` wins."""
    out: dict[str, Any] = dict(base)
    for k, v in over.items():
        old = out.get(k)
        if isinstance(v, Mapping) and isinstance(old, Mapping):
            out[k] = merge_values(old, v)
        else:
            out[k] = v
    return out


def split_path(path: str) -> list[str]:
    """A ``targetPath`` as keys: dot-separated, ``\\.`` for a literal dot. List indexes
    (``a[0]``) are refused."""
    keys: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(path):
        c = path[i]
        if c == "\\" and i + 1 < len(path):
            cur.append(path[i + 1])
            i += 2
            continue
        if c == ".":
            keys.append("".join(cur))
            cur = []
        elif c in "[]":
            raise ValuesError(f"targetPath {path!r}: list indexes are not supported, use a"
                              " map path")
        else:
            cur.append(c)
        i += 1
    keys.append("".join(cur))
    if any(not k for k in keys):
        raise ValuesError(f"targetPath {path!r} has an empty key")
    return keys


def typed_value(text: str) -> Any:
    """A ``targetPath`` value as Helm's ``--set`` types it: true/false, null, integers;
    anything else stays a string."""
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    try:
        if text.lstrip("-").isdigit() and not (len(text.lstrip("-")) > 1
                                                and text.lstrip("-").startswith("0")):
            return int(text)
    except ValueError:
        pass
    return text


def set_path(values: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``values`` with ``value`` at ``path`` (intermediate maps created or replaced)."""
    keys = split_path(path)
    out = dict(values)
    node = out
    for k in keys[:-1]:
        child = node.get(k)
        child = dict(child) if isinstance(child, Mapping) else {}
        node[k] = child
        node = child
    node[keys[-1]] = value
    return out


def values_document(text: str, where: str) -> dict[str, Any]:
    """A values YAML document (empty: no values); anything but a map is an error."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValuesError(f"{where} is not valid YAML: {str(e).splitlines()[0]}") from None
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ValuesError(f"{where} must hold a YAML map of values, not a"
                          f" {type(doc).__name__}")
    return dict(doc)


@dataclass(frozen=True)
class Decision:
    """What to do after a failed install or upgrade."""

    remediate: bool
    retry: bool


def remediation_decision(failures: int, retries: int,
                         remediate_last_failure: bool | None) -> Decision:
    """Flux's rule, ``failures`` counting the one that just happened: retries remain while
    ``failures <= retries`` (-1: forever); the last failure is remediated only when
    ``remediateLastFailure`` says so (default: when ``retries > 0``)."""
    if retries < 0:
        return Decision(remediate=True, retry=True)
    exhausted = failures > retries
    last = remediate_last_failure if remediate_last_failure is not None else retries > 0
    return Decision(remediate=(not exhausted) or last, retry=not exhausted)


def unsupported_fields(hr: HelmRelease) -> list[str]:
    """The spec fields given that this controller does not implement."""
    out: list[str] = []
    for key, off in UNSUPPORTED_UNLESS.items():
        if key not in hr.freeform:
            continue
        value = hr.freeform[key]
        if value is None or value == off or (isinstance(off, Mapping)
                                             and isinstance(value, Mapping)
                                             and all(value.get(k, v) == v
                                                     for k, v in off.items())
                                             and set(value) <= set(off)):
            continue
        out.append(f"spec.{key}" + (" (remote clusters are not supported yet)"
                                    if key == "kubeConfig" else ""))
    drift = hr.freeform.get("driftDetection")
    if drift is not None:
        if not isinstance(drift, Mapping) or drift.get("mode", "disabled") not in DRIFT_MODES:
            out.append("spec.driftDetection.mode (disabled, warn or enabled)")
        elif set(drift) - {"mode", "ignore"}:
            out.append("spec.driftDetection." + ",".join(sorted(set(drift) - {"mode", "ignore"})))
    out.extend(deprecated_fields(hr.freeform.get("postRenderers")))
    spec = hr.spec
    if spec.upgrade is not None and spec.upgrade.preserve_values:
        out.append("spec.upgrade.preserveValues")
    if spec.rollback is not None and spec.rollback.recreate:
        out.append("spec.rollback.recreate")
    return out


# -- context ------------------------------------------------------------------------------------


def cluster_kubeconfig(path: str | None) -> str:
    """The kubeconfig text the engine gets: the file the controller uses, or one written
    for the Pod's service account in-cluster (token and CA read from files by Helm); the
    context is passed beside it (``ClusterAccess.context``)."""
    if path:
        return Path(path).read_text()
    if os.path.isdir(SERVICE_ACCOUNT) and not os.environ.get("KUBECONFIG"):
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        host = f"[{host}]" if ":" in host else host
        return yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "in-cluster",
            "clusters": [{"name": "in-cluster", "cluster": {
                "server": f"https://{host}:{port}",
                "certificate-authority": f"{SERVICE_ACCOUNT}/ca.crt"}}],
            "users": [{"name": "sa", "user": {"tokenFile": f"{SERVICE_ACCOUNT}/token"}}],
            "contexts": [{"name": "in-cluster",
                          "context": {"cluster": "in-cluster", "user": "sa"}}]})
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    found = next((p for p in listed if os.path.isfile(os.path.expanduser(p))), None)
    return Path(os.path.expanduser(found or "~/.kube/config")).read_text()


@dataclass
class HelmReleaseContext:
    """The I/O a HelmRelease reconcile needs."""

    kube: DynamicClient
    cache: Any
    engine: HelmEngine
    #: The kubeconfig text given to the engine (a secret: never logged).
    kubeconfig: Callable[[], str] = field(repr=False)
    kube_context: str | None = None
    sources: Mapping[str, SourceKind] = field(default_factory=dict)
    served: frozenset[str] = frozenset()
    no_cross_namespace_refs: bool = False
    requeue_dependency: float = 30.0
    clock: Callable[[], float] = time.time
    progress: Progress = no_progress

    #: ``--default-service-account``: impersonated when ``serviceAccountName`` is empty.
    default_service_account: str | None = None

    @classmethod
    def from_deps(cls, deps: Deps) -> HelmReleaseContext:
        """The context the runtime builds for this kind, with the engine ``--helm-engine``
        names (the helm 4 binary by default, at most ``--concurrent-helm`` processes)."""
        o = deps.options
        return cls(kube=deps.kube, cache=deps.cache, engine=make_engine(o.helm_engine,
                                                                        o.concurrent_helm),
                   kubeconfig=lambda: cluster_kubeconfig(o.kubeconfig),
                   kube_context=o.context, sources=deps.sources, served=deps.served,
                   no_cross_namespace_refs=o.no_cross_namespace_refs,
                   requeue_dependency=o.requeue_dependency, progress=deps.progress,
                   default_service_account=o.default_service_account)

    def service_account(self, hr: HelmRelease) -> str | None:
        """``serviceAccountName``, else ``--default-service-account``."""
        return hr.spec.service_account_name or self.default_service_account

    def access(self, hr: HelmRelease) -> ClusterAccess:
        """How the engine reaches the cluster, impersonating the service account."""
        sa = self.service_account(hr)
        imp = Impersonation.for_service_account(hr.metadata.namespace, sa) if sa else None
        return ClusterAccess(kubeconfig=self.kubeconfig(), context=self.kube_context,
                             impersonate=imp)


def make_engine(name: str, max_processes: int = 2) -> HelmEngine:
    """The engine ``--helm-engine`` names: ``binary`` (at most ``max_processes`` helm
    processes at once) or ``sdk`` (Helm's Go SDK in process; extra ``helm``)."""
    if name == "binary":
        return BinaryEngine(max_processes=max_processes)
    if name == "sdk":
        from ocigitops.puller.helm.sdk import SdkEngine
        return SdkEngine()
    raise ValueError(f"unknown helm engine {name!r} (binary or sdk)")


def _ref(hr: HelmRelease) -> ReleaseRef:
    storage = hr.storage_namespace
    return ReleaseRef(hr.release_name, hr.release_namespace,
                      storage if storage != hr.release_namespace else None)


# -- I/O steps ---------------------------------------------------------------------------------


async def compose_values(ctx: HelmReleaseContext, hr: HelmRelease) -> dict[str, Any]:
    """``valuesFrom`` in order, then ``values`` over them."""
    ns = hr.metadata.namespace
    out: dict[str, Any] = {}
    for ref in hr.spec.values_from:
        key = ref.values_key or DEFAULT_VALUES_KEY
        where = f"{ref.kind} {ns}/{ref.name}"
        if ref.kind == "Secret":
            raw = await ctx.kube.secret_data(ns, ref.name)
            data = None if raw is None else {k: v.decode(errors="replace")
                                             for k, v in raw.items()}
        else:
            cm = await ctx.kube.get("v1", "ConfigMap", ref.name, ns)
            data = None if cm is None else dict(cm.get("data") or {})
        if data is None:
            if ref.optional:
                continue
            raise ValuesError(f"valuesFrom {where} not found")
        if key not in data:
            if ref.optional:
                continue
            raise ValuesError(f"valuesFrom {where} has no key {key!r}")
        if ref.target_path:
            out = set_path(out, ref.target_path, typed_value(data[key]))
        else:
            out = merge_values(out, values_document(data[key], f"{where} key {key!r}"))
    return merge_values(out, hr.values)


#: Labels naming the HelmRelease that owns a templated HelmChart.
OWNER_NAME = "helmrelease.ocigitops.dev/name"
OWNER_NAMESPACE = "helmrelease.ocigitops.dev/namespace"


def chart_object(hr: HelmRelease) -> dict[str, Any]:
    """The HelmChart ``spec.chart`` describes, as Flux creates it: ``<ns>-<name>`` in the
    source's namespace, labelled with its owner."""
    tpl = hr.spec.chart
    assert tpl is not None
    t = tpl.spec
    spec: dict[str, Any] = {
        "chart": t.chart, "version": t.version,
        "sourceRef": {"kind": t.source_ref.kind, "name": t.source_ref.name},
        "interval": t.interval or hr.spec.interval,
        "reconcileStrategy": t.reconcile_strategy,
        "ignoreMissingValuesFiles": t.ignore_missing_values_files}
    if t.source_ref.api_version:
        spec["sourceRef"]["apiVersion"] = t.source_ref.api_version
    if t.values_files:
        spec["valuesFiles"] = list(t.values_files)
    if t.verify is not None:
        spec["verify"] = to_dict(t.verify)
    labels = dict(tpl.metadata.labels) if tpl.metadata else {}
    labels.update({OWNER_NAME: hr.metadata.name, OWNER_NAMESPACE: hr.metadata.namespace})
    md: dict[str, Any] = {"name": hr.chart_name, "namespace": hr.chart_namespace,
                          "labels": labels}
    if tpl.metadata and tpl.metadata.annotations:
        md["annotations"] = dict(tpl.metadata.annotations)
    return {"apiVersion": API_VERSION, "kind": "HelmChart", "metadata": md, "spec": spec}


async def _chart(ctx: HelmReleaseContext, hr: HelmRelease) -> SourceArtifact:
    ns = hr.chart_namespace
    if hr.spec.chart is not None:
        kind, name = "HelmChart", hr.chart_name
        src = hr.spec.chart.spec.source_ref
        check_namespace(src.kind, ns, src.name, hr.metadata.namespace,
                        no_cross_namespace_refs=ctx.no_cross_namespace_refs)
    else:
        ref = hr.spec.chart_ref
        assert ref is not None
        kind, name = ref.kind, ref.name
        check_namespace(kind, ns, name, hr.metadata.namespace,
                        no_cross_namespace_refs=ctx.no_cross_namespace_refs)
    if hr.spec.chart is not None:
        try:
            await ctx.kube.apply(chart_object(hr))
        except KubeError as e:
            raise SourceError(f"HelmChart {ns}/{name} could not be created: {e}") from e
    return await get_artifact(ctx.kube, ctx.cache, ctx.sources, ctx.served, kind, ns, name)


async def _source_not_ready(ctx: HelmReleaseContext, hr: HelmRelease) -> str:
    """Why the chart source is not ready, from its own Ready condition (``: source not
    ready: <its message>``), or nothing when it says nothing."""
    if hr.spec.chart is not None:
        kind, name = "HelmChart", hr.chart_name
    elif hr.spec.chart_ref is not None:
        kind, name = hr.spec.chart_ref.kind, hr.spec.chart_ref.name
    else:
        return ""
    try:
        src = await ctx.kube.get(API_VERSION, kind, name, hr.chart_namespace)
    except (KubeError, OcigitopsError):
        return ""
    ready = cond.find(list(((src or {}).get("status") or {}).get("conditions") or []),
                      cond.READY)
    if not ready or ready.get("status") != cond.FALSE or not ready.get("message"):
        return ""
    return f": source not ready: {ready.get('reason')}: {ready['message']}"


def _chart_file(art: SourceArtifact, dest: Path) -> Path:
    """Copy the cached chart archive to ``dest``, verifying its digest."""
    src = art.cache.path(art.digest)
    if src.stat().st_size > CHART_MAX:
        raise OcigitopsError(f"chart archive of {art.ident} is over {CHART_MAX} bytes")
    data = src.read_bytes()
    alg, _, want = art.digest.partition(":")
    if hashlib.new(alg, data).hexdigest() != want:
        src.unlink(missing_ok=True)
        raise ArtifactNotReadyError(f"cached chart of {art.ident} is corrupt: it will be"
                                    " fetched again")
    out = dest / "chart.tgz"
    out.write_bytes(data)
    return out


async def _dependencies(ctx: HelmReleaseContext, hr: HelmRelease) -> None:
    await check_dependencies(ctx.kube, KIND, hr.metadata.namespace, hr.spec.depends_on,
                             no_cross_namespace_refs=ctx.no_cross_namespace_refs)


def _snapshot(rel: Release) -> dict[str, Any]:
    snap: dict[str, Any] = {
        "apiVersion": "v2", "digest": rel.manifest_digest, "name": rel.name,
        "namespace": rel.namespace, "version": rel.revision, "status": rel.status,
        "chartName": rel.chart_name, "chartVersion": rel.chart_version,
        "configDigest": rel.config_digest}
    if rel.app_version:
        snap["appVersion"] = rel.app_version
    for key, when in (("firstDeployed", rel.first_deployed),
                      ("lastDeployed", rel.last_deployed), ("deleted", rel.deleted)):
        if when is not None:
            snap[key] = _iso(when)
    return snap


def _record(status: dict[str, Any], rel: Release) -> None:
    """Upsert ``rel``'s snapshot (by revision), newest first, bounded."""
    history = [dict(h) for h in status.get("history") or []
               if h.get("version") != rel.revision or h.get("name") != rel.name]
    history.insert(0, _snapshot(rel))
    history.sort(key=lambda h: int(h.get("version") or 0), reverse=True)
    status["history"] = history[:HISTORY_LIMIT]


def _mark_history_status(status: dict[str, Any], revisions: list[Release]) -> None:
    """Refresh the status of recorded snapshots from Helm's history (superseded...)."""
    by_rev = {r.revision: r.status for r in revisions}
    for h in status.get("history") or []:
        if h.get("version") in by_rev:
            h["status"] = by_rev[h["version"]]


# -- drift ---------------------------------------------------------------------------------------

#: Fields the API server owns: never a drift.
_VOLATILE_META = ("managedFields", "resourceVersion", "generation", "creationTimestamp",
                  "uid", "selfLink")


def comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` without status and the metadata the API server writes."""
    out = {k: v for k, v in obj.items() if k != "status"}
    out["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items()
                       if k not in _VOLATILE_META}
    return out


def drift_mode(hr: HelmRelease) -> str:
    """``spec.driftDetection.mode`` (``disabled`` when absent)."""
    drift = hr.freeform.get("driftDetection")
    return str(drift.get("mode", "disabled")) if isinstance(drift, Mapping) else "disabled"


def ignore_rules(hr: HelmRelease) -> list[IgnoreRule]:
    """``spec.driftDetection.ignore`` (``InvalidIgnoreRuleError`` when it does not parse)."""
    drift = hr.freeform.get("driftDetection")
    return parse_ignore_rules(drift.get("ignore") if isinstance(drift, Mapping) else None)


async def detect_drift(kube: DynamicClient, manifest: str, namespace: str,
                       impersonate: str | None, *, correct: bool,
                       ignore: list[IgnoreRule] | None = None) -> list[str]:
    """The release's objects that differ from what Helm applied (a server-side dry-run
    apply of the stored manifest compared with the live object) or are missing; with
    ``correct``, each is applied again. Returns ``Kind/ns/name`` of each one drifted.

    ``ignore`` (Flux's ``driftDetection.ignore``): an object a rule ignores whole (path
    ``""``) is skipped; other ignored paths are removed from both sides before comparing,
    and a correction applies them with their live values (so they are neither reported
    nor corrected)."""
    drifted: list[str] = []
    for doc in yaml.safe_load_all(manifest):
        if not isinstance(doc, Mapping) or not doc.get("kind"):
            continue
        api, kind = str(doc.get("apiVersion", "")), str(doc["kind"])
        md = dict(doc.get("metadata") or {})
        info = await kube.resource(api, kind)
        ns = (md.get("namespace") or namespace) if info.namespaced else None
        if ns:
            md["namespace"] = ns
        obj: dict[str, Any] = {**doc, "metadata": md}
        skip = ignored(ignore or [], obj)
        if skip.whole:
            continue
        name = str(md.get("name", ""))
        live = await kube.get(api, kind, name, ns, impersonate=impersonate)
        if live is None:
            drifted.append(f"{kind}/{ns + '/' if ns else ''}{name} (missing)")
        else:
            dry = await kube.apply(obj, dry_run=True, force=True, impersonate=impersonate)
            if comparable(without(dry, skip.paths)) == comparable(without(live, skip.paths)):
                continue
            drifted.append(f"{kind}/{ns + '/' if ns else ''}{name}")
            if skip.paths:
                obj = keep_live(obj, live, skip.paths)
        if correct:
            await kube.apply(obj, force=True, impersonate=impersonate)
    return drifted


# -- reconcile ---------------------------------------------------------------------------------


def _timeout(hr: HelmRelease, specific: str | None) -> float:
    return parse_duration(specific) if specific else hr.spec.timeout_seconds


async def finalize(ctx: HelmReleaseContext, obj: Mapping[str, Any]) -> Outcome:
    """Deletion: uninstall the release (unless suspended), then release the finalizer."""
    status = begin(obj, HelmReleaseStatus).status
    try:
        hr = parse_helmrelease(obj)
    except (ValidationError, ValueError):
        return Outcome(status, None, remove_finalizer=True)
    if hr.spec.chart is not None and not hr.spec.suspend:
        # The HelmChart this HelmRelease created goes with it (as Flux).
        with contextlib.suppress(KubeError):
            await ctx.kube.delete(API_VERSION, "HelmChart", hr.chart_name, hr.chart_namespace)
    if hr.spec.suspend or not status.get("history"):
        return Outcome(status, None, remove_finalizer=True)
    un = hr.spec.uninstall
    req = UninstallRequest(
        ref=_ref(hr), common=Common(timeout=_timeout(hr, un.timeout if un else None),
                                    wait=not (un and un.disable_wait),
                                    disable_hooks=bool(un and un.disable_hooks)),
        keep_history=bool(un and un.keep_history), ignore_not_found=True,
        deletion_propagation=DeletionPropagation(
            (un.deletion_propagation if un else None) or "background"))
    try:
        await ctx.engine.uninstall(ctx.access(hr), req)
    except HelmError as e:
        generation = int((obj.get("metadata") or {}).get("generation") or 0)
        conditions = [dict(c) for c in status.get("conditions") or []]
        cond.mark_failed(conditions, UNINSTALL_FAILED, str(e), generation)
        status["conditions"] = conditions
        return Outcome(status, hr.spec.interval_seconds,
                       [("Warning", UNINSTALL_FAILED, str(e))], failed=True)
    return Outcome(status, None, [("Normal", UNINSTALL_SUCCEEDED,
                                   f"Helm uninstall succeeded for release"
                                   f" {hr.storage_namespace}/{hr.release_name}")],
                   remove_finalizer=True)


async def reconcile(obj: Mapping[str, Any], ctx: HelmReleaseContext) -> Outcome:
    """Reconcile one HelmRelease object (a dict from the API server)."""
    md = obj.get("metadata") or {}
    if md.get("deletionTimestamp"):
        return await finalize(ctx, obj)
    prep = prepare(obj, HelmReleaseStatus, parse_helmrelease)
    if isinstance(prep, Outcome):
        return prep
    hr, start = prep.obj, prep.start
    generation, status, conditions = start.generation, start.status, start.conditions
    add_finalizer = FINALIZER not in (md.get("finalizers") or [])
    interval = hr.spec.interval_seconds

    def stalled(reason: str, msg: str) -> Outcome:
        cond.mark_failed(conditions, reason, msg, generation, stalled=True)
        status["observedGeneration"] = generation
        return Outcome(status, None, [("Warning", reason, msg)], failed=True,
                       add_finalizer=add_finalizer)

    bad = unsupported_fields(hr)
    if bad:
        return stalled(UNSUPPORTED_FIELD, f"not supported by this controller: {', '.join(bad)}"
                       "; remove the field(s), nothing was installed")
    try:
        post = post_renderer(hr.freeform.get("postRenderers"))
        ignore_rules(hr)
    except (InvalidPostRendererError, InvalidIgnoreRuleError) as e:
        return stalled(cond.INVALID_SPEC, f"{e}; nothing was installed")
    post_digest = post_renderers_digest(hr.freeform.get("postRenderers"))
    try:
        source = await _chart(ctx, hr)
        await _dependencies(ctx, hr)
    except CrossNamespaceRefError as e:
        return stalled(cond.ACCESS_DENIED, str(e))
    except (ArtifactNotReadyError, NotReadyError) as e:
        reason = cond.DEPENDENCY_NOT_READY if isinstance(e, NotReadyError) \
            else SOURCE_NOT_READY
        why = "" if isinstance(e, NotReadyError) else await _source_not_ready(ctx, hr)
        msg = f"{e}{why}, retrying in {format_duration(ctx.requeue_dependency)}"
        cond.mark_failed(conditions, reason, msg, generation)
        return Outcome(status, ctx.requeue_dependency, waiting=True,
                       add_finalizer=add_finalizer)
    except SourceError as e:
        cond.mark_failed(conditions, cond.ARTIFACT_FAILED, str(e), generation)
        return Outcome(status, interval, waiting=True, add_finalizer=add_finalizer)
    try:
        values = await compose_values(ctx, hr)
    except ValuesError as e:
        cond.mark_failed(conditions, VALUES_ERROR, str(e), generation)
        return Outcome(status, interval, [("Warning", VALUES_ERROR, str(e))], failed=True,
                       add_finalizer=add_finalizer)
    digest = values_digest(values)
    if source.kind == "HelmChart":
        status["helmChart"] = f"{source.namespace}/{source.name}"
    else:
        status.pop("helmChart", None)
    status["storageNamespace"] = hr.storage_namespace

    # A new chart or new values make a release; with a spec edit they also reset the
    # failure counters (a suspend/resume or an interval edit alone releases nothing).
    new_target = (status.get("lastAttemptedRevisionDigest") != source.digest
                  or status.get("lastAttemptedConfigDigest") != digest
                  or status.get("observedPostRenderersDigest") != post_digest)
    new_config = new_target or status.get("lastAttemptedGeneration") != generation
    if new_config:
        for key in ("failures", "installFailures", "upgradeFailures"):
            status.pop(key, None)
    status["lastAttemptedRevision"] = source.revision
    status["lastAttemptedRevisionDigest"] = source.digest
    status["lastAttemptedConfigDigest"] = digest
    status["lastAttemptedGeneration"] = generation
    status["observedGeneration"] = generation
    if post_digest is None:
        status.pop("observedPostRenderersDigest", None)
    else:
        status["observedPostRenderersDigest"] = post_digest

    access = ctx.access(hr)
    rref = _ref(hr)
    try:
        current: Release | None = await ctx.engine.get(access, rref)
    except ReleaseNotFoundError:
        current = None
    except HelmError as e:
        cond.mark_failed(conditions, INIT_FAILED, str(e), generation)
        return Outcome(status, interval, [("Warning", INIT_FAILED, str(e))], failed=True,
                       add_finalizer=add_finalizer)
    if status.get("failures") and not new_config and cond.is_true(conditions, cond.STALLED):
        # Retries exhausted: only a new chart, new values or a spec edit starts again.
        return Outcome(status, None, add_finalizer=add_finalizer)

    last = (status.get("history") or [{}])[0]
    released = cond.find(conditions, RELEASED)
    if (current is not None and current.status == "deployed" and not new_target
            and current.config_digest == digest and current.revision == last.get("version")
            and released is not None and released.get("status") == cond.TRUE):
        # In sync: nothing to do (a revision made by someone else, a failed or pending
        # one, a new chart or new values make an upgrade), unless objects drifted.
        events: list[tuple[str, str, str]] = []
        mode = drift_mode(hr)
        if mode != "disabled":
            sa = ctx.service_account(hr)
            who = f"system:serviceaccount:{hr.metadata.namespace}:{sa}" if sa else None
            try:
                drifted = await detect_drift(ctx.kube, current.manifest, rref.namespace, who,
                                             correct=mode == "enabled",
                                             ignore=ignore_rules(hr))
            except OcigitopsError as e:
                msg = f"drift detection failed for release {rref.storage}/{rref.name}: {e}"
                cond.mark_failed(conditions, DRIFT_DETECTED, msg, generation)
                return Outcome(status, interval, [("Warning", DRIFT_DETECTED, msg)],
                               failed=True, add_finalizer=add_finalizer)
            if drifted:
                listed = ", ".join(drifted[:5]) + (" ..." if len(drifted) > 5 else "")
                if mode == "enabled":
                    events.append(("Normal", DRIFT_CORRECTED, f"cluster state of release"
                                   f" {rref.storage}/{rref.name}.v{current.revision}"
                                   f" corrected: {listed}"))
                else:
                    events.append(("Warning", DRIFT_DETECTED, f"cluster state of release"
                                   f" {rref.storage}/{rref.name}.v{current.revision}"
                                   f" has drifted: {listed}"))
        cond.mark_ready(conditions, str(released.get("reason")),
                        str(released.get("message")), generation)
        return Outcome(status, interval, events, add_finalizer=add_finalizer)
    install = current is None or current.status == "uninstalled"
    action = "install" if install else "upgrade"
    status["lastAttemptedReleaseAction"] = action
    cond.mark_reconciling(conditions, cond.PROGRESSING,
                          f"Running '{action}' action with timeout of"
                          f" {format_duration(_action_timeout(hr, install))}", generation)
    await ctx.progress(obj, status)
    with tempfile.TemporaryDirectory(prefix="ocigitops-helm-") as tmp:
        try:
            path = await asyncio.to_thread(_chart_file, source, Path(tmp))
        except (OSError, OcigitopsError) as e:
            cond.mark_failed(conditions, cond.ARTIFACT_FAILED, str(e), generation)
            return Outcome(status, ctx.requeue_dependency, waiting=True,
                           add_finalizer=add_finalizer)
        chart = ChartInput(path, values)
        try:
            rel = await (_install(ctx, hr, access, rref, chart, post) if install
                         else _upgrade(ctx, hr, access, rref, chart, post))
        except UnsupportedOptionError as e:
            return stalled(UNSUPPORTED_FIELD, str(e))
        except HelmError as e:
            return await _failed(ctx, hr, obj, status, conditions, access, rref, install, e,
                                 add_finalizer)
    for key in ("failures", "installFailures", "upgradeFailures"):
        status.pop(key, None)
    _record(status, rel)
    with contextlib.suppress(HelmError):
        _mark_history_status(status, await ctx.engine.history(access, rref))
    reason = INSTALL_SUCCEEDED if install else UPGRADE_SUCCEEDED
    msg = (f"Helm {action} succeeded for release {rref.storage}/{rel.name}.v{rel.revision}"
           f" with chart {rel.chart_name}@{rel.chart_version}")
    cond.set_condition(conditions, RELEASED, cond.TRUE, reason, msg, generation)
    cond.remove(conditions, REMEDIATED)
    events = [("Normal", reason, msg)]
    t = hr.spec.test
    if t is None or not t.enable:
        cond.remove(conditions, TEST_SUCCESS)
    else:
        try:
            result = await _test(ctx, hr, access, rref)
        except TestFailedError as e:
            tmsg = f"Helm test failed for release {rref.storage}/{rref.name}: {e}"
            cond.set_condition(conditions, TEST_SUCCESS, cond.FALSE, TEST_FAILED, tmsg,
                               generation)
            if e.result is not None:
                _record_tests(status, e.result)
            events.append(("Warning", TEST_FAILED, tmsg))
            if not _ignore_test_failures(hr, install):
                out = await _failed(ctx, hr, obj, status, conditions, access, rref, install,
                                    e, add_finalizer, released=True)
                out.events[:0] = events
                return out
        else:
            _record_tests(status, result)
            n = len(result.hooks)
            tmsg = (f"Helm test succeeded for release {rref.storage}/{rref.name}"
                    f".v{rel.revision} with {n} test hook(s)")
            cond.set_condition(conditions, TEST_SUCCESS, cond.TRUE, TEST_SUCCEEDED, tmsg,
                               generation)
            events.append(("Normal", TEST_SUCCEEDED, tmsg))
    cond.mark_ready(conditions, reason, msg, generation)
    return Outcome(status, interval, events, changed=True, add_finalizer=add_finalizer)


def _ignore_test_failures(hr: HelmRelease, install: bool) -> bool:
    """``test.ignoreFailures``, overridden by the action's ``remediation.ignoreTestFailures``."""
    block = hr.spec.install if install else hr.spec.upgrade
    rem = block.remediation if block else None
    if rem is not None and rem.ignore_test_failures is not None:
        return rem.ignore_test_failures
    return bool(hr.spec.test and hr.spec.test.ignore_failures)


async def _test(ctx: HelmReleaseContext, hr: HelmRelease, access: ClusterAccess,
                rref: ReleaseRef) -> TestResult:
    t = hr.spec.test
    assert t is not None
    return await ctx.engine.test(access, TestRequest(
        ref=rref, timeout=_timeout(hr, t.timeout),
        include=tuple(f.name for f in t.filters if not f.exclude),
        exclude=tuple(f.name for f in t.filters if f.exclude)))


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


def _record_tests(status: dict[str, Any], result: TestResult) -> None:
    """Put the test hooks' last runs into the snapshot of the tested revision."""
    hooks = {h.name: {k: v for k, v in (("lastStarted", _iso(h.started_at)),
                                        ("lastCompleted", _iso(h.completed_at)),
                                        ("phase", h.phase or None)) if v}
             for h in result.hooks}
    for snap in status.get("history") or []:
        if snap.get("version") == result.release.revision:
            snap["testHooks"] = hooks


def _action_timeout(hr: HelmRelease, install: bool) -> float:
    block = hr.spec.install if install else hr.spec.upgrade
    return _timeout(hr, block.timeout if block else None)


async def _install(ctx: HelmReleaseContext, hr: HelmRelease, access: ClusterAccess,
                   rref: ReleaseRef, chart: ChartInput,
                   post: PostRenderer | None = None) -> Release:
    i = hr.spec.install
    crds = CRDPolicy.SKIP if (i and i.skip_crds) else CRDPolicy((i.crds if i else None)
                                                                or "Create")
    if crds is CRDPolicy.CREATE_REPLACE:
        # Helm has no such mode: the controller applies crds/ itself, Helm skips them.
        await _apply_chart_crds(ctx, hr, chart.path, crds.value, InstallError, rref)
        crds = CRDPolicy.SKIP
    return await ctx.engine.install(access, InstallRequest(
        ref=rref, chart=chart,
        common=Common(timeout=_action_timeout(hr, True), wait=not (i and i.disable_wait),
                      wait_for_jobs=not (i and i.disable_wait_for_jobs) and
                      not (i and i.disable_wait),
                      disable_hooks=bool(i and i.disable_hooks)),
        disable_openapi_validation=bool(i and i.disable_open_api_validation),
        skip_schema_validation=bool(i and i.disable_schema_validation),
        crds=crds, replace=bool(i and i.replace),
        create_namespace=bool(i and i.create_namespace), post_renderer=post))


async def _upgrade(ctx: HelmReleaseContext, hr: HelmRelease, access: ClusterAccess,
                   rref: ReleaseRef, chart: ChartInput,
                   post: PostRenderer | None = None) -> Release:
    u = hr.spec.upgrade
    if u is not None and u.crds in ("Create", "CreateReplace"):
        # Helm never touches crds/ on upgrade: the controller applies them first (Flux).
        await _apply_chart_crds(ctx, hr, chart.path, u.crds, UpgradeError, rref)
    return await ctx.engine.upgrade(access, UpgradeRequest(
        ref=rref, chart=chart,
        common=Common(timeout=_action_timeout(hr, False), wait=not (u and u.disable_wait),
                      wait_for_jobs=not (u and u.disable_wait_for_jobs) and
                      not (u and u.disable_wait),
                      disable_hooks=bool(u and u.disable_hooks)),
        disable_openapi_validation=bool(u and u.disable_open_api_validation),
        skip_schema_validation=bool(u and u.disable_schema_validation),
        crds=CRDPolicy.SKIP, force=bool(u and u.force),
        max_history=_max_history(hr), cleanup_on_fail=bool(u and u.cleanup_on_fail),
        post_renderer=post))


async def _apply_chart_crds(ctx: HelmReleaseContext, hr: HelmRelease, chart: Path,
                            policy: str, error: type[HelmError], rref: ReleaseRef) -> None:
    """The chart's ``crds/`` by ``policy``, as the release's service account; a failure
    is the action's failure (``error``), counted and remediated like any other."""
    sa = ctx.service_account(hr)
    who = f"system:serviceaccount:{hr.metadata.namespace}:{sa}" if sa else None
    try:
        crds = await asyncio.to_thread(chart_crds, chart)
        await apply_crds(ctx.kube, crds, policy, impersonate=who,
                         wait_seconds=_action_timeout(hr, error is InstallError))
    except CRDError as e:
        raise error(f"release {rref.name}: {e}", release=rref.name) from None


def _max_history(hr: HelmRelease) -> int:
    return DEFAULT_MAX_HISTORY if hr.spec.max_history is None else hr.spec.max_history


async def _failed(ctx: HelmReleaseContext, hr: HelmRelease, obj: Mapping[str, Any],
                  status: dict[str, Any], conditions: list[dict[str, Any]],
                  access: ClusterAccess, rref: ReleaseRef, install: bool, error: HelmError,
                  add_finalizer: bool, *, released: bool = False) -> Outcome:
    """Count the failure, remediate, and decide whether and when to retry."""
    generation = int((obj.get("metadata") or {}).get("generation") or 0)
    action = "install" if install else "upgrade"
    reason = INSTALL_FAILED if install else UPGRADE_FAILED
    counter = "installFailures" if install else "upgradeFailures"
    status[counter] = int(status.get(counter) or 0) + 1
    status["failures"] = int(status.get("failures") or 0) + 1
    failures = status[counter]
    msg = f"Helm {action} failed for release {rref.storage}/{rref.name}: {error}"
    events: list[tuple[str, str, str]] = []
    if released:  # the release went out, its tests failed
        msg = f"Helm {action} of release {rref.storage}/{rref.name} failed its tests: {error}"
        reason = TEST_FAILED
    else:
        events.append(("Warning", reason, msg))
        cond.set_condition(conditions, RELEASED, cond.FALSE, reason, msg, generation)
    block = hr.spec.install if install else hr.spec.upgrade
    strategy = block.strategy if block else None
    if strategy is not None and strategy.name == "RetryOnFailure":
        retry_in = parse_duration(strategy.retry_interval) if strategy.retry_interval \
            else DEFAULT_RETRY_INTERVAL
        cond.mark_failed(conditions, reason, msg, generation)
        return Outcome(status, retry_in, events, failed=True, add_finalizer=add_finalizer)
    if install:
        ir = hr.spec.install.remediation if hr.spec.install else None
        decision = remediation_decision(failures, ir.retries if ir else 0,
                                        ir.remediate_last_failure if ir else None)
        how = "uninstall"
    else:
        ur = hr.spec.upgrade.remediation if hr.spec.upgrade else None
        decision = remediation_decision(failures, ur.retries if ur else 0,
                                        ur.remediate_last_failure if ur else None)
        how = (ur.strategy if ur else None) or "rollback"
    if decision.remediate:
        try:
            rel = await _remediate(ctx, hr, access, rref, how)
        except HelmError as e:
            r = UNINSTALL_FAILED if how == "uninstall" else ROLLBACK_FAILED
            m = f"Helm {how} failed for release {rref.storage}/{rref.name}: {e}"
            cond.set_condition(conditions, REMEDIATED, cond.FALSE, r, m, generation)
            events.append(("Warning", r, m))
        else:
            r = UNINSTALL_SUCCEEDED if how == "uninstall" else ROLLBACK_SUCCEEDED
            m = f"Helm {how} succeeded for release {rref.storage}/{rref.name}"
            if rel is not None:
                m += f".v{rel.revision}"
                _record(status, rel)
            else:
                for h in status.get("history") or []:
                    h["status"] = "uninstalled"
            cond.set_condition(conditions, REMEDIATED, cond.TRUE, r, m, generation)
            events.append(("Normal", r, m))
    if not decision.retry:
        n = status[counter]
        stalled_msg = f"Failed to {action} after {n} attempt(s): {error}"
        cond.mark_failed(conditions, RETRIES_EXCEEDED, stalled_msg, generation, stalled=True)
        return Outcome(status, None, events, failed=True, add_finalizer=add_finalizer)
    cond.mark_failed(conditions, reason, msg, generation)
    return Outcome(status, min(hr.spec.interval_seconds, RETRY_AFTER), events, failed=True,
                   add_finalizer=add_finalizer)


#: How soon a failed install or upgrade with retries left is tried again (at most).
RETRY_AFTER = 10.0


async def _remediate(ctx: HelmReleaseContext, hr: HelmRelease, access: ClusterAccess,
                     rref: ReleaseRef, how: str) -> Release | None:
    if how == "uninstall":
        un = hr.spec.uninstall
        await ctx.engine.uninstall(access, UninstallRequest(
            ref=rref, common=Common(timeout=_timeout(hr, un.timeout if un else None),
                                    wait=not (un and un.disable_wait),
                                    disable_hooks=bool(un and un.disable_hooks)),
            keep_history=bool(un and un.keep_history), ignore_not_found=True,
            deletion_propagation=DeletionPropagation(
                (un.deletion_propagation if un else None) or "background")))
        return None
    rb = hr.spec.rollback
    return await ctx.engine.rollback(access, RollbackRequest(
        ref=rref, revision=_last_good(hr),
        common=Common(timeout=_timeout(hr, rb.timeout if rb else None),
                      wait=not (rb and rb.disable_wait),
                      wait_for_jobs=not (rb and (rb.disable_wait_for_jobs
                                                 or rb.disable_wait)),
                      disable_hooks=bool(rb and rb.disable_hooks)),
        force=bool(rb and rb.force), cleanup_on_fail=bool(rb and rb.cleanup_on_fail),
        max_history=_max_history(hr)))


def _last_good(hr: HelmRelease) -> int:
    """The revision to roll back to: the newest recorded one that was deployed or
    superseded (0: Helm's previous revision)."""
    for snap in hr.status.history:
        if snap.status in ("deployed", "superseded"):
            return snap.version
    return 0


def references(obj: Mapping[str, Any]) -> list[ObjectKey]:
    """What wakes a HelmRelease: its chart source and its ``dependsOn``."""
    spec = obj.get("spec") or {}
    ns = (obj.get("metadata") or {}).get("namespace") or ""
    out: list[ObjectKey] = []
    ref = spec.get("chartRef")
    if isinstance(ref, Mapping):
        out.append((str(ref.get("kind")), ref.get("namespace") or ns, str(ref.get("name"))))
    tpl = spec.get("chart")
    if isinstance(tpl, Mapping):
        src = (tpl.get("spec") or {}).get("sourceRef") or {}
        name = (obj.get("metadata") or {}).get("name") or ""
        out.append(("HelmChart", src.get("namespace") or ns, f"{ns}-{name}"))
    for dep in spec.get("dependsOn") or []:
        if isinstance(dep, Mapping):
            out.append((KIND, dep.get("namespace") or ns, str(dep.get("name"))))
    return out


#: HelmRelease's place in the controller runtime.
RECONCILER: Reconciler[HelmReleaseContext] = Reconciler(
    name="helmrelease", kind=KIND, plural="helmreleases",
    status_type=HelmReleaseStatus, context=HelmReleaseContext.from_deps,
    reconcile=reconcile, finalizer=FINALIZER, references=references,
    aliases=("helmreleases", "hr"))

__all__ = ["RECONCILER", "Decision", "HelmReleaseContext", "compose_values", "finalize",
           "merge_values", "reconcile", "remediation_decision", "set_path", "split_path",
           "typed_value", "unsupported_fields", "values_document"]
