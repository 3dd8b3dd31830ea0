"""The puller's behaviours end to end, each in a namespace of its own, against the dev
cluster, real registries and the controller process (fixtures in ``conftest.py``).

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

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ocigitops.artifact import Metadata
from ocigitops.publisher.artifacts import push_artifact
from ocigitops.publisher.sign_cosign import sign_cosign_key
from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.devcluster import Cluster
from ocigitops.reference import parse_reference
from ocigitops.registry import RegistryClient
from ocigitops.regserver import BackgroundRegistry
from ocigitops.verifier.keys import generate_key_pair, load_private_key
from tests.cli import ocigitops
from tests.e2e.conftest import Kube, condition
from tests.registries import Registry, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

OCI = "OCIRepository"
KS = "Kustomization"
#: Every wait below is bounded well under the per-test budget of 60 s.
WAIT = 40.0


# --- helpers ----------------------------------------------------------------------------

def _configmap(name: str, data: dict[str, str], annotations: dict[str, str] | None = None,
               ) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name}
    if annotations:
        md["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": md, "data": data}


def _tree(tmp: Path, label: str, *objs: dict[str, Any]) -> Path:
    """A directory with one manifest file per object (no kustomization.yaml: generated)."""
    root = tmp / f"tree-{label}"
    root.mkdir()
    for i, obj in enumerate(objs):
        (root / f"{i:02d}-{obj['kind'].lower()}.yaml").write_text(
            yaml.safe_dump(obj, sort_keys=False))
    return root


def _publish(host: str, repo: str, tree: Path, tag: str = "latest",
             key_pem: bytes | None = None) -> str:
    """Push ``tree`` to ``host/repo:tag`` (signed with the cosign key ``key_pem``, password
    ``pw``, when given); Flux's revision ``tag@digest``."""
    async def go() -> str:
        ref = parse_reference(f"{host}/{repo}:{tag}")
        async with RegistryClient(insecure=True) as c:
            pushed = await push_artifact(c, ref, tree, Metadata(
                "https://example.com/behaviours", f"main@sha1:{'b' * 40}"))
            if key_pem is not None:
                await sign_cosign_key(c, ref.repo_only(), pushed.digest,
                                      load_private_key(key_pem, b"pw"))
            return str(pushed.digest)

    return f"{tag}@{asyncio.run(go())}"


def _source(kube: Kube, name: str, host: str, repo: str, tag: str = "latest",
            interval: str = "1m") -> None:
    kube.apply({"apiVersion": API_VERSION, "kind": OCI,
                "metadata": {"name": name, "namespace": kube.namespace},
                "spec": {"url": f"oci://{host}/{repo}", "insecure": True, "interval": interval,
                         "timeout": "20s", "ref": {"tag": tag}}})


def _kustomization(kube: Kube, name: str, source: str, **spec: Any) -> None:
    body: dict[str, Any] = {"sourceRef": {"kind": OCI, "name": source}, "path": "./",
                            "interval": "1m", "prune": True, "timeout": "30s",
                            "targetNamespace": kube.namespace}
    body.update(spec)
    kube.apply({"apiVersion": API_VERSION, "kind": KS,
                "metadata": {"name": name, "namespace": kube.namespace}, "spec": body})


def _ready(kube: Kube, kind: str, name: str) -> dict[str, Any]:
    return condition(kube.get(API_VERSION, kind, name), "Ready")


def _status(kube: Kube, kind: str, name: str) -> dict[str, Any]:
    return dict((kube.get(API_VERSION, kind, name) or {}).get("status") or {})


def _wait_source_ready(kube: Kube, name: str, revision: str) -> None:
    kube.wait(f"{OCI} {name} Ready at {revision}", lambda: (
        _ready(kube, OCI, name).get("status") == "True"
        and (_status(kube, OCI, name).get("artifact") or {}).get("revision") == revision),
        WAIT)


def _wait_applied(kube: Kube, name: str, revision: str) -> None:
    kube.wait(f"{KS} {name} applied {revision}", lambda: (
        _status(kube, KS, name).get("lastAppliedRevision") == revision
        and _ready(kube, KS, name).get("status") == "True"), WAIT)


def _cm_data(kube: Kube, name: str, ns: str | None = None) -> dict[str, str] | None:
    cm = kube.get("v1", "ConfigMap", name, ns or kube.namespace)
    return None if cm is None else dict(cm.get("data") or {})


def _cli(cluster: Cluster, kube: Kube, *args: str, check: bool = True) -> str:
    """Run the real ``ocigitops`` CLI against the dev cluster in ``kube``'s namespace;
    stdout and stderr together."""
    out = ocigitops(*args, "-n", str(kube.namespace), "--kubeconfig",
                    str(cluster.kubeconfig), check=check)
    return out.stdout + out.stderr


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
        rev = _publish(srv.host, "beh/outage", _tree(tmp_path, "v1", _configmap(
            "outage", {"version": "v1"})))
        _source(ns, "app", srv.host, "beh/outage")
        _kustomization(ns, "app", "app")
        _wait_applied(ns, "app", rev)
    finally:
        srv.stop()

    # The registry is gone: the source says which one it cannot reach and keeps the
    # last artifact; the applied objects stay.
    out = _cli(kube_cluster, ns, "reconcile", "source", "oci", "app", "--timeout", "40",
               check=False)
    assert "reconciliation failed" in out, out
    ready = _ready(ns, OCI, "app")
    assert ready["status"] == "False", ready
    assert f"127.0.0.1:{port}" in ready["message"] and "cannot reach" in ready["message"], ready
    assert condition(ns.get(API_VERSION, OCI, "app"), "FetchFailed").get("status") == "True"
    assert _status(ns, OCI, "app")["artifact"]["revision"] == rev
    assert _cm_data(ns, "outage") == {"version": "v1"}
    # The Kustomization still reconciles the cached artifact of the last good revision.
    out = _cli(kube_cluster, ns, "reconcile", "kustomization", "app", "--timeout", "40")
    assert rev in out
    assert _cm_data(ns, "outage") == {"version": "v1"}

    # A registry on the same storage and port: the source recovers.
    with BackgroundRegistry(storage, port=port):
        out = _cli(kube_cluster, ns, "reconcile", "source", "oci", "app", "--timeout", "40")
        assert rev in out, out
        ready = _ready(ns, OCI, "app")
        assert ready["status"] == "True", ready
        assert condition(ns.get(API_VERSION, OCI, "app"), "FetchFailed") == {}
        assert _status(ns, KS, "app")["lastAppliedRevision"] == rev


# --- 2. the artifact's tag is deleted ---------------------------------------------------

def test_tag_deleted(ns: Kube, kube_cluster: Cluster, embedded_registry: Registry,
                     tmp_path: Path) -> None:
    repo = f"beh/{ns.namespace}"
    rev = _publish(embedded_registry.host, repo, _tree(tmp_path, "v1", _configmap(
        "tagged", {"version": "v1"})), tag="stable")
    _source(ns, "app", embedded_registry.host, repo, tag="stable")
    _kustomization(ns, "app", "app")
    _wait_applied(ns, "app", rev)
    ks_before = _status(ns, KS, "app")

    resp = httpx.delete(f"http://{embedded_registry.host}/v2/{repo}/manifests/stable")
    assert resp.status_code == 202, resp.text
    out = _cli(kube_cluster, ns, "reconcile", "source", "oci", "app", "--timeout", "40",
               check=False)
    assert "reconciliation failed" in out, out
    ready = _ready(ns, OCI, "app")
    assert ready["status"] == "False", ready
    assert ":stable" in ready["message"] and "not found" in ready["message"], ready
    assert _status(ns, OCI, "app")["artifact"]["revision"] == rev  # last good kept
    # Cluster unchanged.
    assert _cm_data(ns, "tagged") == {"version": "v1"}
    ks_after = _status(ns, KS, "app")
    assert ks_after["lastAppliedRevision"] == rev
    assert ks_after["inventory"] == ks_before["inventory"]


# --- 3. dependsOn -----------------------------------------------------------------------

def test_depends_on_waits_for_ready(ns: Kube, kube_cluster: Cluster,
                                    embedded_registry: Registry, tmp_path: Path) -> None:
    host = embedded_registry.host
    rev_b = _publish(host, f"beh/{ns.namespace}-b", _tree(tmp_path, "b", _configmap(
        "from-b", {"owner": "b"})))
    _source(ns, "src-b", host, f"beh/{ns.namespace}-b")
    _wait_source_ready(ns, "src-b", rev_b)
    # A's source does not exist yet: A cannot become Ready, so B must wait.
    _kustomization(ns, "a", "src-a")
    _kustomization(ns, "b", "src-b", dependsOn=[{"name": "a"}])
    ns.wait("B waiting for A", lambda: _ready(ns, KS, "b").get("reason")
            == "DependencyNotReady", WAIT)
    assert "a' is not ready" in _ready(ns, KS, "b")["message"]
    # Asked through the CLI, the answer comes at once: B waits for A (not a timeout).
    started = time.monotonic()
    out = _cli(kube_cluster, ns, "reconcile", "kustomization", "b", "--timeout", "30",
               check=False)
    assert "dependency" in out and "a' is not ready" in out, out
    assert time.monotonic() - started < 20, out
    time.sleep(2)  # B stays unapplied while A is not Ready
    assert _cm_data(ns, "from-b") is None
    assert not _status(ns, KS, "b").get("lastAppliedRevision")
    assert _ready(ns, KS, "a").get("status") != "True"

    rev_a = _publish(host, f"beh/{ns.namespace}-a", _tree(tmp_path, "a", _configmap(
        "from-a", {"owner": "a"})))
    _source(ns, "src-a", host, f"beh/{ns.namespace}-a")
    _wait_applied(ns, "a", rev_a)
    _wait_applied(ns, "b", rev_b)
    a_ready_at = _ready(ns, KS, "a")["lastTransitionTime"]
    b_cm = ns.get("v1", "ConfigMap", "from-b") or {}
    a_cm = ns.get("v1", "ConfigMap", "from-a") or {}
    # RFC 3339 UTC timestamps with second precision compare as strings.
    assert b_cm["metadata"]["creationTimestamp"] >= a_ready_at, (b_cm["metadata"], a_ready_at)
    assert b_cm["metadata"]["creationTimestamp"] >= a_cm["metadata"]["creationTimestamp"]


# --- 4. suspend / resume / get / reconcile through the CLI ------------------------------

def test_suspend_resume_cli(ns: Kube, kube_cluster: Cluster, embedded_registry: Registry,
                            tmp_path: Path) -> None:
    host, repo = embedded_registry.host, f"beh/{ns.namespace}"
    rev1 = _publish(host, repo, _tree(tmp_path, "v1", _configmap("settings", {"v": "1"})))
    _source(ns, "app", host, repo)
    _kustomization(ns, "app", "app")
    _wait_applied(ns, "app", rev1)

    out = _cli(kube_cluster, ns, "suspend", "kustomization", "app")
    assert "suspended" in out
    assert (ns.get(API_VERSION, KS, "app") or {})["spec"]["suspend"] is True
    rev2 = _publish(host, repo, _tree(tmp_path, "v2", _configmap("settings", {"v": "2"})))
    out = _cli(kube_cluster, ns, "reconcile", "source", "oci", "app", "--timeout", "40")
    assert rev2 in out, out
    # The reconcile request is refused while suspended, and the new revision waits.
    out = _cli(kube_cluster, ns, "reconcile", "kustomization", "app", check=False)
    assert "suspended" in out, out
    time.sleep(3)
    assert _cm_data(ns, "settings") == {"v": "1"}
    assert _status(ns, KS, "app")["lastAppliedRevision"] == rev1
    out = _cli(kube_cluster, ns, "get", "kustomizations")
    assert _row(out, "app")[:3] == ["app", rev1, "True"], out  # NAME REVISION SUSPENDED

    out = _cli(kube_cluster, ns, "resume", "kustomization", "app")
    assert "resumed" in out
    _wait_applied(ns, "app", rev2)
    assert _cm_data(ns, "settings") == {"v": "2"}
    out = _cli(kube_cluster, ns, "get", "kustomizations")
    assert _row(out, "app")[:4] == ["app", rev2, "False", "True"], out  # ... READY
    out = _cli(kube_cluster, ns, "get", "sources", "oci")
    assert rev2 in out, out

    out = _cli(kube_cluster, ns, "reconcile", "kustomization", "app", "--with-source",
               "--timeout", "40")
    assert rev2 in out and "reconciled" in out, out


# --- 5. impersonation and RBAC ----------------------------------------------------------

def test_impersonation_denied_then_granted(ns: Kube, kube_cluster: Cluster,
                                           embedded_registry: Registry,
                                           tmp_path: Path) -> None:
    host, repo = embedded_registry.host, f"beh/{ns.namespace}"
    rev = _publish(host, repo, _tree(tmp_path, "v1", _configmap("ready-tenant", {"a": "b"})))
    ns.apply({"apiVersion": "v1", "kind": "ServiceAccount",
              "metadata": {"name": "deployer", "namespace": ns.namespace}})
    _source(ns, "app", host, repo)
    _kustomization(ns, "app", "app", serviceAccountName="deployer")
    ns.wait("Kustomization refused by RBAC", lambda: _ready(ns, KS, "app").get("status")
            == "False" and _status(ns, KS, "app").get("lastAttemptedRevision") == rev, WAIT)
    message = _ready(ns, KS, "app")["message"]
    assert "forbidden" in message, message
    assert f"system:serviceaccount:{ns.namespace}:deployer" in message, message
    # Refused by the API server, not a health check (the object's name says "ready").
    assert _ready(ns, KS, "app")["reason"] == "ReconciliationFailed"
    assert _cm_data(ns, "ready-tenant") is None
    assert not _status(ns, KS, "app").get("lastAppliedRevision")

    ns.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
              "metadata": {"name": "deployer-edit", "namespace": ns.namespace},
              "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                          "name": "edit"},
              "subjects": [{"kind": "ServiceAccount", "name": "deployer",
                            "namespace": ns.namespace}]})
    out = _cli(kube_cluster, ns, "reconcile", "kustomization", "app", "--timeout", "40")
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
    rev = _publish(host, repo, _tree(tmp_path, "v1", deployment, _configmap(
        "settings", {"color": "${color}", "region": "${region:=eu-west}"})))
    ns.apply({"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "vars", "namespace": ns.namespace},
              "data": {"color": "red"}})
    _source(ns, "app", host, repo)
    _kustomization(
        ns, "app", "app", targetNamespace=target, namePrefix="pre-",
        images=[{"name": "registry.example/web", "newName": "mirror.example/web",
                 "newTag": "2.0"}],
        patches=[{"patch": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"
                           "spec:\n  replicas: 2\n",
                  "target": {"kind": "Deployment", "name": "web"}}],
        commonMetadata={"labels": {"team": "blue"}},
        postBuild={"substituteFrom": [{"kind": "ConfigMap", "name": "vars"}]})
    _wait_applied(ns, "app", rev)

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
    ids = {e["id"] for e in _status(ns, KS, "app")["inventory"]["entries"]}
    assert ids == {f"{target}_pre-settings__ConfigMap", f"{target}_pre-web_apps_Deployment"}


# --- 7. the prune-disabled annotation ---------------------------------------------------

def test_prune_disabled_annotation(ns: Kube, kube_cluster: Cluster,
                                   embedded_registry: Registry, tmp_path: Path) -> None:
    host, repo = embedded_registry.host, f"beh/{ns.namespace}"
    rev1 = _publish(host, repo, _tree(
        tmp_path, "v1", _configmap("kept", {"v": "1"},
                                   {"kustomize.ocigitops.dev/prune": "disabled"}),
        _configmap("pruned", {"v": "1"}), _configmap("stays", {"v": "1"})))
    _source(ns, "app", host, repo)
    _kustomization(ns, "app", "app")
    _wait_applied(ns, "app", rev1)
    assert _cm_data(ns, "kept") == {"v": "1"} and _cm_data(ns, "pruned") == {"v": "1"}

    rev2 = _publish(host, repo, _tree(tmp_path, "v2", _configmap("stays", {"v": "2"})))
    out = _cli(kube_cluster, ns, "reconcile", "kustomization", "app", "--with-source",
               "--timeout", "40")
    assert rev2 in out, out
    _wait_applied(ns, "app", rev2)
    assert _cm_data(ns, "stays") == {"v": "2"}
    assert _cm_data(ns, "pruned") is None
    assert _cm_data(ns, "kept") == {"v": "1"}  # left the source, not pruned
    ids = {e["id"] for e in _status(ns, KS, "app")["inventory"]["entries"]}
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
    rev1 = _publish(host, repo, _tree(tmp_path, "v1", _configmap("signed", {"v": "1"})),
                    key_pem=pair.private_pem)
    ns.apply({"apiVersion": API_VERSION, "kind": OCI,
              "metadata": {"name": "app", "namespace": ns.namespace},
              "spec": {"url": f"oci://{host}/{repo}", "insecure": True, "interval": "1m",
                       "ref": {"tag": "latest"},
                       "verify": {"provider": "cosign", "secretRef": {"name": "cosign-pub"}}}})
    _kustomization(ns, "app", "app")
    _wait_applied(ns, "app", rev1)
    digest1 = rev1.partition("@")[2]

    rev2 = _publish(host, repo, _tree(tmp_path, "v2", _configmap("signed", {"v": "2"})))
    out = _cli(kube_cluster, ns, "reconcile", "source", "oci", "app", "--timeout", "40",
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
    out = _cli(kube_cluster, ns, "reconcile", "source", "oci", "app", "--timeout", "40")
    assert rev1 in out, out
    src = ns.get(API_VERSION, OCI, "app") or {}
    assert condition(src, "Ready")["status"] == "True", src["status"]
    assert condition(src, "SourceVerified")["status"] == "True", src["status"]
    assert src["status"]["verification"]["digest"] == digest1
    assert src["status"]["artifact"]["revision"] == rev1
    assert _cm_data(ns, "signed") == {"v": "1"}
    assert _status(ns, KS, "app")["lastAppliedRevision"] == rev1


# --- proxySecretRef ---------------------------------------------------------------------

def test_proxy_secret_is_used(ns: Kube, embedded_registry: Registry, tmp_path: Path) -> None:
    """A proxy that does not answer makes the fetch fail (the registry itself is reachable),
    so the proxy from ``proxySecretRef`` is really in the path; removing it recovers."""
    repo = f"beh/{ns.namespace}"
    _publish(embedded_registry.host, repo, _tree(tmp_path, "v1", _configmap(
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
    ns.wait("fetch through the dead proxy fails", lambda: _ready(ns, OCI, "app").get(
        "status") == "False", 40)
    message = _ready(ns, OCI, "app")["message"]
    assert "cannot reach" in message, message
    assert "p4ss" not in json.dumps(_status(ns, OCI, "app"))  # no secret in status


# --- semver refs ------------------------------------------------------------------------

def test_semver_ref_with_filter(ns: Kube, embedded_registry: Registry, tmp_path: Path) -> None:
    """``ref.semver`` picks the highest matching tag; ``semverFilter`` narrows the tags
    first; prereleases only count when the range names one (Masterminds semantics)."""
    repo = f"beh/{ns.namespace}"
    revs: dict[str, str] = {}
    for t in ("1.0.0", "1.2.0", "1.3.0-rc.1", "2.0.0", "v1.4.0-hotfix"):
        (tmp_path / t).mkdir()
        revs[t] = _publish(embedded_registry.host, repo, _tree(tmp_path / t, t, _configmap(
            "semver", {"version": t})), tag=t)
    ns.apply({"apiVersion": API_VERSION, "kind": OCI,
              "metadata": {"name": "app", "namespace": ns.namespace},
              "spec": {"url": f"oci://{embedded_registry.host}/{repo}", "insecure": True,
                       "interval": "1m", "ref": {"semver": ">=1.0.0 <2.0.0"}}})
    _wait_source_ready(ns, "app", revs["1.2.0"])
    # narrow to the hotfix line: only tags ending in -hotfix, prereleases allowed by range
    ns.apply({"apiVersion": API_VERSION, "kind": OCI,
              "metadata": {"name": "app", "namespace": ns.namespace},
              "spec": {"url": f"oci://{embedded_registry.host}/{repo}", "insecure": True,
                       "interval": "1m", "ref": {"semver": ">=1.0.0-0 <2.0.0",
                                                 "semverFilter": ".*-hotfix$"}}})
    _wait_source_ready(ns, "app", revs["v1.4.0-hotfix"])
