"""The manager writes a reconcile's in-progress status only once the reconcile has worked
PROGRESS_DELAY_S (then every later one at once), and never after its final status.

The API client here is a recorder of status patches: what is tested is the order and
number of writes for reconciles shorter and longer than the delay, which the real API
server cannot time for us. tests/e2e/test_conditions.py sees the progress of a slow health
check on the real API server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from ocigitops.puller import conditions as cond
from ocigitops.puller import manager
from ocigitops.puller.reconcile import Outcome
from ocigitops.puller.runtime.options import Options
from ocigitops.puller.sources import oci

pytestmark = pytest.mark.unit

OBJ = {"apiVersion": oci.API_VERSION, "kind": "OCIRepository",
       "metadata": {"name": "app", "namespace": "ns", "generation": 1}, "status": {}}


class _Recorder:
    """Records status patches (the one call these writes make)."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch_status(self, api_version: str, kind: str, name: str, namespace: str,
                           patch: dict[str, Any]) -> None:
        self.patches.append(patch)

    async def event(self, *args: Any) -> None:
        pass


def _shown(patches: list[dict[str, Any]]) -> list[str]:
    """Per patch: the Reconciling message when in progress, else the Ready reason."""
    out = []
    for p in patches:
        conditions = p.get("conditions") or []
        reconciling = cond.find(conditions, cond.RECONCILING)
        out.append(str(reconciling["message"]) if reconciling
                   else str((cond.find(conditions, cond.READY) or {}).get("reason")))
    return out


def _run(tmp_path: Path, steps: list[float]) -> list[str]:
    """A reconcile that reports progress, then sleeps each of ``steps`` seconds and
    reports progress again after each but the last, then ends Ready; what each status
    patch showed, in order."""
    rec = _Recorder()
    ctrl = manager.Controller(Options(cache_dir=str(tmp_path)), cast(Any, None),
                              cast(Any, rec), kinds=())

    async def reconcile(obj: dict[str, Any], ctx: Any) -> Outcome:
        conditions: list[dict[str, Any]] = []
        status: dict[str, Any] = {"conditions": conditions}
        for i, pause in enumerate(steps):
            cond.mark_reconciling(conditions, cond.PROGRESSING, f"step {i}", 1)
            await ctrl._progress(obj, status)
            await asyncio.sleep(pause)
        cond.mark_ready(conditions, cond.SUCCEEDED, "done", 1)
        return Outcome(status, None)

    real = oci.RECONCILER
    fake = SimpleNamespace(kind=real.kind, api_version=real.api_version,
                           status_type=real.status_type, finalizer=None,
                           reconcile=reconcile)
    rt = cast(Any, SimpleNamespace(rec=fake, context=None, waiting=set()))
    ctrl.kinds[real.kind] = rt
    asyncio.run(ctrl._handle(rt, ("ns", "app"), OBJ))
    assert not ctrl._timers and not ctrl._pending and not ctrl._writing
    return _shown(rec.patches)


def test_quick_reconcile_writes_only_its_result(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manager, "PROGRESS_DELAY_S", 0.3)
    assert _run(tmp_path, [0.01, 0.01]) == [cond.SUCCEEDED]


def test_slow_reconcile_shows_progress_then_each_step(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manager, "PROGRESS_DELAY_S", 0.1)
    # Step 0 is written at 0.1 s, step 1 at once (already shown in progress), then the
    # result.
    assert _run(tmp_path, [0.3, 0.01]) == ["step 0", "step 1", cond.SUCCEEDED]
