"""Status conditions, kstatus-compatible, as Flux's controllers set them.

The one condition model: reconcilers change conditions only through these functions, on
the plain dicts of a status in progress, and the runtime writes the status only after it
parses as the kind's typed status (:class:`ocigitops.puller.api.meta.Condition` for each
condition), so a condition that the CRD would refuse or prune never reaches the API
server. Condition types come from :mod:`ocigitops.puller.api.meta`; reasons are here.

``Ready`` says whether the object's last reconciliation succeeded. ``Reconciling`` is True
while work is in progress and stays True after a failure that will be retried, with
reason ``ProgressingWithRetry``; ``Stalled`` is True when retrying cannot help (an invalid
spec). Tools such as ``kubectl wait --for=condition=Ready`` and kstatus read these. A
condition's ``lastTransitionTime`` changes only when its status changes, so status writes
stay quiet when nothing changed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ocigitops.puller.api.meta import (
    ARTIFACT_IN_STORAGE,
    ARTIFACT_OUTDATED,
    FETCH_FAILED,
    HEALTHY,
    READY,
    RECONCILING,
    SOURCE_VERIFIED,
    STALLED,
)

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"

# Reasons, with Flux's names (fluxcd/pkg/apis/meta and the controllers' own).
SUCCEEDED = "Succeeded"
PROGRESSING = "Progressing"
PROGRESSING_WITH_RETRY = "ProgressingWithRetry"
INVALID_SPEC = "InvalidSpec"
ARTIFACT_FAILED = "ArtifactFailed"
ACCESS_DENIED = "AccessDenied"
DEPENDENCY_NOT_READY = "DependencyNotReady"
BUILD_FAILED = "BuildFailed"
RECONCILIATION_SUCCEEDED = "ReconciliationSucceeded"
RECONCILIATION_FAILED = "ReconciliationFailed"
HEALTH_CHECK_FAILED = "HealthCheckFailed"
PRUNE_FAILED = "PruneFailed"
AUTHENTICATION_FAILED = "AuthenticationFailed"
OCI_PULL_FAILED = "OCIArtifactPullFailed"
VERIFICATION_ERROR = "VerificationError"
UNSUPPORTED_PROVIDER = "UnsupportedProvider"
NEW_ARTIFACT = "NewArtifact"
WAITING_FOR_TERMINATION = "WaitingForTermination"

__all__ = [
    "ARTIFACT_IN_STORAGE", "ARTIFACT_OUTDATED", "FALSE", "FETCH_FAILED", "HEALTHY", "READY",
    "RECONCILING", "SOURCE_VERIFIED", "STALLED", "TRUE", "UNKNOWN", "find", "mark_failed",
    "mark_ready", "mark_reconciling", "now_iso", "remove", "set_condition",
]


def now_iso() -> str:
    """Current time in Kubernetes' RFC 3339 form (seconds, ``Z``)."""
    return datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def find(conditions: list[dict[str, Any]], ctype: str) -> dict[str, Any] | None:
    """The condition of ``ctype``, or None."""
    return next((c for c in conditions if c.get("type") == ctype), None)


def is_true(conditions: list[dict[str, Any]], ctype: str) -> bool:
    """Whether the condition of ``ctype`` is there and True."""
    return (find(conditions, ctype) or {}).get("status") == TRUE


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
    """Work in progress: Reconciling=True with what is being done, Ready=Unknown
    ("Reconciliation in progress", as kustomize-controller writes it: a Ready=False left
    from the last attempt must not pass for the verdict on this one), Stalled removed."""
    set_condition(conditions, RECONCILING, TRUE, reason, message, generation)
    remove(conditions, STALLED)
    set_condition(conditions, READY, UNKNOWN, reason, "Reconciliation in progress",
                  generation)


def mark_ready(conditions: list[dict[str, Any]], reason: str, message: str,
               generation: int | None) -> None:
    """Success: Ready=True; Reconciling and Stalled removed."""
    set_condition(conditions, READY, TRUE, reason, message, generation)
    remove(conditions, RECONCILING)
    remove(conditions, STALLED)


def mark_failed(conditions: list[dict[str, Any]], reason: str, message: str,
                generation: int | None, *, stalled: bool = False) -> None:
    """Failure: Ready=False with the reason.

    As Flux: a failure that will be retried keeps ``Reconciling=True`` with reason
    ``ProgressingWithRetry`` (kstatus reads the object as still in progress); one that
    retrying cannot fix sets ``Stalled=True`` and drops ``Reconciling``.
    """
    set_condition(conditions, READY, FALSE, reason, message, generation)
    if stalled:
        remove(conditions, RECONCILING)
        set_condition(conditions, STALLED, TRUE, reason, message, generation)
    else:
        remove(conditions, STALLED)
        set_condition(conditions, RECONCILING, TRUE, PROGRESSING_WITH_RETRY, message,
                      generation)
