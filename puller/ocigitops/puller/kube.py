"""A small dynamic Kubernetes client for objects of any kind.

lightkube gives typed models and watches for our own resources; applying arbitrary
manifests (any group, any CRD) needs kind-to-resource mapping from the discovery API and
raw server-side apply, which this module does on the httpx client lightkube configures
from the kubeconfig (TLS, certificates, tokens, exec plugins). Impersonation (a
Kustomization's ``serviceAccountName``) is a per-request header, so one connection pool
serves every tenant.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.kubeconfig import (
    DEFAULT_KUBECONFIG,
    SERVICE_ACCOUNT,
    KubeConfig,
    SingleConfig,
)
from lightkube.core.exceptions import ConfigError

from ocigitops import exitcodes, httplog, netstream
from ocigitops.errors import ClusterUnreachableError, ConfigurationError, OcigitopsError, UsageError

FIELD_MANAGER = "ocigitops"

#: Connections to the API server: as many kept alive as may be open. httpcore closes an
#: idle connection whenever more connections than ``max_keepalive_connections`` exist
#: (it counts all of them, idle or not), so with its defaults (100 open, 20 kept) a busy
#: controller reconnected, TLS handshake included, for most requests. Each request also
#: checks every pooled connection, so the pool is kept small: requests beyond it queue.
API_LIMITS = httpx.Limits(max_connections=16, max_keepalive_connections=16)


class KubeError(OcigitopsError):
    """The API server refused a request; ``status`` and ``reason`` come from it.

    The exit code follows the status: 404 is not found, 401 and 403 are denied.
    """

    def __init__(self, message: str, *, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.exit_code = {404: exitcodes.NOT_FOUND, 401: exitcodes.DENIED,
                          403: exitcodes.DENIED}.get(status, exitcodes.FAILURE)


class UnknownKindError(KubeError):
    """No API resource serves this apiVersion and kind (a CRD may be missing)."""


@dataclass(frozen=True)
class ResourceInfo:
    """Where a kind lives: ``/api[s]/<group>/<version>/[namespaces/<ns>/]<plural>``."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The collection or object path."""
        base = f"/api/{self.version}" if not self.group else \
            f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


@dataclass(frozen=True)
class KubeconfigSource:
    """Where a client's configuration came from, for messages that name what was tried."""

    #: The kubeconfig file, or ``in-cluster`` (the Pod's service account).
    path: str
    context: str | None
    server: str

    def describe(self) -> str:
        """``https://host:6443 (context dev, kubeconfig ~/.kube/config)``."""
        ctx = f"context {self.context}, " if self.context else ""
        where = "in-cluster service account" if self.path == "in-cluster" else \
            f"kubeconfig {self.path}"
        return f"{self.server} ({ctx}{where})"


def load_kubeconfig(path: str | None = None, context: str | None = None,
                    ) -> tuple[SingleConfig, KubeconfigSource]:
    """The configuration of ``context`` (None: the current one) in ``path``.

    Without ``path``: in-cluster (a Pod's service account), else ``$KUBECONFIG`` (its
    first existing file when it lists several), else ``~/.kube/config``, as kubectl and
    flux look. Raises ConfigurationError naming the file tried and how to point
    elsewhere, UsageError for a ``context`` the file does not have.
    """
    shown = path
    try:
        if path:
            cfg = KubeConfig.from_file(path)
        elif os.path.isdir(SERVICE_ACCOUNT) and not os.environ.get("KUBECONFIG"):
            shown = "in-cluster"
            cfg = KubeConfig.from_service_account()
        else:
            listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
            shown = next((p for p in listed if os.path.isfile(os.path.expanduser(p))),
                         listed[0] if listed else DEFAULT_KUBECONFIG)
            cfg = KubeConfig.from_file(shown)
    except ConfigError as e:
        if "not found" in str(e):
            raise ConfigurationError(
                f"kubeconfig: {shown} not found: pass --kubeconfig FILE or set $KUBECONFIG"
                " (`ocigitops dev cluster up --kubeconfig-out FILE` writes one)") from e
        raise ConfigurationError(f"kubeconfig {shown}: {e}") from e
    except (OSError, ValueError, KeyError, TypeError) as e:
        # A file that is not a kubeconfig (YAML errors are ValueErrors).
        raise ConfigurationError(f"kubeconfig {shown} cannot be read: {e}") from e
    try:
        single = cfg.get(context)
    except ConfigError as e:
        if context:
            raise UsageError(f"--context {context}: kubeconfig {shown} has no such context"
                             f" (it has: {', '.join(sorted(cfg.contexts)) or 'none'})") from e
        raise ConfigurationError(f"kubeconfig {shown} has no current context: pass"
                                 " --context NAME") from e
    if single is None:
        raise ConfigurationError(f"kubeconfig {shown} has no context {context or '(current)'}")
    return single, KubeconfigSource(str(shown), single.context_name, single.cluster.server)


def split_api_version(api_version: str) -> tuple[str, str]:
    """``apps/v1`` -> (``apps``, ``v1``); ``v1`` -> (``""``, ``v1``)."""
    group, _, version = api_version.rpartition("/")
    return group, version


def _message(resp: httpx.Response) -> tuple[str, str]:
    try:
        doc = resp.json()
        return str(doc.get("message") or resp.reason_phrase), str(doc.get("reason") or "")
    except ValueError:
        return resp.text[:300] or resp.reason_phrase, ""


class DynamicClient:
    """Get, apply (server-side), delete any object; discover kinds on demand."""

    def __init__(self, http: httpx.AsyncClient, *, field_manager: str = FIELD_MANAGER,
                 source: KubeconfigSource | None = None) -> None:
        self.http = http
        httplog.install(http)
        #: Where the configuration came from (None when built from an httpx client).
        self.source = source
        self.field_manager = field_manager
        self._kinds: dict[tuple[str, str], ResourceInfo] = {}
        self._groups_seen: set[str] = set()
        self._lock = asyncio.Lock()

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, *, context: str | None = None,
                        timeout: float = 30.0) -> DynamicClient:
        """Build from a kubeconfig file, or as :func:`load_kubeconfig` looks when
        ``path`` is None; ``timeout`` bounds each request."""
        single, source = load_kubeconfig(path, context)
        params = ConnectionParams(timeout=httpx.Timeout(timeout)).httpx_params(single)
        http = httpx.AsyncClient(**params, limits=API_LIMITS)
        netstream.install(http)
        return cls(http, source=source)

    def unreachable(self, e: BaseException) -> ClusterUnreachableError:
        """The one-line error for a request that could not reach the API server."""
        where = self.source.describe() if self.source else str(self.http.base_url)
        cause = httplog.transport_cause(e)
        return ClusterUnreachableError(
            f"cannot reach the Kubernetes API server {where}: {cause}; is the cluster"
            " running? (--kubeconfig and --context pick another)")

    async def server_version(self) -> str:
        """The API server's ``gitVersion`` (``v1.31.0``): a cheap reachability check.
        Raises ClusterUnreachableError when it cannot be reached."""
        try:
            resp = await self.http.get("/version")
        except httpx.TransportError as e:
            raise self.unreachable(e) from e
        self._raise(resp, "GET /version")
        return str(resp.json().get("gitVersion", ""))

    async def aclose(self) -> None:
        """Close connections."""
        await self.http.aclose()

    async def _discover_group(self, group_version: str) -> None:
        path = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
        resp = await self.http.get(path)
        if resp.status_code == 404:
            return
        if resp.status_code != 200:
            msg, reason = _message(resp)
            raise KubeError(f"discovery of {group_version} failed: {msg}",
                            status=resp.status_code, reason=reason)
        group, version = split_api_version(group_version)
        for r in resp.json().get("resources") or []:
            if "/" in r["name"]:
                continue  # subresources
            self._kinds[(group_version, r["kind"])] = ResourceInfo(
                group, version, r["kind"], r["name"], bool(r.get("namespaced")))
        self._groups_seen.add(group_version)

    async def resource(self, api_version: str, kind: str, *, refresh: bool = False,
                       ) -> ResourceInfo:
        """Map apiVersion and kind to a resource, asking discovery when unknown."""
        key = (api_version, kind)
        if key in self._kinds and not refresh:
            return self._kinds[key]
        async with self._lock:
            if refresh or api_version not in self._groups_seen or key not in self._kinds:
                await self._discover_group(api_version)
        try:
            return self._kinds[key]
        except KeyError:
            raise UnknownKindError(f"no matches for kind {kind!r} in version {api_version!r}:"
                                   " is its CRD installed?", status=404,
                                   reason="NotFound") from None

    @staticmethod
    def _headers(impersonate: str | None) -> dict[str, str]:
        return {"Impersonate-User": impersonate} if impersonate else {}

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None, *, impersonate: str | None = None,
                  ) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        info = await self.resource(api_version, kind)
        resp = await self.http.get(info.path(namespace, name),
                                   headers=self._headers(impersonate))
        if resp.status_code == 404:
            return None
        self._raise(resp, f"get {kind} {namespace + '/' if namespace else ''}{name}")
        out: dict[str, Any] = resp.json()
        return out

    async def list_page(self, api_version: str, kind: str, namespace: str | None = None, *,
                        limit: int = 500, cont: str | None = None,
                        impersonate: str | None = None,
                        ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a LIST (``limit`` objects at most, as ``impersonate`` when set):
        its items and the token of the next page (None on the last)."""
        info = await self.resource(api_version, kind)
        params: dict[str, str | int] = {"limit": limit}
        if cont:
            params["continue"] = cont
        resp = await self.http.get(info.path(namespace if info.namespaced else None),
                                   params=params, headers=self._headers(impersonate))
        self._raise(resp, f"list {kind}{' in ' + namespace if namespace else ''}")
        doc = resp.json()
        return (list(doc.get("items") or []),
                (doc.get("metadata") or {}).get("continue") or None)

    async def list(self, api_version: str, kind: str, namespace: str | None = None, *,
                   labels: str | None = None) -> list[dict[str, Any]]:
        """All objects of a kind (optionally by label selector)."""
        info = await self.resource(api_version, kind)
        params = {"labelSelector": labels} if labels else None
        resp = await self.http.get(info.path(namespace), params=params)
        self._raise(resp, f"list {kind}")
        return list(resp.json().get("items") or [])

    async def apply(self, obj: Mapping[str, Any], *, dry_run: bool = False,
                    force: bool = False, impersonate: str | None = None) -> dict[str, Any]:
        """Server-side apply ``obj`` with our field manager; returns the server's object."""
        api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        md = obj.get("metadata") or {}
        info = await self.resource(api_version, kind)
        namespace = md.get("namespace") if info.namespaced else None
        params = {"fieldManager": self.field_manager}
        if force:
            params["force"] = "true"
        if dry_run:
            params["dryRun"] = "All"
        resp = await self.http.patch(
            info.path(namespace, md.get("name")), params=params,
            content=json.dumps(obj).encode(),
            headers={"Content-Type": "application/apply-patch+yaml",
                     **self._headers(impersonate)})
        self._raise(resp, f"{'dry-run ' if dry_run else ''}apply {kind}"
                          f" {namespace + '/' if namespace else ''}{md.get('name')}")
        out: dict[str, Any] = resp.json()
        return out

    async def delete(self, api_version: str, kind: str, name: str,
                     namespace: str | None = None, *, impersonate: str | None = None,
                     propagation: str = "Background") -> bool:
        """Delete an object; False when it was already gone."""
        info = await self.resource(api_version, kind)
        resp = await self.http.request(
            "DELETE", info.path(namespace if info.namespaced else None, name),
            headers=self._headers(impersonate),
            json={"kind": "DeleteOptions", "apiVersion": "v1",
                  "propagationPolicy": propagation})
        if resp.status_code == 404:
            return False
        self._raise(resp, f"delete {kind} {name}")
        return True

    async def merge_patch(self, api_version: str, kind: str, name: str, namespace: str,
                          body: Mapping[str, Any], *, subresource: str = "",
                          ) -> dict[str, Any]:
        """JSON merge-patch an object (or its ``status`` subresource)."""
        info = await self.resource(api_version, kind)
        path = info.path(namespace, name) + (f"/{subresource}" if subresource else "")
        resp = await self.http.patch(path, content=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/merge-patch+json"})
        self._raise(resp, f"update {subresource + ' of ' if subresource else ''}{kind}"
                          f" {namespace}/{name}")
        out: dict[str, Any] = resp.json()
        return out

    async def patch_status(self, api_version: str, kind: str, name: str, namespace: str,
                           status: Mapping[str, Any]) -> dict[str, Any]:
        """Merge-patch the status subresource (our own objects' status)."""
        return await self.merge_patch(api_version, kind, name, namespace, {"status": status},
                                      subresource="status")

    async def patch_metadata(self, api_version: str, kind: str, name: str, namespace: str,
                             metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Merge-patch metadata (finalizers, annotations)."""
        return await self.merge_patch(api_version, kind, name, namespace,
                                      {"metadata": metadata})

    async def secret_data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """A Secret's decoded data, or None when it does not exist."""
        obj = await self.get("v1", "Secret", name, namespace)
        if obj is None:
            return None
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}

    async def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str,
                    *, component: str = "ocigitops-controller") -> None:
        """Record a core/v1 Event on ``obj`` (best effort: failures are ignored)."""
        md = obj.get("metadata") or {}
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ns = md.get("namespace") or "default"
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{md.get('name')}.{uuid.uuid4().hex[:12]}",
                         "namespace": ns},
            "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                               "name": md.get("name"), "namespace": ns,
                               "uid": md.get("uid"),
                               "resourceVersion": md.get("resourceVersion")},
            "type": type_, "reason": reason, "message": message[:1024],
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "source": {"component": component}, "reportingComponent": component,
        }
        info = await self.resource("v1", "Event")
        with contextlib.suppress(httpx.HTTPError):
            await self.http.post(info.path(ns), content=json.dumps(event).encode(),
                                 headers={"Content-Type": "application/json"})

    @staticmethod
    def _raise(resp: httpx.Response, what: str) -> None:
        if resp.is_success:
            return
        msg, reason = _message(resp)
        raise KubeError(f"{what}: {msg}", status=resp.status_code, reason=reason)
