"""What every reconcile starts with: a working copy of the status, and the handling of a
spec that does not parse (Stalled, no retry: only an edit can fix it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ocigitops.puller import conditions as cond
from ocigitops.puller.api.meta import RECONCILE_REQUESTED_AT


@dataclass
class Outcome:
    """What a reconcile decided: the new status, when to come back, events to record, and
    what the caller should also do (finalizers, waking dependents)."""

    status: dict[str, Any]
    requeue_after: float | None
    events: list[tuple[str, str, str]] = field(default_factory=list)
    failed: bool = False
    #: A source stored a revision it did not have before.
    new_revision: bool = False
    add_finalizer: bool = False
    remove_finalizer: bool = False


@dataclass
class Start:
    """The object's generation and a mutable copy of its status and conditions."""

    generation: int
    status: dict[str, Any]
    conditions: list[dict[str, Any]]

    def invalid(self, error: Exception) -> tuple[str, str, str]:
        """Mark an unparseable spec: Ready=False, Stalled=True; returns the event."""
        cond.mark_failed(self.conditions, "InvalidSpec", str(error), self.generation,
                         stalled=True)
        self.status["observedGeneration"] = self.generation
        return ("Warning", "InvalidSpec", str(error))


def begin(obj: Mapping[str, Any]) -> Start:
    """Copy the status, and record a handled ``requestedAt`` annotation."""
    md = obj.get("metadata") or {}
    status: dict[str, Any] = dict(obj.get("status") or {})
    conditions: list[dict[str, Any]] = [dict(c) for c in status.get("conditions") or []]
    status["conditions"] = conditions
    requested = (md.get("annotations") or {}).get(RECONCILE_REQUESTED_AT)
    if requested:
        status["lastHandledReconcileAt"] = requested
    return Start(int(md.get("generation") or 0), status, conditions)
