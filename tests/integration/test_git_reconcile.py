"""The GitRepository reconciler against a real git http-backend on 127.0.0.1 and the real
artifact cache; the cluster reads (the object's Secrets) come from MemKube (a fake, see its
docstring: status writes and the runtime are tested on the real API server in tests/e2e).

What it pins: one request per interval when nothing changed, a new commit fetched and
stored and consumers woken, the consumer's view through the source contract, a
verification failure or an unreachable server keeping the last good artifact, the fields
not implemented yet refused as Stalled, and ``include`` (another GitRepository's artifact
copied into a path, IncludeUnavailable while it has none, its changes picked up)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.cache import ArtifactCache
from ocigitops.puller.reconcile import Outcome, typed_status
from ocigitops.puller.sources import git as gitsrc
from ocigitops.puller.sources.contract import get_artifact
from tests.helpers.gitservers import GitHTTPServer, GitRepo, http_server, ssh_key
from tests.helpers.memkube import MemKube

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[GitRepo, GitHTTPServer]]:
    repo = GitRepo.create(tmp_path / "repos")
    repo.commit("one", {"deploy/cm.yaml": "kind: ConfigMap\n"})
    with http_server(tmp_path / "repos", username="u", password="p") as srv:
        yield repo, srv


def _obj(srv: GitHTTPServer, name: str = "app", generation: int = 1,
         **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "GitRepository",
            "metadata": {"name": name, "namespace": "apps", "generation": generation},
            "spec": {"url": srv.url(), "interval": "1m", "insecure": True,
                     "secretRef": {"name": "auth"}, "ref": {"branch": "main"}, **spec}}


def _ctx(tmp_path: Path, kube: MemKube) -> gitsrc.GitContext:
    return gitsrc.GitContext(kube=kube, cache=ArtifactCache(tmp_path / "cache"))  # type: ignore[arg-type]


def _run(obj: dict[str, Any], ctx: gitsrc.GitContext) -> Outcome:
    out = asyncio.run(gitsrc.reconcile(obj, ctx))
    typed_status(gitsrc.RECONCILER.status_type, out.status)  # what the runtime writes
    obj["status"] = out.status
    kube = ctx.kube
    kube.put(obj)  # type: ignore[attr-defined]
    return out


def _edit(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` (an edited spec) with ``old``'s status, as the API server keeps it."""
    return {**new, "status": old.get("status") or {}}


def _cond(out: Outcome, ctype: str) -> dict[str, Any]:
    return next((c for c in out.status["conditions"] if c["type"] == ctype), {})


def _kube() -> MemKube:
    kube = MemKube()
    kube.secret("apps", "auth", {"username": b"u", "password": b"p"})
    return kube


def test_one_request_per_interval_new_commit_and_consumer(
        tmp_path: Path, served: tuple[GitRepo, GitHTTPServer]) -> None:
    repo, srv = served
    ctx = _ctx(tmp_path, _kube())
    obj = _obj(srv)
    first = _run(obj, ctx)
    assert not first.failed and first.changed
    art = first.status["artifact"]
    assert art["revision"].startswith("main@sha1:") and art["digest"].startswith("sha256:")
    assert _cond(first, "ArtifactInStorage")["status"] == "True"
    assert _cond(first, "Ready")["message"] == f"stored artifact for revision '{art['revision']}'"
    assert first.events[0][1] == "NewArtifact"
    srv.reset()
    again = _run(obj, ctx)
    assert srv.count() == 1 and not again.changed and not again.events  # one ls-remote
    assert again.status["artifact"] == art
    # The consumer's view (a Kustomization reads the source contract only).
    sa = asyncio.run(get_artifact(ctx.kube, ctx.cache, {"GitRepository": gitsrc.SOURCE},
                                  {"GitRepository"}, "GitRepository", "apps", "app"))
    out = tmp_path / "tree"
    sa.extract(out)
    assert (out / "deploy" / "cm.yaml").read_text() == "kind: ConfigMap\n"
    assert sa.ignore is None  # spec.ignore was applied when the artifact was built
    # A new commit: fetched, stored, consumers woken.
    sha = repo.commit("two", {"deploy/cm2.yaml": "kind: ConfigMap\n"})
    srv.reset()
    new = _run(obj, ctx)
    assert new.changed and new.status["artifact"]["revision"] == f"main@sha1:{sha}"
    assert srv.count() == 3  # ls-remote, then fetch (discovery + upload-pack)


def test_failures_keep_the_last_artifact(tmp_path: Path,
                                         served: tuple[GitRepo, GitHTTPServer]) -> None:
    repo, srv = served
    kube = _kube()
    ctx = _ctx(tmp_path, kube)
    obj = _obj(srv)
    good = _run(obj, ctx).status["artifact"]
    # Verification asked for, the commit is unsigned: refused, the artifact stays.
    signer = ssh_key(tmp_path, "signer")
    kube.secret("apps", "keys", {"dev.sshpub": signer.public.encode()})
    obj = _edit(obj, _obj(srv, generation=2, verify={"mode": "HEAD",
                                                     "secretRef": {"name": "keys"}}))
    bad = _run(obj, ctx)
    assert bad.failed and bad.status["artifact"] == good
    sv = _cond(bad, "SourceVerified")
    assert sv["status"] == "False" and sv["reason"] == "InvalidCommitSignature"
    assert "is not signed" in sv["message"]
    # Signed with the trusted key: verified, SourceVerified=True, mode recorded.
    sha = repo.commit("signed", {"deploy/x.yaml": "x: 1\n"}, ssh=signer)
    ok = _run(obj, ctx)
    assert not ok.failed and ok.status["sourceVerificationMode"] == "HEAD"
    assert _cond(ok, "SourceVerified")["status"] == "True"
    assert signer.public.split()[1][:8] not in str(ok.status)  # keys are not echoed
    assert ok.status["artifact"]["revision"] == f"main@sha1:{sha}"
    kept = ok.status["artifact"]
    # Wrong credentials: FetchFailed/AuthenticationFailed, no secret in the status.
    kube.secret("apps", "auth", {"username": b"u", "password": b"wrong-password"})
    denied = _run(obj, ctx)
    assert denied.failed and denied.status["artifact"] == kept
    assert _cond(denied, "FetchFailed")["reason"] == "AuthenticationFailed"
    assert "wrong-password" not in str(denied.status) and "wrong-password" not in str(
        denied.events)
    # Unreachable: the artifact stays, FetchFailed says why; recovery clears it.
    kube.secret("apps", "auth", {"username": b"u", "password": b"p"})
    down = _edit(obj, _obj(srv, generation=3, verify={"mode": "HEAD",
                                                      "secretRef": {"name": "keys"}},
                           url="http://127.0.0.1:9/repo.git", timeout="5s"))
    gone = _run(down, ctx)
    assert gone.failed and gone.status["artifact"] == kept
    assert _cond(gone, "FetchFailed")["reason"] == "GitOperationFailed"
    back = _run(_edit(down, _obj(srv, generation=4, verify={
        "mode": "HEAD", "secretRef": {"name": "keys"}})), ctx)
    assert not back.failed and not _cond(back, "FetchFailed")


@pytest.mark.parametrize("spec,field", [
    ({"recurseSubmodules": True}, "spec.recurseSubmodules"),
    ({"provider": "github"}, "provider 'github'"),
    ({"url": "https://u:secret@example.com/r.git", "insecure": False}, "spec.secretRef"),
    ({"insecure": False}, "plain HTTP"),
])
def test_unsupported_or_refused_fields_stall(tmp_path: Path,
                                             served: tuple[GitRepo, GitHTTPServer],
                                             spec: dict[str, Any], field: str) -> None:
    _, srv = served
    out = _run(_obj(srv, **spec), _ctx(tmp_path, _kube()))
    stalled = _cond(out, "Stalled")
    assert out.failed and stalled["status"] == "True" and field in stalled["message"]
    assert "secret" not in stalled["message"].replace("secretRef", "")
    assert out.requeue_after is None


def test_suspended_is_left_alone(tmp_path: Path, served: tuple[GitRepo, GitHTTPServer]) -> None:
    _, srv = served
    srv.reset()
    out = _run(_obj(srv, suspend=True), _ctx(tmp_path, _kube()))
    assert srv.count() == 0 and out.requeue_after is None and not out.failed


def _tree_of(ctx: gitsrc.GitContext, digest: str, out: Path) -> dict[str, str]:
    ctx.cache.extract(digest, out)
    return {str(p.relative_to(out)): p.read_text() for p in sorted(out.rglob("*"))
            if p.is_file()}


def test_include_copies_another_artifact_and_follows_it(
        tmp_path: Path, served: tuple[GitRepo, GitHTTPServer]) -> None:
    _, srv = served
    lib = GitRepo.create(tmp_path / "repos", "lib")
    lib.commit("lib one", {"manifests/lib.yaml": "lib: 1\n", "README.md": "lib\n"})
    kube = _kube()
    ctx = _ctx(tmp_path, kube)
    include = [{"repository": {"name": "lib"}, "fromPath": "manifests",
                "toPath": "deploy/vendor/lib"}]
    app = _obj(srv, include=include)
    assert list(gitsrc.references(app)) == [("GitRepository", "apps", "lib")]
    # The included GitRepository does not exist, then has no artifact: waiting.
    srv.reset()
    missing = _run(app, ctx)
    unavailable = _cond(missing, "IncludeUnavailable")
    assert unavailable["status"] == "True" and unavailable["reason"] == "NotFound"
    assert missing.waiting and missing.failed and "artifact" not in missing.status
    assert _cond(missing, "Ready")["reason"] == "NotFound" and srv.count() == 0
    lib_obj = _obj(srv, name="lib")
    lib_obj["spec"]["url"] = srv.url("lib")
    kube.put(lib_obj)
    empty = _run(app, ctx)
    assert empty.waiting and _cond(empty, "IncludeUnavailable")["reason"] == "NoArtifact"
    # Once it has one: copied from fromPath to toPath, recorded in the status.
    lib_art = _run(lib_obj, ctx).status["artifact"]
    ok = _run(app, ctx)
    assert not ok.failed and ok.changed and not _cond(ok, "IncludeUnavailable")
    assert ok.status["includedArtifacts"] == [lib_art]
    assert ok.status["observedInclude"] == include
    files = _tree_of(ctx, ok.status["artifact"]["digest"], tmp_path / "t1")
    assert files == {"deploy/cm.yaml": "kind: ConfigMap\n",
                     "deploy/vendor/lib/lib.yaml": "lib: 1\n"}
    # Nothing changed anywhere: one ls-remote of app, nothing of lib.
    srv.reset()
    same = _run(app, ctx)
    assert not same.changed and srv.count() == 1 and srv.count("lib") == 0
    # A new commit of lib: same app revision, a new artifact holding lib's new content.
    lib.commit("lib two", {"manifests/lib.yaml": "lib: 2\n"})
    assert _run(lib_obj, ctx).changed
    moved = _run(app, ctx)
    assert moved.changed and moved.status["artifact"]["revision"] == \
        ok.status["artifact"]["revision"]
    assert moved.status["artifact"]["digest"] != ok.status["artifact"]["digest"]
    files = _tree_of(ctx, moved.status["artifact"]["digest"], tmp_path / "t2")
    assert files["deploy/vendor/lib/lib.yaml"] == "lib: 2\n"
    assert moved.events[0][1] == "NewArtifact"
    # A spec.include change alone (same revisions) rebuilds: the default toPath is the
    # included repository's name; its content is its artifact (already filtered by its
    # own .sourceignore, which the artifact keeps, as Flux's does).
    lib.commit("lib ignore", {".sourceignore": "README.md\n"})
    _run(lib_obj, ctx)
    whole = _run(_edit(app, _obj(srv, generation=2, include=[
        {"repository": {"name": "lib"}}])), ctx)
    files = _tree_of(ctx, whole.status["artifact"]["digest"], tmp_path / "t3")
    assert set(files) == {"deploy/cm.yaml", "lib/manifests/lib.yaml", "lib/.sourceignore"}
    assert whole.status["observedInclude"] == [{"repository": {"name": "lib"}}]


@pytest.mark.parametrize("include,reason,words", [
    ([{"repository": {"name": "lib"}, "toPath": "deploy"}], "CopyFailure", "already exists"),
    ([{"repository": {"name": "lib"}, "toPath": "deploy/cm.yaml/x"}], "CopyFailure",
     "is a file"),
    ([{"repository": {"name": "lib"}, "fromPath": "absent"}], "CopyFailure",
     "not in its artifact"),
    ([{"repository": {"name": "lib"}, "toPath": "./"}], "CopyFailure", "root"),
    ([{"repository": {"name": "lib"}, "toPath": "a"},
      {"repository": {"name": "lib"}, "toPath": "a"}], "CopyFailure", "already exists"),
])
def test_include_that_cannot_be_copied(tmp_path: Path, served: tuple[GitRepo, GitHTTPServer],
                                       include: list[dict[str, Any]], reason: str,
                                       words: str) -> None:
    _, srv = served
    lib = GitRepo.create(tmp_path / "repos", "lib")
    lib.commit("lib", {"manifests/lib.yaml": "lib: 1\n"})
    kube = _kube()
    ctx = _ctx(tmp_path, kube)
    lib_obj = _obj(srv, name="lib")
    lib_obj["spec"]["url"] = srv.url("lib")
    _run(lib_obj, ctx)
    out = _run(_obj(srv, include=include), ctx)
    unavailable = _cond(out, "IncludeUnavailable")
    assert out.failed and not out.waiting and out.requeue_after == 60
    assert unavailable["reason"] == reason and words in unavailable["message"], unavailable
    assert "artifact" not in out.status


def test_include_cycle_and_bad_paths_are_refused(
        tmp_path: Path, served: tuple[GitRepo, GitHTTPServer]) -> None:
    _, srv = served
    ctx = _ctx(tmp_path, _kube())
    a = _obj(srv, name="a")
    _run(a, ctx)
    b = _obj(srv, name="b", include=[{"repository": {"name": "a"}}])
    assert not _run(b, ctx).failed  # b has an artifact holding a's
    # a now includes b, which includes a: each change would wake the other forever.
    cycle = _run(_edit(a, _obj(srv, name="a", generation=2,
                               include=[{"repository": {"name": "b"}}])), ctx)
    unavailable = _cond(cycle, "IncludeUnavailable")
    assert unavailable["reason"] == "IncludeCycle", unavailable
    assert "a -> b -> a" in unavailable["message"] and not cycle.waiting
    assert cycle.status["artifact"]["revision"].startswith("main@sha1:")  # the last good
    bad = _run(_obj(srv, name="d", include=[{"repository": {"name": "a"},
                                             "toPath": "../escape"}]), ctx)
    assert _cond(bad, "Stalled")["status"] == "True" and "'..'" in _cond(
        bad, "Stalled")["message"]
