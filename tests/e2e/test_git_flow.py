"""GitRepository end to end (issue 11): a real kube-apiserver, the controller as a real
process (the module's shared one, every kind), and Git's own ``git http-backend`` on
127.0.0.1 (:mod:`tests.helpers.gitservers`), with basic auth from a Secret.

1. GitRepository + Kustomization (``sourceRef.kind: GitRepository``) apply a tree; a new
   commit is applied and prunes what it removed; a force-push to an older commit is applied
   as the new desired state; the Git server stopped leaves the cluster unchanged
   (``FetchFailed``, the Kustomization keeps its revision) and the source recovers by itself
   when the server is back; ``get sources git`` and ``reconcile source git`` on it;
2. ``verify.mode: HEAD`` with an SSH key Secret: a signed commit is applied, an unsigned one
   is refused and the cluster keeps the last good revision;
3. ``include``: another GitRepository's artifact copied into a path; a new commit of the
   included repository wakes the including one, and the Kustomization applies it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.devcluster import Cluster
from ocigitops.puller.kube import DynamicClient
from tests.helpers.gitservers import GitHTTPServer, GitRepo, http_server, ssh_key
from tests.helpers.kube import (
    KS,
    ControllerProcess,
    Kube,
    condition,
    configmap_data,
    kube_cli,
    status_of,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

GIT = "GitRepository"
WAIT = 60.0
USER, PASSWORD = "git", "s3cret-pw"


@pytest.fixture
def gitns(ns: Kube) -> Iterator[Kube]:
    """``ns``, with this module's GitRepositories suspended before it is dropped (the
    shared fixture knows OCIRepository and Kustomization only): a stopped Git server
    would otherwise keep failing every interval until the namespace is gone."""
    yield ns
    namespace = str(ns.namespace)

    async def suspend(d: DynamicClient, name: str) -> None:
        await d.merge_patch(API_VERSION, GIT, name, namespace, {"spec": {"suspend": True}})

    for obj in ns.list(API_VERSION, GIT):
        ns.call(functools.partial(suspend, name=obj["metadata"]["name"]))


def _cm(name: str, **data: str) -> str:
    body = "".join(f"  {k}: \"{v}\"\n" for k, v in data.items())
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n{body}"


def _auth_secret(ns: Kube) -> None:
    ns.apply({"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "git-auth", "namespace": ns.namespace},
              "stringData": {"username": USER, "password": PASSWORD}})


def _git_repository(ns: Kube, name: str, url: str, **spec: Any) -> None:
    body: dict[str, Any] = {"url": url, "insecure": True, "interval": "5s", "timeout": "10s",
                            "secretRef": {"name": "git-auth"}, "ref": {"branch": "main"}}
    body.update(spec)
    ns.apply({"apiVersion": API_VERSION, "kind": GIT,
              "metadata": {"name": name, "namespace": ns.namespace}, "spec": body})


def _kustomization(ns: Kube, name: str, source: str, path: str = "./deploy") -> None:
    ns.apply({"apiVersion": API_VERSION, "kind": KS,
              "metadata": {"name": name, "namespace": ns.namespace},
              "spec": {"sourceRef": {"kind": GIT, "name": source}, "path": path,
                       "interval": "1m", "prune": True, "timeout": "30s",
                       "targetNamespace": ns.namespace}})


def _request(ns: Kube, kind: str, name: str) -> None:
    """Ask for a reconcile now (the ``requestedAt`` annotation, as the CLI does)."""
    ns.call(lambda d: d.patch_metadata(API_VERSION, kind, name, str(ns.namespace), {
        "annotations": {"reconcile.ocigitops.dev/requestedAt": str(time.time_ns())}}))


def _revision(ns: Kube, name: str) -> str:
    return str((status_of(ns, GIT, name).get("artifact") or {}).get("revision") or "")


def _wait_source(ns: Kube, name: str, revision: str) -> dict[str, Any]:
    ns.wait(f"{GIT} {name} Ready at {revision}", lambda: (
        condition(ns.get(API_VERSION, GIT, name), "Ready").get("status") == "True"
        and _revision(ns, name) == revision), WAIT)
    return status_of(ns, GIT, name)


def _wait_applied(ns: Kube, name: str, revision: str) -> None:
    ns.wait(f"{KS} {name} applied {revision}", lambda: (
        status_of(ns, KS, name).get("lastAppliedRevision") == revision
        and condition(ns.get(API_VERSION, KS, name), "Ready").get("status") == "True"), WAIT)


def test_git_flow_new_commit_force_push_outage_and_cli(
        gitns: Kube, controller: ControllerProcess, kube_cluster: Cluster,
        tmp_path: Path) -> None:
    ns = gitns
    repo = GitRepo.create(tmp_path / "repos")
    sha1 = repo.commit("one", {"deploy/cm-a.yaml": _cm("cm-a", v="1"),
                               "deploy/cm-keep.yaml": _cm("cm-keep", v="1"),
                               "README.md": "not applied\n"})
    _auth_secret(ns)
    with ExitStack() as stack:
        srv: GitHTTPServer = stack.enter_context(
            http_server(tmp_path / "repos", username=USER, password=PASSWORD))
        port = int(srv.base.rsplit(":", 1)[1])
        _git_repository(ns, "app", srv.url())
        _kustomization(ns, "app", "app")

        # 1. the tree is fetched, stored and applied
        rev1 = f"main@sha1:{sha1}"
        st = _wait_source(ns, "app", rev1)
        assert condition({"status": st}, "ArtifactInStorage").get("status") == "True"
        assert st["artifact"]["digest"].startswith("sha256:")
        _wait_applied(ns, "app", rev1)
        assert configmap_data(ns, "cm-a") == {"v": "1"}
        inventory = {e["id"] for e in status_of(ns, KS, "app")["inventory"]["entries"]}
        assert inventory == {f"{ns.namespace}_cm-a__ConfigMap",
                             f"{ns.namespace}_cm-keep__ConfigMap"}

        # 2. a new commit removes cm-a and adds cm-b: applied, cm-a pruned
        (repo.work / "deploy" / "cm-a.yaml").unlink()
        sha2 = repo.commit("two", {"deploy/cm-b.yaml": _cm("cm-b", v="2")})
        _request(ns, GIT, "app")
        rev2 = f"main@sha1:{sha2}"
        _wait_source(ns, "app", rev2)
        _wait_applied(ns, "app", rev2)
        assert configmap_data(ns, "cm-b") == {"v": "2"}
        ns.wait("cm-a pruned", lambda: configmap_data(ns, "cm-a") is None, 20)

        # 3. a force-push back to the first commit is the new desired state
        repo.force_branch("main", sha1)
        _request(ns, GIT, "app")
        _wait_source(ns, "app", rev1)
        _wait_applied(ns, "app", rev1)
        assert configmap_data(ns, "cm-a") == {"v": "1"}
        ns.wait("cm-b pruned", lambda: configmap_data(ns, "cm-b") is None, 20)

        # 4. the Git server goes away: the source says why, the cluster does not change
        stack.close()
        _request(ns, GIT, "app")
        ns.wait(f"{GIT} app FetchFailed", lambda: condition(
            ns.get(API_VERSION, GIT, "app"), "FetchFailed").get("status") == "True", WAIT)
        src = ns.get(API_VERSION, GIT, "app") or {}
        ready = condition(src, "Ready")
        assert ready["status"] == "False" and ready["reason"] == "GitOperationFailed", ready
        assert f"127.0.0.1:{port}" in ready["message"] or "connect" in ready["message"].lower()
        assert PASSWORD not in str(src)
        assert src["status"]["artifact"]["revision"] == rev1  # the last good artifact stays
        _request(ns, KS, "app")
        time.sleep(3)
        ks = ns.get(API_VERSION, KS, "app") or {}
        assert ks["status"]["lastAppliedRevision"] == rev1
        assert configmap_data(ns, "cm-a") == {"v": "1"}

    # 5. the server is back on the same port: the next interval recovers by itself
    with http_server(tmp_path / "repos", username=USER, password=PASSWORD, port=port) as srv:
        ns.wait(f"{GIT} app recovered", lambda: (
            condition(ns.get(API_VERSION, GIT, "app"), "Ready").get("status") == "True"
            and not condition(ns.get(API_VERSION, GIT, "app"), "FetchFailed")), WAIT)
        assert _revision(ns, "app") == rev1
        # Nothing new: one ref listing per 5s interval, no fetch (status as the API server
        # keeps it still reads as up to date).
        time.sleep(1)
        srv.reset()
        time.sleep(10.5)
        assert 1 <= srv.count() <= 3, srv.requests
        assert all(m == "GET" and "info/refs" in p for m, p in srv.requests), srv.requests

        # 6. the CLI: the git row, and a reconcile that waits for the controller
        table = kube_cli(kube_cluster, ns, "get", "sources", "git")
        head, row = table.splitlines()[:2]
        assert head.split()[:2] == ["NAME", "REVISION"]
        assert row.split()[:4] == ["app", rev1, "False", "True"], table
        sha3 = repo.commit("three", {"deploy/cm-c.yaml": _cm("cm-c", v="3")})
        out = kube_cli(kube_cluster, ns, "reconcile", "source", "git", "app")
        assert f"GitRepository {ns.namespace}/app reconciled" in out, out
        assert f"main@sha1:{sha3}" in out, out
        assert _revision(ns, "app") == f"main@sha1:{sha3}"  # handled before the CLI returned
        _wait_applied(ns, "app", f"main@sha1:{sha3}")
        assert configmap_data(ns, "cm-c") == {"v": "3"}
        missing = kube_cli(kube_cluster, ns, "reconcile", "source", "git", "nope", check=False)
        assert "GitRepository" in missing and "not found" in missing, missing
    events = {e.get("reason") for e in ns.list("v1", "Event")}
    assert {"NewArtifact", "GitOperationFailed"} <= events, events


def test_git_signed_commits_only(gitns: Kube, controller: ControllerProcess,
                                 tmp_path: Path) -> None:
    ns = gitns
    signer = ssh_key(tmp_path, "signer")
    repo = GitRepo.create(tmp_path / "repos")
    sha1 = repo.commit("signed", {"deploy/cm-a.yaml": _cm("cm-a", v="1")}, ssh=signer)
    _auth_secret(ns)
    ns.apply({"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "git-keys", "namespace": ns.namespace},
              "stringData": {"release.sshpub": signer.public + "\n"}})
    with http_server(tmp_path / "repos", username=USER, password=PASSWORD) as srv:
        _git_repository(ns, "app", srv.url(),
                        verify={"mode": "HEAD", "secretRef": {"name": "git-keys"}})
        _kustomization(ns, "app", "app")
        rev1 = f"main@sha1:{sha1}"
        st = _wait_source(ns, "app", rev1)
        sv = condition({"status": st}, "SourceVerified")
        assert sv["status"] == "True" and sha1 in sv["message"], sv
        assert st["sourceVerificationMode"] == "HEAD"
        _wait_applied(ns, "app", rev1)

        # an unsigned commit: refused, the last good artifact and the cluster stay
        sha2 = repo.commit("unsigned", {"deploy/cm-b.yaml": _cm("cm-b", v="2")})
        _request(ns, GIT, "app")
        ns.wait("unsigned commit refused", lambda: condition(
            ns.get(API_VERSION, GIT, "app"), "SourceVerified").get("status") == "False", WAIT)
        src = ns.get(API_VERSION, GIT, "app") or {}
        sv = condition(src, "SourceVerified")
        assert sv["reason"] == "InvalidCommitSignature" and sha2 in sv["message"], sv
        assert condition(src, "Ready")["status"] == "False"
        assert src["status"]["artifact"]["revision"] == rev1
        _request(ns, KS, "app")
        time.sleep(3)
        assert status_of(ns, KS, "app")["lastAppliedRevision"] == rev1
        assert configmap_data(ns, "cm-b") is None
        assert configmap_data(ns, "cm-a") == {"v": "1"}

        # signed again: accepted and applied
        sha3 = repo.commit("signed again", {"deploy/cm-b.yaml": _cm("cm-b", v="3")},
                           ssh=signer)
        _request(ns, GIT, "app")
        _wait_applied(ns, "app", f"main@sha1:{sha3}")
        assert configmap_data(ns, "cm-b") == {"v": "3"}


def test_git_include_follows_the_included_repository(
        gitns: Kube, controller: ControllerProcess, tmp_path: Path) -> None:
    ns = gitns
    app = GitRepo.create(tmp_path / "repos", "app")
    app_sha = app.commit("app", {"deploy/cm-app.yaml": _cm("cm-app", v="1")})
    lib = GitRepo.create(tmp_path / "repos", "lib")
    lib.commit("lib one", {"manifests/cm-lib.yaml": _cm("cm-lib", v="1"),
                           "README.md": "not included\n"})
    _auth_secret(ns)
    with http_server(tmp_path / "repos", username=USER, password=PASSWORD) as srv:
        # The including one first: it waits for lib (IncludeUnavailable), then is woken.
        _git_repository(ns, "app", srv.url("app"), interval="10m", include=[
            {"repository": {"name": "lib"}, "fromPath": "manifests", "toPath": "deploy/lib"}])
        ns.wait("app waits for its include", lambda: condition(
            ns.get(API_VERSION, GIT, "app"), "IncludeUnavailable").get("reason") == "NotFound",
            WAIT)
        _git_repository(ns, "lib", srv.url("lib"), interval="10m")
        _kustomization(ns, "app", "app")
        rev = f"main@sha1:{app_sha}"
        st = _wait_source(ns, "app", rev)
        assert not condition({"status": st}, "IncludeUnavailable")
        lib_art = status_of(ns, GIT, "lib")["artifact"]
        assert [a["digest"] for a in st["includedArtifacts"]] == [lib_art["digest"]]
        _wait_applied(ns, "app", rev)
        assert configmap_data(ns, "cm-lib") == {"v": "1"}
        assert configmap_data(ns, "cm-app") == {"v": "1"}

        # A new commit of lib: lib is asked, app is woken by it (its interval is 10m) and
        # the Kustomization applies app's new artifact (same app revision).
        lib_sha = lib.commit("lib two", {"manifests/cm-lib.yaml": _cm("cm-lib", v="2")})
        _request(ns, GIT, "lib")
        ns.wait("app rebuilt with lib two", lambda: [
            a.get("revision") for a in status_of(ns, GIT, "app").get("includedArtifacts") or []]
            == [f"main@sha1:{lib_sha}"], WAIT)
        ns.wait("cm-lib v2 applied", lambda: configmap_data(ns, "cm-lib") == {"v": "2"}, WAIT)
        assert _revision(ns, "app") == rev
