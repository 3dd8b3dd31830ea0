"""Conditions as Flux's controllers set them, on the real API server with the controller.

- A Kustomization whose source does not exist, or has no artifact yet, is Ready=False with
  reason ``ArtifactFailed`` (not ``DependencyNotReady``, which is for ``dependsOn``), and
  applies as soon as the source has its artifact.
- A failure that will be retried keeps ``Reconciling=True`` with reason
  ``ProgressingWithRetry``; success removes it.
- ``Healthy`` appears only with ``wait`` or ``healthChecks``: Unknown while the checks run
  (with ``Reconciling=True``/``Progressing`` and ``Ready=Unknown``, written once the
  reconcile has worked a second: manager.PROGRESS_DELAY_S), then True, or False with
  ``HealthCheckFailed``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.kube import (
    KS,
    WAIT,
    Kube,
    apply_kustomization,
    apply_source,
    condition,
    ready_condition,
    wait_applied,
)
from tests.helpers.publish import configmap, manifest_tree, publish
from tests.helpers.registries import Registry

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def ks_condition(ns: Kube, name: str, ctype: str) -> dict[str, object]:
    from ocigitops.puller.api.meta import API_VERSION

    return condition(ns.get(API_VERSION, KS, name), ctype)


def test_missing_source_is_artifact_failed_until_it_exists(ns: Kube, embedded_registry: Registry,
                                                           tmp_path: Path) -> None:
    host, repo = embedded_registry.host, f"cond/{ns.namespace}"
    apply_kustomization(ns, "app", "later")
    ns.wait("ArtifactFailed", lambda: ready_condition(ns, KS, "app").get("reason")
            == "ArtifactFailed", WAIT)
    ready = ready_condition(ns, KS, "app")
    assert ready["status"] == "False"
    assert ready["message"] == f"Source 'OCIRepository/{ns.namespace}/later' not found"
    reconciling = ks_condition(ns, "app", "Reconciling")
    assert (reconciling.get("status"), reconciling.get("reason")) == (
        "True", "ProgressingWithRetry"), reconciling
    assert not ks_condition(ns, "app", "Stalled")

    # The source appears: the Kustomization is woken by it, well before its 1m interval.
    rev = publish(host, repo, manifest_tree(tmp_path, "v1", configmap("cm", {"a": "b"})))
    apply_source(ns, "later", host, repo)
    wait_applied(ns, "app", rev)
    assert not ks_condition(ns, "app", "Reconciling")
    assert not ks_condition(ns, "app", "Healthy")  # no wait, no healthChecks


def test_healthy_condition_follows_the_health_checks(ns: Kube, embedded_registry: Registry,
                                                     tmp_path: Path) -> None:
    host, repo = embedded_registry.host, f"cond/{ns.namespace}"
    rev = publish(host, repo, manifest_tree(tmp_path, "v1", configmap("cm", {"a": "b"})))
    apply_source(ns, "app", host, repo)
    apply_kustomization(ns, "good", "app", wait=True)
    wait_applied(ns, "good", rev)
    healthy = ks_condition(ns, "good", "Healthy")
    assert (healthy.get("status"), healthy.get("reason")) == ("True", "Succeeded"), healthy
    assert str(healthy.get("message")).startswith("Health check passed in")

    # A health check on an object that never appears: while the checks run the status says
    # so, then Healthy=False and Ready=False with HealthCheckFailed, retried.
    apply_kustomization(ns, "bad", "app", timeout="6s", healthChecks=[
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "never", "namespace": ns.namespace}])
    seen: dict[str, object] = {}

    def running() -> bool:
        h = ks_condition(ns, "bad", "Healthy")
        if h.get("status") == "Unknown":
            seen.update(healthy=h, ready=ready_condition(ns, KS, "bad"),
                        reconciling=ks_condition(ns, "bad", "Reconciling"))
            return True
        return False

    ns.wait("health checks running", running, WAIT)
    assert str(seen["healthy"]["message"]).startswith(  # type: ignore[index]
        f"Running health checks for revision {rev} with a timeout of 6s")
    assert seen["ready"]["status"] == "Unknown"  # type: ignore[index]
    assert seen["reconciling"]["reason"] == "Progressing"  # type: ignore[index]

    ns.wait("health check failed", lambda: ready_condition(ns, KS, "bad").get("reason")
            == "HealthCheckFailed", WAIT)
    healthy = ks_condition(ns, "bad", "Healthy")
    assert (healthy.get("status"), healthy.get("reason")) == ("False", "HealthCheckFailed")
    reconciling = ks_condition(ns, "bad", "Reconciling")
    assert reconciling.get("reason") == "ProgressingWithRetry", reconciling
