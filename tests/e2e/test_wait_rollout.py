"""``ocigitops wait rollout`` against the dev cluster, the real controller and the embedded
registry: CI learns what the cluster did with the digest it pushed (issue 14).

- a new digest pushed to the tag an OCIRepository follows: the command prints progress on
  stderr until the source stored it and the Kustomization applied it and is Ready, then
  exits 0 (``-o json`` names both objects, done);
- a digest whose manifests the API server refuses: exit 1 naming the Kustomization and its
  Ready condition;
- a digest no OCIRepository resolves to: exit 6 when ``--timeout`` runs out, saying so.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from ocigitops import exitcodes
from ocigitops.puller.devcluster import Cluster
from tests.helpers.cli import cli
from tests.helpers.kube import Kube, apply_kustomization, apply_source, wait_applied
from tests.helpers.publish import configmap, manifest_tree, publish
from tests.helpers.registries import Registry

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def _wait(cluster: Cluster, ns: Kube, url: str, *args: str) -> tuple[int, str, str]:
    proc = cli("wait", "rollout", url, "-n", str(ns.namespace), "--kubeconfig",
               str(cluster.kubeconfig), *args, timeout=150)
    return proc.returncode, proc.stdout, proc.stderr


def test_wait_rollout_follows_a_pushed_digest(ns: Kube, kube_cluster: Cluster,
                                             embedded_registry: Registry,
                                             tmp_path: Path) -> None:
    host, repo = embedded_registry.host, f"rollout/{uuid.uuid4().hex[:8]}"
    first = publish(host, repo, manifest_tree(tmp_path, "v1", configmap("app", {"v": "1"})),
                    tag="stable")
    apply_source(ns, "app", host, repo, tag="stable", interval="2s")
    apply_kustomization(ns, "app", "app", interval="2s")
    wait_applied(ns, "app", first)

    # CI pushes a new digest to the tag the source follows, then waits for the cluster.
    second = publish(host, repo, manifest_tree(tmp_path, "v2", configmap("app", {"v": "2"})),
                     tag="stable")
    digest = second.split("@", 1)[1]
    code, out, err = _wait(kube_cluster, ns, f"oci://{host}/{repo}:stable@{digest}",
                           "--timeout", "90s", "-o", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["digest"] == digest
    assert [(o["kind"], o["name"], o["state"]) for o in doc["objects"]] == [
        ("OCIRepository", "app", "done"), ("Kustomization", "app", "done")]
    assert f"Kustomization {ns.namespace}/app: done: applied {second}" in err
    assert "OCIRepository" in err and err.count("\n") >= 2  # progress lines
    # Text output: one line per object, then the verdict.
    code, out, _ = _wait(kube_cluster, ns, f"oci://{host}/{repo}@{digest}", "--timeout", "30s")
    assert code == 0 and out.strip().endswith(f"{host}/{repo}@{digest} rolled out")

    # A digest the API server refuses to apply: the Kustomization's condition, exit 1.
    bad = publish(host, repo, manifest_tree(tmp_path, "v3", configmap("Bad_Name", {"v": "3"})),
                  tag="stable")
    code, _, err = _wait(kube_cluster, ns, f"oci://{host}/{repo}:stable@{bad.split('@')[1]}",
                         "--timeout", "90s")
    assert code == exitcodes.FAILURE, err
    assert f"Kustomization {ns.namespace}/app: failed:" in err
    assert "Bad_Name" in err and "Traceback" not in err

    # A digest nothing resolves to: the timeout, saying what was waited for.
    other = "sha256:" + "0" * 64
    code, _, err = _wait(kube_cluster, ns, f"oci://{host}/{repo}@{other}", "--timeout", "3s")
    assert code == exitcodes.UNREACHABLE, err
    assert f"no OCIRepository of {host}/{repo} resolved to {other}" in err


def test_wait_rollout_refuses_a_url_without_a_digest(tmp_path: Path) -> None:
    proc = cli("wait", "rollout", "oci://ghcr.io/acme/app:v1", "--kubeconfig",
               str(tmp_path / "none"))
    assert proc.returncode == exitcodes.USAGE, proc.stderr
    assert "oci://REPOSITORY[:TAG]@DIGEST" in proc.stderr


def test_push_artifact_action_waits_for_the_rollout(ns: Kube, kube_cluster: Cluster,
                                                    embedded_registry: Registry,
                                                    tmp_path: Path) -> None:
    """push-artifact's ``wait-rollout`` input, run by the local runner with the job's
    KUBECONFIG: the step ends when the cluster applied the pushed digest."""
    import os

    from tests.helpers.actions_runner import CompositeRunner
    from tests.helpers.github import ACTIONS_ENV
    from tests.helpers.paths import REPO_ROOT

    host, repo = embedded_registry.host, f"rollout/{uuid.uuid4().hex[:8]}"
    first = publish(host, repo, manifest_tree(tmp_path, "v1", configmap("app", {"v": "1"})),
                    tag="stable")
    apply_source(ns, "app", host, repo, tag="stable", interval="2s")
    apply_kustomization(ns, "app", "app", interval="2s")
    wait_applied(ns, "app", first)
    ws = tmp_path / "ws"
    (ws / "deploy").mkdir(parents=True)
    (ws / "deploy" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {v: '2'}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "OCIGITOPS_"))}
    runner = CompositeRunner(ws, {**env, **ACTIONS_ENV, "GITHUB_REF_NAME": "main",
                                  "KUBECONFIG": str(kube_cluster.kubeconfig)},
                             temp=tmp_path / "temp")
    run = runner.run(REPO_ROOT / "github-actions" / "push-artifact", {
        "repository": f"{host}/{repo}", "path": "deploy", "tags": "stable",
        "wait-rollout": "90s"}, timeout=150)
    assert run.ok, run.log
    digest = run.outputs["digest"]
    assert f"Kustomization {ns.namespace}/app: done: applied stable@{digest}" in \
        run.step("rollout").stdout
    assert f"**Rollout**: {host}/{repo}@{digest} rolled out" in run.summary
