"""Status conditions, kstatus-compatible, as Flux's controllers set them.

``Ready`` says whether the object's last reconciliation succeeded. ``Reconciling`` is True
while work is in progress (and absent otherwise); ``Stalled`` is True when retrying cannot
help (for example an invalid spec). Tools such as ``kubectl wait --for=condition=Ready``
and kstatus read these. A condition's ``lastTransitionTime`` changes only when its status
changes, so status writes stay quiet when nothing changed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


def now_iso() -> str:
    """Current time in Kubernetes' RFC 3339 form (seconds, ``Z``)."""
    return datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def find(conditions: list[dict[str, Any]], ctype: str) -> dict[str, Any] | None:
    """The condition of ``ctype``, or None."""
    return next((c for c in conditions if c.get("type") == ctype), None)


def set_condition(conditions: list[dict[str, Any]], ctype: str, status: str, reason: str,
                  message: str, generation: int | None = None) -> bool:
    """Set a condition in place; returns True when anything changed.

    Messages are truncated to 32 KiB (the API server's limit for condition messages).
    """
    message = message[:32 * 1024]
    cond = find(conditions, ctype)
    if cond is None:
        cond = {"type": ctype}
        conditions.append(cond)
    changed = (cond.get("status"), cond.get("reason"), cond.get("message"),
               cond.get("observedGeneration")) != (status, reason, message, generation)
    if cond.get("status") != status or "lastTransitionTime" not in cond:
        cond["lastTransitionTime"] = now_iso()
    cond["status"] = status
    cond["reason"] = reason
    cond["message"] = message
    if generation is not None:
        cond["observedGeneration"] = generation
    return changed


def remove(conditions: list[dict[str, Any]], ctype: str) -> bool:
    """Drop a condition; True when it was there."""
    before = len(conditions)
    conditions[:] = [c for c in conditions if c.get("type") != ctype]
    return len(conditions) != before


def mark_reconciling(conditions: list[dict[str, Any]], reason: str, message: str,
                     generation: int | None) -> None:
    """Work in progress: Reconciling=True, Ready=Unknown (unless already False)."""
    set_condition(conditions, RECONCILING, TRUE, reason, message, generation)
    ready = find(conditions, READY)
    if ready is None or ready.get("status") != FALSE:
        set_condition(conditions, READY, UNKNOWN, reason, message, generation)


def mark_ready(conditions: list[dict[str, Any]], reason: str, message: str,
               generation: int | None) -> None:
    """Success: Ready=True; Reconciling and Stalled removed."""
    set_condition(conditions, READY, TRUE, reason, message, generation)
    remove(conditions, RECONCILING)
    remove(conditions, STALLED)


def mark_failed(conditions: list[dict[str, Any]], reason: str, message: str,
                generation: int | None, *, stalled: bool = False) -> None:
    """Failure: Ready=False with the reason; Stalled=True when retrying cannot help."""
    set_condition(conditions, READY, FALSE, reason, message, generation)
    remove(conditions, RECONCILING)
    if stalled:
        set_condition(conditions, STALLED, TRUE, reason, message, generation)
    else:
        remove(conditions, STALLED)
