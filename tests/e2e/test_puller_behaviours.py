"""The puller's behaviours end to end, each in a namespace of its own, against the dev
cluster, real registries and the controller process (fixtures in ``conftest.py``, helpers in
``tests.helpers``).

- the registry goes away: the source says which registry it cannot reach, the applied
  objects stay, and it recovers when a registry serves the same storage again;
- the artifact's tag is deleted: the source names the missing tag, the cluster is unchanged;
- ``dependsOn``: nothing of B is applied before A is Ready;
- ``suspend`` / ``resume`` / ``get`` / ``reconcile --with-source`` through the real CLI;
- impersonation refused by RBAC, then allowed by a RoleBinding;
- the build transformations (postBuild substitution with defaults, targetNamespace,
  namePrefix, images, a targeted strategic-merge patch, commonMetadata);
- the prune-disabled annotation keeps an object that left the source;
- with ``verify``, a refused revision followed by a rollback (the tag moved back to the
  verified digest): Ready and SourceVerified again, the cluster never changed.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest

from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.devcluster import Cluster
from ocigitops.regserver import BackgroundRegistry
from ocigitops.verifier.keys import generate_key_pair
from tests.helpers.kube import (
    KS,
    OCI,
    Kube,
    apply_kustomization,
    apply_source,
    condition,
    configmap_data,
    kube_cli,
    ready_condition,
    status_of,
    wait_applied,
    wait_ready_verdict,
    wait_source_ready,
)
from tests.helpers.publish import configmap, manifest_tree, publish
from tests.helpers.registries import Registry, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def _row(table: str, name: str) -> list[str]:
    """The columns of ``name``'s row in a ``get`` table (columns are two spaces apart)."""
    lines = table.splitlines()
    assert lines and lines[0].split()[:2] == ["NAME", "REVISION"], table
    return next(re.split(r"\s{2,}", line.strip()) for line in lines[1:]
                if line.split()[0] == name)


# --- 1. the registry goes away, then comes back -----------------------------------------

def test_registry_stopped_then_restarted(ns: Kube, kube_cluster: Cluster,
                                         tmp_path: Path) -> None:
    storage = tmp_path / "registry"
    srv = BackgroundRegistry(storage)
    port = srv.port
    try:
        rev = publish(srv.host, "beh/outage", manifest_tree(tmp_path, "v1", configmap(
            "outage", {"version": "v1"})))
        apply_source(ns, "app", srv.host, "beh/outage")
        apply_kustomization(ns, "app", "app")
        wait_applied(ns, "app", rev)
    finally:
        srv.stop()

    # The registry is gone: the source says which one it cannot reach and keeps the
    # last artifact; the applied objects stay.
    out = kube_cli(kube_cluster, ns, "reconcile", "source", "oci", "app", "--timeout", "40",
                   check=False)
    assert "reconciliation failed" in out, out
    ready = ready_condition(ns, OCI, "app")
    assert ready["status"] == "False", ready
    assert f"127.0.0.1:{port}" in ready["message"] and "cannot reach" in ready["message"], ready
    assert condition(ns.get(API_VERSION, OCI, "app"), "FetchFailed").get("status") == "True"
    assert status_of(ns, OCI, "app")["artifact"]["revision"] == rev
    assert configmap_data(ns, "outage") == {"version": "v1"}
    # The Kustomization still reconciles the cached artifact of the last good revision.
    out = kube_cli(kube_cluster, ns, "reconcile", "kustomization", "app", "--timeout", "40")
    assert rev in out
    assert configmap_data(ns, "outage") == {"version": "v1"}

    # A registry on the same storage and port: the source recovers.
    with BackgroundRegistry(storage, port=port):
        out = kube_cli(kube_cluster, ns, "reconcile", "source", "oci", "app", "--timeout", "40")
        assert rev in out, out
        ready = ready_condition(ns, OCI, "app")
        assert ready["status"] == "True", ready
        assert condition(ns.get(API_VERSION, OCI, "app"), "FetchFailed") == {}
        assert status_of(ns, KS, "app")["lastAppliedRevision"] == rev


# --- 2. the artifact's tag is deleted ---------------------------------------------------

def test_tag_deleted(ns: Kube, kube_cluster: Cluster, embedded_registry: Registry,
                     tmp_path: Path) -> None:
    repo = f"beh/{ns.namespace}"
    rev = publish(embedded_registry.host, repo, manifest_tree(tmp_path, "v1", configmap(
        "tagged", {"version": "v1"})), tag="stable")
    apply_source(ns, "app", embedded_registry.host, repo, tag="stable")
    apply_kustomization(ns, "app", "app")
    wait_applied(ns, "app", rev)
    ks_before = status_of(ns, KS, "app")

    resp = httpx.delete(f"http://{embedded_registry.host}/v2/{repo}/manifests/stable")
    assert resp.status_code == 202, resp.text
    out = kube_cli(kube_cluster, ns, "reconcile", "source", "oci", "app", "--timeout", "40",
                   check=False)
    assert "reconciliation failed" in out, out
    ready = ready_condition(ns, OCI, "app")
    assert ready["status"] == "False", ready
    assert ":stable" in ready["message"] and "not found" in ready["message"], ready
    assert status_of(ns, OCI, "app")["artifact"]["revision"] == rev  # last good kept
    # Cluster unchanged.
    assert configmap_data(ns, "tagged") == {"version": "v1"}
    ks_after = status_of(ns, KS, "app")
    assert ks_after["lastAppliedRevision"] == rev
    assert ks_after["inventory"] == ks_before["inventory"]


# --- 3. dependsOn -----------------------------------------------------------------------

def test_depends_on_waits_for_ready(ns: Kube, kube_cluster: Cluster,
                                    embedded_registry: Registry, tmp_path: Path) -> None:
    host = embedded_registry.host
    rev_b = publish(host, f"beh/{ns.namespace}-b", manifest_tree(tmp_path, "b", configmap(
        "from-b", {"owner": "b"})))
    apply_source(ns, "src-b", host, f"beh/{ns.namespace}-b")
    wait_source_ready(ns, "src-b", rev_b)
    # A's source does not exist yet: A cannot become Ready, so B must wait.
    apply_kustomization(ns, "a", "src-a")
    apply_kustomization(ns, "b", "src-b", dependsOn=[{"name": "a"}])
    b_ready = wait_ready_verdict(ns, KS, "b", "B waiting for A", lambda ready, _st: ready.get(
        "reason") == "DependencyNotReady")
    assert "a' is not ready" in b_ready["message"]
    # Asked through the CLI, the answer comes at once: B waits for A (not a timeout).
    started = time.monotonic()
    out = kube_cli(kube_cluster, ns, "reconcile", "kustomization", "b", "--timeout", "30",
                   check=False)
    assert "dependency" in out and "a' is not ready" in out, out
    assert time.monotonic() - started < 20, out
    time.sleep(2)  # B stays unapplied while A is not Ready
    assert configmap_data(ns, "from-b") is None
    assert not status_of(ns, KS, "b").get("lastAppliedRevision")
    assert ready_condition(ns, KS, "a").get("status") != "True"

    rev_a = publish(host, f"beh/{ns.namespace}-a", manifest_tree(tmp_path, "a", configmap(
        "from-a", {"owner": "a"})))
    apply_source(ns, "src-a", host, f"beh/{ns.namespace}-a")
    wait_applied(ns, "a", rev_a)
    wait_applied(ns, "b", rev_b)
    a_ready_at = ready_condition(ns, KS, "a")["lastTransitionTime"]
    b_cm = ns.get("v1", "ConfigMap", "from-b") or {}
    a_cm = ns.get("v1", "ConfigMap", "from-a") or {}
    # RFC 3339 UTC timestamps with second precision compare as strings.
    assert b_cm["metadata"]["creationTimestamp"] >= a_ready_at, (b_cm["metadata"], a_ready_at)
    assert b_cm["metadata"]["creationTimestamp"] >= a_cm["metadata"]["creationTimestamp"]


# --- 4. suspend / resume / get / reconcile through the CLI ------------------------------

def test_suspend_resume_cli(ns: Kube, kube_cluster: Cluster, embedded_registry: Registry,
                            tmp_path: Path) -> None:
    host, repo = embedded_registry.host, f"beh/{ns.namespace}"
    rev1 = publish(host, repo, manifest_tree(tmp_path, "v1", configmap("settings", {"v": "1"})))
    apply_source(ns, "app", host, repo)
    apply_kustomization(ns, "app", "app")
    wait_applied(ns, "app", rev1)

    out = kube_cli(kube_cluster, ns, "suspend", "kustomization", "app")
    assert "suspended" in out
    assert (ns.get(API_VERSION, KS, "app") or {})["spec"]["suspend"] is True
    rev2 = publish(host, repo, manifest_tree(tmp_path, "v2", configmap("settings", {"v": "2"})))
    out = kube_cli(kube_cluster, ns, "reconcile", "source", "oci", "app", "--timeout", "40")
    assert rev2 in out, out
    # The reconcile request is refused while suspended, and the new revision waits.
    out = kube_cli(kube_cluster, ns, "reconcile", "kustomization", "app", check=False)
    assert "suspended" in out, out
    time.sleep(3)
    assert configmap_data(ns, "settings") == {"v": "1"}
    assert status_of(ns, KS, "app")["lastAppliedRevision"] == rev1
    out = kube_cli(kube_cluster, ns, "get", "kustomizations")
    assert _row(out, "app")[:3] == ["app", rev1, "True"], out  # NAME REVISION SUSPENDED

    out = kube_cli(kube_cluster, ns, "resume", "kustomization", "app")
    assert "resumed" in out
    wait_applied(ns, "app", rev2)
    assert configmap_data(ns, "settings") == {"v": "2"}
    out = kube_cli(kube_cluster, ns, "get", "kustomizations")
    assert _row(out, "app")[:4] == ["app", rev2, "False", "True"], out  # ... READY
    out = kube_cli(kube_cluster, ns, "get", "sources", "oci")
    assert rev2 in out, out

    out = kube_cli(kube_cluster, ns, "reconcile", "kustomization", "app", "--with-source",
                   "--timeout", "40")
    assert rev2 in out and "reconciled" in out, out


# --- 5. impersonation and RBAC ----------------------------------------------------------

def test_impersonation_denied_then_granted(ns: Kube, kube_cluster: Cluster,
                                           embedded_registry: Registry,
                                           tmp_path: Path) -> None:
    host, repo = embedded_registry.host, f"beh/{ns.namespace}"
    rev = publish(host, repo, manifest_tree(tmp_path, "v1", configmap("ready-tenant", {"a": "b"})))
    ns.apply({"apiVersion": "v1", "kind": "ServiceAccount",
              "metadata": {"name": "deployer", "namespace": ns.namespace}})
    apply_source(ns, "app", host, repo)
    apply_kustomization(ns, "app", "app", serviceAccountName="deployer")
    message = wait_ready_verdict(ns, KS, "app", "Kustomization refused by RBAC", lambda ready, st:
                                 ready.get("status") == "False"
                                 and st.get("lastAttemptedRevision") == rev)["message"]
    assert "forbidden" in message, message
    assert f"system:serviceaccount:{ns.namespace}:deployer" in message, message
    # Refused by the API server, not a health check (the object's name says "ready").
    assert ready_condition(ns, KS, "app")["reason"] == "ReconciliationFailed"
    assert configmap_data(ns, "ready-tenant") is None
    assert not status_of(ns, KS, "app").get("lastAppliedRevision")

    ns.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
              "metadata": {"name": "deployer-edit", "namespace": ns.namespace},
              "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                          "name": "edit"},
              "subjects": [{"kind": "ServiceAccount", "name": "deployer",
                            "namespace": ns.namespace}]})
    out = kube_cli(kube_cluster, ns, "reconcile", "kustomization", "app", "--timeout", "40")
    assert rev in out, out
    cm = ns.get("v1", "ConfigMap", "ready-tenant") or {}
    assert cm.get("data") == {"a": "b"}
    # Written by the controller's field manager while impersonating the ServiceAccount.
    assert any(m.get("manager") == "ocigitops" for m in cm["metadata"]["managedFields"])


# --- 6. build transformations -----------------------------------------------------------

def test_build_transformations(ns: Kube, kube_api: Kube, embedded_registry: Registry,
                               tmp_path: Path) -> None:
    host, repo = embedded_registry.host, f"beh/{ns.namespace}"
    target = f"{ns.namespace}-target"
    kube_api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": target}})
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                     "containers": [{"name": "web", "image": "registry.example/web:1.0",
                                     "env": [{"name": "COLOR", "value": "${color}"},
                                             {"name": "SIZE",
                                              "value": "${size:=small}"}]}]}}}}
    rev = publish(host, repo, manifest_tree(tmp_path, "v1", deployment, configmap(
        "settings", {"color": "${color}", "region": "${region:=eu-west}"})))
    ns.apply({"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "vars", "namespace": ns.namespace},
              "data": {"color": "red"}})
    apply_source(ns, "app", host, repo)
    apply_kustomization(
        ns, "app", "app", targetNamespace=target, namePrefix="pre-",
        images=[{"name": "registry.example/web", "newName": "mirror.example/web",
                 "newTag": "2.0"}],
        patches=[{"patch": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"
                           "spec:\n  replicas: 2\n",
                  "target": {"kind": "Deployment", "name": "web"}}],
        commonMetadata={"labels": {"team": "blue"}},
        postBuild={"substituteFrom": [{"kind": "ConfigMap", "name": "vars"}]})
    wait_applied(ns, "app", rev)

    cm = ns.get("v1", "ConfigMap", "pre-settings", target) or {}
    assert cm.get("data") == {"color": "red", "region": "eu-west"}, cm
    assert cm["metadata"]["labels"]["team"] == "blue"
    dep = ns.get("apps/v1", "Deployment", "pre-web", target) or {}
    assert dep, "the Deployment was not applied under its prefixed name in the target"
    assert dep["metadata"]["labels"]["team"] == "blue"
    assert dep["spec"]["replicas"] == 2  # the targeted strategic-merge patch
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "mirror.example/web:2.0"
    assert {e["name"]: e["value"] for e in container["env"]} == {"COLOR": "red",
                                                                 "SIZE": "small"}
    # Nothing landed in the Kustomization's own namespace, nothing unprefixed.
    assert ns.get("v1", "ConfigMap", "settings", target) is None
    assert ns.get("apps/v1", "Deployment", "pre-web") is None
    ids = {e["id"] for e in status_of(ns, KS, "app")["inventory"]["entries"]}
    assert ids == {f"{target}_pre-settings__ConfigMap", f"{target}_pre-web_apps_Deployment"}


# --- 7. the prune-disabled annotation ---------------------------------------------------

def test_prune_disabled_annotation(ns: Kube, kube_cluster: Cluster,
                                   embedded_registry: Registry, tmp_path: Path) -> None:
    host, repo = embedded_registry.host, f"beh/{ns.namespace}"
    rev1 = publish(host, repo, manifest_tree(
        tmp_path, "v1", configmap("kept", {"v": "1"},
                                  {"kustomize.ocigitops.dev/prune": "disabled"}),
        configmap("pruned", {"v": "1"}), configmap("stays", {"v": "1"})))
    apply_source(ns, "app", host, repo)
    apply_kustomization(ns, "app", "app")
    wait_applied(ns, "app", rev1)
    assert configmap_data(ns, "kept") == {"v": "1"} and configmap_data(ns, "pruned") == {"v": "1"}

    rev2 = publish(host, repo, manifest_tree(tmp_path, "v2", configmap("stays", {"v": "2"})))
    out = kube_cli(kube_cluster, ns, "reconcile", "kustomization", "app", "--with-source",
                   "--timeout", "40")
    assert rev2 in out, out
    wait_applied(ns, "app", rev2)
    assert configmap_data(ns, "stays") == {"v": "2"}
    assert configmap_data(ns, "pruned") is None
    assert configmap_data(ns, "kept") == {"v": "1"}  # left the source, not pruned
    ids = {e["id"] for e in status_of(ns, KS, "app")["inventory"]["entries"]}
    assert ids == {f"{ns.namespace}_stays__ConfigMap"}


# --- 8. verify: a refused revision, then the tag moved back -----------------------------

def test_verified_rollback_after_refused_revision(ns: Kube, kube_cluster: Cluster,
                                                  embedded_registry: Registry,
                                                  tmp_path: Path) -> None:
    host, repo = embedded_registry.host, f"beh/{ns.namespace}"
    pair = generate_key_pair(b"pw", scrypt_n=1 << 12)
    ns.apply({"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "cosign-pub", "namespace": ns.namespace},
              "stringData": {"cosign.pub": pair.public_pem.decode()}})
    rev1 = publish(host, repo, manifest_tree(tmp_path, "v1", configmap("signed", {"v": "1"})),
                   key_pem=pair.private_pem)
    ns.apply({"apiVersion": API_VERSION, "kind": OCI,
              "metadata": {"name": "app", "namespace": ns.namespace},
              "spec": {"url": f"oci://{host}/{repo}", "insecure": True, "interval": "1m",
                       "ref": {"tag": "latest"},
                       "verify": {"provider": "cosign", "secretRef": {"name": "cosign-pub"}}}})
    apply_kustomization(ns, "app", "app")
    wait_applied(ns, "app", rev1)
    digest1 = rev1.partition("@")[2]

    rev2 = publish(host, repo, manifest_tree(tmp_path, "v2", configmap("signed", {"v": "2"})))
    out = kube_cli(kube_cluster, ns, "reconcile", "source", "oci", "app", "--timeout", "40",
                   check=False)
    assert "reconciliation failed" in out and "verification" in out, out
    src = ns.get(API_VERSION, OCI, "app")
    assert condition(src, "SourceVerified")["status"] == "False"
    assert rev2 in condition(src, "Ready")["message"]

    # Roll back: point the tag at the verified manifest again (what `crane tag` does).
    media = "application/vnd.oci.image.manifest.v1+json"
    got = httpx.get(f"http://{host}/v2/{repo}/manifests/{digest1}", headers={"Accept": media})
    assert got.status_code == 200, got.text
    put = httpx.put(f"http://{host}/v2/{repo}/manifests/latest", content=got.content,
                    headers={"Content-Type": got.headers["Content-Type"]})
    assert put.status_code == 201, put.text
    out = kube_cli(kube_cluster, ns, "reconcile", "source", "oci", "app", "--timeout", "40")
    assert rev1 in out, out
    src = ns.get(API_VERSION, OCI, "app") or {}
    assert condition(src, "Ready")["status"] == "True", src["status"]
    assert condition(src, "SourceVerified")["status"] == "True", src["status"]
    assert src["status"]["verification"]["digest"] == digest1
    assert src["status"]["artifact"]["revision"] == rev1
    assert configmap_data(ns, "signed") == {"v": "1"}
    assert status_of(ns, KS, "app")["lastAppliedRevision"] == rev1


# --- proxySecretRef ---------------------------------------------------------------------

def test_proxy_secret_is_used(ns: Kube, embedded_registry: Registry, tmp_path: Path) -> None:
    """A proxy that does not answer makes the fetch fail (the registry itself is reachable),
    so the proxy from ``proxySecretRef`` is really in the path; removing it recovers."""
    repo = f"beh/{ns.namespace}"
    publish(embedded_registry.host, repo, manifest_tree(tmp_path, "v1", configmap(
        "proxied", {"version": "v1"})))
    dead = free_port()
    ns.apply({"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "proxy", "namespace": ns.namespace},
              "stringData": {"address": f"http://127.0.0.1:{dead}", "username": "u",
                             "password": "p4ss"}})
    ns.apply({"apiVersion": API_VERSION, "kind": OCI,
              "metadata": {"name": "app", "namespace": ns.namespace},
              "spec": {"url": f"oci://{embedded_registry.host}/{repo}", "insecure": True,
                       "interval": "1m", "timeout": "10s", "ref": {"tag": "latest"},
                       "proxySecretRef": {"name": "proxy"}}})
    message = wait_ready_verdict(ns, OCI, "app", "fetch through the dead proxy fails",
                                 lambda ready, _st: ready.get("status") == "False")["message"]
    assert "cannot reach" in message, message
    assert "p4ss" not in json.dumps(status_of(ns, OCI, "app"))  # no secret in status


# --- semver refs ------------------------------------------------------------------------

def test_semver_ref_with_filter(ns: Kube, embedded_registry: Registry, tmp_path: Path) -> None:
    """``ref.semver`` picks the highest matching tag; ``semverFilter`` narrows the tags
    first; prereleases only count when the range names one (Masterminds semantics)."""
    repo = f"beh/{ns.namespace}"
    revs: dict[str, str] = {}
    for t in ("1.0.0", "1.2.0", "1.3.0-rc.1", "2.0.0", "v1.4.0-hotfix"):
        (tmp_path / t).mkdir()
        revs[t] = publish(embedded_registry.host, repo, manifest_tree(tmp_path / t, t, configmap(
            "semver", {"version": t})), tag=t)
    ns.apply({"apiVersion": API_VERSION, "kind": OCI,
              "metadata": {"name": "app", "namespace": ns.namespace},
              "spec": {"url": f"oci://{embedded_registry.host}/{repo}", "insecure": True,
                       "interval": "1m", "ref": {"semver": ">=1.0.0 <2.0.0"}}})
    wait_source_ready(ns, "app", revs["1.2.0"])
    # narrow to the hotfix line: only tags ending in -hotfix, prereleases allowed by range
    ns.apply({"apiVersion": API_VERSION, "kind": OCI,
              "metadata": {"name": "app", "namespace": ns.namespace},
              "spec": {"url": f"oci://{embedded_registry.host}/{repo}", "insecure": True,
                       "interval": "1m", "ref": {"semver": ">=1.0.0-0 <2.0.0",
                                                 "semverFilter": ".*-hotfix$"}}})
    wait_source_ready(ns, "app", revs["v1.4.0-hotfix"])
