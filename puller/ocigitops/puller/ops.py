"""Day-to-day operations on our objects: list, request a reconcile, suspend, resume.

The CLI's ``get``, ``reconcile``, ``suspend`` and ``resume`` commands are thin shells over
these functions, which tests call directly. The functions taking a ``kubeconfig`` are whole
commands (they open and close the API client); the ones taking a
:class:`~ocigitops.puller.kube.DynamicClient` work on an open one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from lightkube.core.exceptions import ConfigError

from ocigitops.errors import OcigitopsError, UsageError
from ocigitops.puller import conditions as cond
from ocigitops.puller.api.meta import API_VERSION, RECONCILE_REQUESTED_AT
from ocigitops.puller.kube import DynamicClient
from ocigitops.table import format_table


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
async def connect(kubeconfig: str | None) -> AsyncIterator[DynamicClient]:
    """An API client from ``kubeconfig`` (None: ``$KUBECONFIG`` or in-cluster), closed
    on exit.

    A kubeconfig that cannot be read, or an API server that cannot be reached, is an
    OcigitopsError: one line for the user, as every other failure, not a traceback.
    """
    try:
        dyn = DynamicClient.from_kubeconfig(kubeconfig)
    except ConfigError as e:
        raise OcigitopsError(f"kubeconfig: {e}") from e
    try:
        yield dyn
    except httpx.TransportError as e:
        raise OcigitopsError(f"cannot reach the Kubernetes API server: {e}") from e
    finally:
        await dyn.aclose()


@dataclass(frozen=True)
class Target:
    """One object a command names: its kind and name (the namespace comes separately)."""

    kind: str
    name: str


def parse_target(kind: str, args: Sequence[str]) -> Target:
    """The object named by ``source oci NAME`` or ``kustomization NAME`` (``kind`` is the
    first word, ``args`` the rest). Raises UsageError showing the expected form."""
    if kind == "source":
        if len(args) != 2 or args[0] != "oci":
            raise UsageError("usage: source oci NAME")
        return Target("OCIRepository", args[1])
    if len(args) != 1:
        raise UsageError("usage: kustomization NAME")
    return Target("Kustomization", args[0])


async def get_objects(kubeconfig: str | None, kind: str, namespace: str | None) -> list[Row]:
    """``get``: rows for every object of ``kind`` in ``namespace`` (None: all of them)."""
    async with connect(kubeconfig) as dyn:
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


async def reconcile(kubeconfig: str | None, target: Target, namespace: str, *,
                    with_source: bool = False, wait: float = 120.0) -> ReconcileResult:
    """``reconcile``: ask the controller to reconcile ``target`` now and wait for it.

    With ``with_source``, a Kustomization's source is reconciled first (in the source's
    namespace, default the Kustomization's), so the object is built from the newest
    artifact. ``wait`` bounds each wait for the controller, in seconds. Raises as
    :func:`request_reconcile` does.
    """
    async with connect(kubeconfig) as dyn:
        source = None
        if with_source and target.kind == "Kustomization":
            ks = await dyn.get(API_VERSION, "Kustomization", target.name, namespace)
            ref = ((ks or {}).get("spec") or {}).get("sourceRef") or {}
            if ref.get("name"):
                source = await request_reconcile(dyn, ref.get("kind", "OCIRepository"),
                                                 ref["name"], ref.get("namespace") or namespace,
                                                 wait=wait)
        row = await request_reconcile(dyn, target.kind, target.name, namespace, wait=wait)
    return ReconcileResult(target=target, namespace=namespace, row=row, source=source)


@dataclass(frozen=True)
class SuspendResult:
    """The object whose ``spec.suspend`` was set, and to what."""

    target: Target
    namespace: str
    suspended: bool

    def summary(self) -> str:
        """One line: ``Kustomization NS/NAME suspended`` (or ``resumed``)."""
        state = "suspended" if self.suspended else "resumed"
        return f"{self.target.kind} {self.namespace}/{self.target.name} {state}"


async def suspend(kubeconfig: str | None, target: Target, namespace: str,
                  suspended: bool = True) -> SuspendResult:
    """``suspend`` (``suspended=True``) or ``resume`` (False) reconciliation of ``target``."""
    async with connect(kubeconfig) as dyn:
        await set_suspend(dyn, target.kind, target.name, namespace, suspended)
    return SuspendResult(target=target, namespace=namespace, suspended=suspended)
