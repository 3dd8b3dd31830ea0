"""The pure parts of ocigitops.puller.helm: digests, parsing of Helm's JSON, error
classification, option checks, the post-render bridge (a real subprocess over a real Unix
socket) and the binary engine's process bounds (real processes standing in for helm)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ocigitops.puller.helm import postrender
from ocigitops.puller.helm.binary import (
    BinaryEngine,
    Outcome,
    _Workdir,
    release_from_history,
    release_from_json,
)
from ocigitops.puller.helm.engine import (
    ChartInput,
    ChartLoadError,
    ClusterAccess,
    CRDPolicy,
    HelmError,
    Hook,
    Impersonation,
    InstallError,
    InstallRequest,
    PostRenderError,
    PostRenderStrategy,
    ReleaseNotFoundError,
    ReleaseRef,
    RenderError,
    RollbackRequest,
    TestFailedError,
    TestResult,
    UnsupportedOptionError,
    UpgradeError,
    UpgradeRequest,
    WaitTimeoutError,
    check_common,
    check_crd_policy,
    classify,
    hook_from_json,
    one_line,
    parse_time,
    values_digest,
)
from ocigitops.puller.helm.sdk import release_from_get_all

pytestmark = pytest.mark.unit

REF = ReleaseRef("demo", "apps")


def test_values_digest_is_canonical() -> None:
    a = values_digest({"b": 1, "a": {"y": [1, 2], "x": "é"}})
    b = values_digest({"a": {"x": "é", "y": [1, 2]}, "b": 1})
    assert a == b and a.startswith("sha256:") and len(a) == 71
    assert values_digest(None) == values_digest({})
    assert values_digest({"b": 2}) != values_digest({"b": 1})


def test_parse_time_reads_go_timestamps() -> None:
    t = parse_time("2026-12-01T18:36:30.725902072Z")
    assert t == datetime(2026, 12, 1, 18, 36, 30, 725902, tzinfo=UTC)
    assert parse_time("2026-12-01T18:36:30+02:00") is not None
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time("") is None and parse_time(None) is None and parse_time("garbage") is None


def test_hook_from_json() -> None:
    h = hook_from_json({"name": "t", "kind": "Pod", "events": ["test"],
                        "last_run": {"phase": "Succeeded",
                                     "started_at": "2026-12-01T18:36:32.086661316Z",
                                     "completed_at": "2026-12-01T18:36:32.3Z"}})
    assert h.is_test and h.phase == "Succeeded" and h.started_at and h.completed_at
    never = hook_from_json({"name": "m", "kind": "Job", "events": ["pre-install"],
                            "last_run": {"phase": ""}})
    assert not never.is_test and never.phase == "" and never.started_at is None


def test_test_result_succeeded_ignores_hooks_never_run() -> None:
    rel = release_from_json({"name": "x", "version": 1})
    ok = TestResult(rel, (Hook("a", "Pod", ("test",), "Succeeded"), Hook("b", "Pod", ("test",))))
    bad = TestResult(rel, (Hook("a", "Pod", ("test",), "Failed"),))
    assert ok.succeeded and not bad.succeeded


@pytest.mark.parametrize(("message", "fallback", "expected"), [
    ("Error: INSTALLATION FAILED: template: tiny/templates/cm.yaml:6:11: executing "
     "\"tiny/templates/cm.yaml\" at <required>: error calling required: message is required",
     InstallError, RenderError),
    ("Error: UPGRADE FAILED: parse error at (tiny/templates/x.yaml:3): unclosed action",
     UpgradeError, RenderError),
    ("Error: release: not found", ReleaseNotFoundError, ReleaseNotFoundError),
    ("Error: UPGRADE FAILED: \"demo\" has no deployed releases", UpgradeError,
     ReleaseNotFoundError),
    ("Error: INSTALLATION FAILED: context deadline exceeded", InstallError, WaitTimeoutError),
    ("Error: failed to invoke post-renderer plugin \"ocigitops-postrender\": exit status 1",
     InstallError, PostRenderError),
    ("Error: INSTALLATION FAILED: configmaps \"x\" not found", InstallError, InstallError),
    ("Error: timed out waiting for the condition", TestFailedError, TestFailedError),
    ("Error: 1 error occurred: pod demo-test failed", TestFailedError, TestFailedError),
    ("Error: INSTALLATION FAILED: secrets is forbidden: User \"system:serviceaccount:a:b\"",
     InstallError, InstallError),
])
def test_classify(message: str, fallback: type[HelmError], expected: type[HelmError]) -> None:
    err = classify(message, fallback, release="demo")
    assert type(err) is expected
    assert "\n" not in str(err) and str(err).startswith("release demo: ")
    assert not str(err).startswith("release demo: Error:")


def test_errors_are_one_bounded_line() -> None:
    err = InstallError("a\nb\n" + "x" * 5000)
    assert "\n" not in str(err) and len(str(err)) <= 400
    assert one_line("  a \n\t b ") == "a b"


def test_crd_policy() -> None:
    assert check_crd_policy(CRDPolicy.SKIP, upgrade=False) is True
    assert check_crd_policy(CRDPolicy.CREATE, upgrade=False) is False
    assert check_crd_policy(CRDPolicy.SKIP, upgrade=True) is True
    with pytest.raises(UnsupportedOptionError, match="CreateReplace on install"):
        check_crd_policy(CRDPolicy.CREATE_REPLACE, upgrade=False)
    with pytest.raises(UnsupportedOptionError, match="Create on upgrade"):
        check_crd_policy(CRDPolicy.CREATE, upgrade=True)


def test_check_common() -> None:
    check_common(REF)
    with pytest.raises(UnsupportedOptionError, match="removed in Helm 4"):
        check_common(REF, recreate=True)
    for bad in ("Demo", "-a", "a_b", "a" * 54, ""):
        with pytest.raises(UnsupportedOptionError, match="invalid release name"):
            check_common(ReleaseRef(bad, "apps"))


def test_impersonation_for_service_account() -> None:
    imp = Impersonation.for_service_account("team", "deployer")
    assert imp.user == "system:serviceaccount:team:deployer"
    assert imp.groups == ("system:serviceaccounts", "system:serviceaccounts:team")


def test_secrets_stay_out_of_reprs() -> None:
    access = ClusterAccess(kubeconfig="token: s3cret")
    req = InstallRequest(REF, ChartInput(Path("c.tgz"), {"password": "hunter2"}))
    assert "s3cret" not in repr(access)
    assert "hunter2" not in repr(req)


def test_release_from_json_reads_the_stored_release() -> None:
    doc = {"name": "demo", "namespace": "apps", "version": 3,
           "info": {"status": "deployed", "description": "Rollback to 1",
                    "first_deployed": "2026-12-01T18:36:30.7Z",
                    "last_deployed": "2026-12-01T18:40:00Z"},
           "chart": {"metadata": {"name": "tiny", "version": "0.1.0", "appVersion": "1.0.0"}},
           "config": {"message": "one"}, "manifest": "---\nkind: ConfigMap\n",
           "hooks": [{"name": "t", "kind": "Pod", "events": ["test"], "last_run": {}}]}
    r = release_from_json(doc)
    assert (r.name, r.namespace, r.revision, r.status) == ("demo", "apps", 3, "deployed")
    assert (r.chart_name, r.chart_version, r.app_version) == ("tiny", "0.1.0", "1.0.0")
    assert r.config_digest == values_digest({"message": "one"})
    assert r.manifest_digest.startswith("sha256:") and r.hooks[0].name == "t"
    assert r.first_deployed and r.last_deployed and r.deleted is None


def test_release_from_get_all_matches_the_binary_parse() -> None:
    doc = {"summary": {"name": "demo", "namespace": "apps", "revision": 2,
                       "status": "deployed", "chart_name": "tiny", "chart_version": "0.1.0",
                       "app_version": "1.0.0", "manifest": "m"},
           "config": {"message": "one"}, "hooks": [],
           "info": {"status": "deployed", "description": "Upgrade complete"}}
    r = release_from_get_all(doc)
    assert (r.revision, r.chart_name, r.manifest, r.description) == (2, "tiny", "m",
                                                                     "Upgrade complete")
    assert r.config_digest == values_digest({"message": "one"})


@pytest.mark.parametrize(("chart", "name", "version"), [
    ("tiny-0.1.0", "tiny", "0.1.0"),
    ("my-app-1.2.3-rc.1", "my-app", "1.2.3-rc.1"),
    ("x-v2.0.0+build.5", "x", "v2.0.0+build.5"),
    ("weird", "weird", ""),
])
def test_release_from_history_splits_the_chart(chart: str, name: str, version: str) -> None:
    r = release_from_history({"revision": 2, "chart": chart, "status": "superseded",
                              "app_version": "1", "updated": "2026-12-01T18:36:30Z"}, REF)
    assert (r.chart_name, r.chart_version, r.revision, r.status) == (name, version, 2,
                                                                     "superseded")


def test_outcome_error_text() -> None:
    o = Outcome(1, b"", b"WARNING: x\nError: INSTALLATION FAILED: boom\n")
    assert o.error_text == "Error: INSTALLATION FAILED: boom"
    assert Outcome(2, b"", b"").error_text == "helm exited with code 2"


def test_sdk_plugins_dir_resolution() -> None:
    d = postrender.sdk_plugins_dir
    assert d({"HELM_PLUGINS": "/p:/q", "HOME": "/h"}) == Path("/p")
    assert d({"HELM_DATA_HOME": "/d", "HOME": "/h"}) == Path("/d/plugins")
    assert d({"XDG_DATA_HOME": "/x", "HOME": "/h"}) == Path("/x/helm/plugins")
    assert d({"HOME": "/h"}) == Path("/h/.local/share/helm/plugins")


def test_ensure_plugin_writes_a_valid_plugin(tmp_path: Path) -> None:
    pdir = postrender.ensure_plugin(tmp_path)
    manifest = (pdir / "plugin.yaml").read_text()
    assert "type: postrenderer/v1" in manifest and "apiVersion: v1" in manifest
    mode = (pdir / "bridge").stat().st_mode
    assert mode & stat.S_IXUSR and (pdir / "bridge").read_text().startswith(f"#!{sys.executable}")
    before = (pdir / "bridge").stat().st_mtime_ns
    postrender.ensure_plugin(tmp_path)  # idempotent: unchanged files are not rewritten
    assert (pdir / "bridge").stat().st_mtime_ns == before


def test_ensure_plugin_unwritable_is_typed(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PostRenderError, match="HELM_PLUGINS"):
        postrender.ensure_plugin(blocker / "plugins")


def _bridge(tmp_path: Path, socket_path: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
    pdir = postrender.ensure_plugin(tmp_path / "plugins")
    return subprocess.run([str(pdir / "bridge"), socket_path], input=data,
                          capture_output=True, timeout=30, check=False)


def test_bridge_runs_the_callable_in_this_process(tmp_path: Path) -> None:
    seen: list[str] = []

    def fn(text: str) -> str:
        seen.append(text)
        return text.replace("a", "b")

    with postrender.PostRenderServer(fn) as srv:
        out = _bridge(tmp_path, srv.socket_path, b"kind: a\n")
        socket_dir = Path(srv.socket_path).parent
        assert stat.S_IMODE(socket_dir.stat().st_mode) == 0o700
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"kind: b\n" and seen == ["kind: a\n"] and srv.calls == 1
    assert not socket_dir.exists()


def test_bridge_reports_a_failing_callable(tmp_path: Path) -> None:
    def fn(text: str) -> str:
        raise ValueError("no patch target\nsecond line")

    with postrender.PostRenderServer(fn) as srv:
        out = _bridge(tmp_path, srv.socket_path, b"kind: a\n")
    assert out.returncode == 1 and out.stdout == b""
    assert b"post-renderer: ValueError: no patch target second line" in out.stderr
    assert srv.error == "ValueError: no patch target second line"


def test_bridge_refuses_a_non_text_answer(tmp_path: Path) -> None:
    with postrender.PostRenderServer(lambda s: 42) as srv:  # type: ignore[arg-type,return-value]
        out = _bridge(tmp_path, srv.socket_path, b"x")
    assert out.returncode == 1 and "returned int" in (srv.error or "")


def test_bridge_without_socket_fails_cleanly(tmp_path: Path) -> None:
    pdir = postrender.ensure_plugin(tmp_path / "plugins")
    out = subprocess.run([str(pdir / "bridge")], input=b"", capture_output=True, timeout=30,
                         check=False)
    assert out.returncode == 1 and b"only ocigitops runs this plugin" in out.stderr


def test_workdir_files_are_private() -> None:
    w = _Workdir()
    try:
        f = w.secret_file("kubeconfig", "secret")
        assert stat.S_IMODE(w.path.stat().st_mode) == 0o700
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        env = w.env(None)
        assert env["HOME"].startswith(str(w.path)) and env["HELM_DRIVER"] == "secret"
        assert not any(k.startswith("KUBE") for k in env)
    finally:
        w.close()
    assert not w.path.exists()


def test_binary_run_kills_on_deadline() -> None:
    """/bin/sleep stands in for a helm that hangs: a fault a real helm only shows against a
    stuck API server."""
    eng = BinaryEngine(helm=Path("/bin/sleep"))
    with pytest.raises(WaitTimeoutError, match="killed"):
        asyncio.run(eng.run(["30"], limit=0.5, env={"PATH": os.defpath}))


def test_binary_run_bounds_concurrent_processes() -> None:
    """``--concurrent-helm``: at most ``max_processes`` helm processes at once, however many
    reconciles call the engine (/bin/sleep stands in for helm)."""
    eng = BinaryEngine(helm=Path("/bin/sleep"), max_processes=2)

    async def many() -> None:
        await asyncio.gather(*(eng.run(["0.3"], limit=10, env={"PATH": os.defpath})
                               for _ in range(5)))

    asyncio.run(many())
    assert eng.peak_processes == 2
    asyncio.run(many())  # a new event loop gets its own semaphore
    assert eng.peak_processes == 2
    with pytest.raises(ValueError):
        BinaryEngine(max_processes=0)


def test_binary_run_bounds_output() -> None:
    """/usr/bin/yes stands in for a helm that writes without end."""
    eng = BinaryEngine(helm=Path("/usr/bin/yes"))
    with pytest.raises(HelmError, match="more than"):
        asyncio.run(eng.run([], limit=30, env={"PATH": os.defpath}))


def test_binary_refuses_what_the_cli_cannot_do(tmp_path: Path) -> None:
    eng = BinaryEngine(helm=Path("/bin/false"))
    access = ClusterAccess(kubeconfig="{}")
    chart = tmp_path / "c.tgz"
    chart.write_bytes(b"")
    split = ReleaseRef("demo", "apps", storage_namespace="flux-system")
    with pytest.raises(UnsupportedOptionError, match="storage namespace"):
        asyncio.run(eng.install(access, InstallRequest(split, ChartInput(chart))))
    with pytest.raises(UnsupportedOptionError, match="post-render strategy"):
        asyncio.run(eng.install(access, InstallRequest(
            REF, ChartInput(chart), post_renderer=lambda s: s,
            post_render_strategy=PostRenderStrategy.NOHOOKS)))
    with pytest.raises(UnsupportedOptionError, match="recreate"):
        asyncio.run(eng.rollback(access, RollbackRequest(REF, recreate=True)))
    with pytest.raises(ChartLoadError, match="not found"):
        asyncio.run(eng.upgrade(access, UpgradeRequest(REF, ChartInput(tmp_path / "no.tgz"))))


def test_history_json_shape_is_a_list() -> None:
    # What `helm history -o json` prints for one revision (Helm 4.3), parsed as the engine
    # does: the fields the reconciler needs survive.
    entry = json.loads('{"revision":1,"updated":"2026-12-01T18:36:30.7259Z",'
                       '"status":"deployed","chart":"tiny-0.1.0","app_version":"1.0.0",'
                       '"description":"Install complete"}')
    r = release_from_history(entry, REF)
    assert r.description == "Install complete" and r.last_deployed is not None
