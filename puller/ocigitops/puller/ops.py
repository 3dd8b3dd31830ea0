"""Day-to-day operations on our objects: list, request a reconcile, suspend, resume.

The CLI's ``get``, ``reconcile``, ``suspend`` and ``resume`` commands are thin shells over
these functions, which tests call directly.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from ocigitops.errors import OcigitopsError
from ocigitops.puller import conditions as cond
from ocigitops.puller.api.meta import API_VERSION, RECONCILE_REQUESTED_AT
from ocigitops.puller.kube import DynamicClient


@dataclass
class Row:
    """One line of ``get``."""

    namespace: str
    name: str
    revision: str
    suspended: bool
    ready: str
    message: str


def _row(obj: dict[str, Any], kind: str) -> Row:
    md, st = obj.get("metadata") or {}, obj.get("status") or {}
    ready = cond.find(list(st.get("conditions") or []), cond.READY) or {}
    revision = ((st.get("artifact") or {}).get("revision", "") if kind == "OCIRepository"
                else st.get("lastAppliedRevision", ""))
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
        raise OcigitopsError(f"{kind} {namespace}/{name} not found")
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
        # A Kustomization whose dependencies or source are not ready yet keeps
        # Reconciling=True (it will retry) with Ready=False/DependencyNotReady: that is the
        # answer to this request, not "still working"; waiting for Reconciling to clear
        # would end in a misleading "did not handle the request" after the whole timeout.
        waiting = handled and ready.get("status") == cond.FALSE and ready.get(
            "reason") == "DependencyNotReady"
        done = handled and ready.get("status") in (cond.TRUE, cond.FALSE) and not cond.find(
            list(st.get("conditions") or []), cond.RECONCILING)
        if waiting or done:
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
