"""The composite GitHub Actions in ``github-actions/`` run by the local runner
(``tests/helpers/actions_runner.py``) against the embedded registry, with the real CLI, trivy
and cosign v3; the example workflows linted by the real actionlint (with shellcheck).

- push-artifact: the outputs are what the registry holds (digest, every tag, source and
  revision from the ``github`` context); ``diff-tag`` skips an unchanged push and adds no tag;
  ``sign: key`` with ``provenance`` from a secret's PEM, verified by the verify action (and a
  wrong key fails it); a trivy finding at ``fail-on`` stops the job before anything is pushed;
  bad inputs fail in the first step; no secret reaches the log or the summary;
- keyless: Fulcio and Rekor cannot be reached here, so the test stops at the OIDC token
  request: the CLI asks the job's token endpoint (a local one, as GitHub's
  ``ACTIONS_ID_TOKEN_REQUEST_URL``) for a token with audience ``sigstore``, with the request
  token as bearer, and fails on the token it gets back;
- setup: pip "installs" the pinned version in a venv that sees this checkout (no index), and
  the output ``version`` is it;
- actionlint: the example workflows, and a workflow calling each local action with every input
  (so actionlint checks each ``action.yml`` and the inputs), are clean; shellcheck passes on
  every ``run:`` script of the actions.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.actions_runner import ActionRun, CompositeRunner
from tests.helpers.cli import cli
from tests.helpers.cosign3 import PASSWORD, Cosign3
from tests.helpers.github import ACTIONS_ENV
from tests.helpers.paths import REPO_ROOT as REPO
from tests.helpers.registries import Registry
from tests.helpers.tools import tool

pytestmark = pytest.mark.integration

ACTIONS = REPO / "github-actions"
EXAMPLES = REPO / "docs" / "examples" / "github"
SHA = ACTIONS_ENV["GITHUB_SHA"]

PRIVILEGED_POD = """apiVersion: v1
kind: Pod
metadata: {name: bad, namespace: default}
spec:
  containers:
    - name: app
      image: nginx:1.27
      securityContext: {privileged: true}
"""


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("gha-keys")
    Cosign3(where)("generate-key-pair")
    return where / "cosign.key", where / "cosign.pub"


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    (tmp / "docker-config").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "ACTIONS_", "OCIGITOPS_", "SIGSTORE_", "COSIGN_"))}
    return {**env, **ACTIONS_ENV, "GITHUB_REF_NAME": "main", "GITHUB_ACTOR": "octocat",
            "DOCKER_CONFIG": str(tmp / "docker-config"), **extra}


def _runner(tmp: Path, **extra: str) -> CompositeRunner:
    ws = tmp / "workspace"
    ws.mkdir(exist_ok=True)
    temp = tmp / "runner-temp"
    temp.mkdir(exist_ok=True)
    return CompositeRunner(ws, _env(tmp, **extra), temp=temp)


def _tree(runner: CompositeRunner, name: str = "deploy", text: str | None = None) -> str:
    d = runner.workspace / name
    d.mkdir(exist_ok=True)
    (d / "cm.yaml").write_text(text or "apiVersion: v1\nkind: ConfigMap\n"
                               "metadata: {name: app, namespace: app}\ndata: {a: '1'}\n")
    return name


def _tags(reg: Registry, repo: str) -> dict[str, str]:
    proc = cli("list", "artifacts", f"oci://{repo}", "-o", "json", *reg.cli_flags())
    if proc.returncode != 0:
        return {}
    return {a["tag"]: a["digest"] for a in json.loads(proc.stdout)}


def _ok(run: ActionRun) -> ActionRun:
    assert run.ok, run.log
    return run


def test_push_outputs_match_the_registry(embedded_registry: Registry, tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    repo = f"{embedded_registry.host}/gha/{uuid.uuid4().hex[:8]}"
    run = _ok(runner.run(ACTIONS / "push-artifact", {
        "repository": repo, "path": _tree(runner), "tags": "v1\nlatest, stable",
        "annotations": "team=platform", "reproducible": "true"}))
    digest = run.outputs["digest"]
    assert run.outputs == {"pushed": "true", "digest": digest,
                           "digest-url": f"oci://{repo}@{digest}", "url": f"oci://{repo}:v1"}
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert _tags(embedded_registry, repo) == {"v1": digest, "latest": digest, "stable": digest}
    # Source and revision come from the github context, as Flux reads them.
    proc = cli("pull", "artifact", f"oci://{repo}@{digest}", "--output", str(tmp_path / "out"),
               *embedded_registry.cli_flags())
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "cm.yaml").is_file()
    listed = cli("list", "artifacts", f"oci://{repo}", "-o", "json",
                 *embedded_registry.cli_flags())
    assert f"main@sha1:{SHA}" in listed.stdout
    assert "https://github.com/acme/app" in listed.stdout
    assert "satisfied" not in run.log  # push-artifact uses no marketplace action
    assert f"`{digest}`" in run.summary and "**Pushed**: yes" in run.summary
    assert "`v1`, `latest`, `stable`" in run.summary
    assert run.step("scan").outcome == "skipped"


def test_diff_tag_skips_an_unchanged_push(embedded_registry: Registry, tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    repo = f"{embedded_registry.host}/gha/{uuid.uuid4().hex[:8]}"
    first = _ok(runner.run(ACTIONS / "push-artifact", {
        "repository": repo, "path": _tree(runner), "tags": "latest"}))
    again = _ok(runner.run(ACTIONS / "push-artifact", {
        "repository": repo, "path": _tree(runner), "tags": "v2, stable", "diff-tag": "latest"}))
    assert again.outputs["pushed"] == "false"
    assert again.outputs["digest"] == first.outputs["digest"]
    assert again.step("tags").outcome == "skipped"
    assert _tags(embedded_registry, repo) == {"latest": first.outputs["digest"]}
    assert "content is unchanged" in again.summary
    # Changed content is pushed.
    _tree(runner, text="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\n")
    changed = _ok(runner.run(ACTIONS / "push-artifact", {
        "repository": repo, "path": "deploy", "tags": "v3", "diff-tag": "latest"}))
    assert changed.outputs["pushed"] == "true"
    assert changed.outputs["digest"] != first.outputs["digest"]


def test_key_signing_and_provenance_pass_the_verify_action(
        embedded_registry: Registry, keys: tuple[Path, Path], tmp_path: Path) -> None:
    key, pub = keys
    runner = _runner(tmp_path)
    repo = f"{embedded_registry.host}/gha/{uuid.uuid4().hex[:8]}"
    pem = key.read_text()
    run = _ok(runner.run(ACTIONS / "push-artifact", {
        "repository": repo, "path": _tree(runner), "tags": "v1", "sign": "key",
        "cosign-key": pem, "cosign-password": PASSWORD, "provenance": "true"}))
    digest = run.outputs["digest"]
    assert "**Signed** (key)" in run.summary and "**Attested**" in run.summary
    # No secret in the log, the summary or the environment later steps see.
    body = pem.strip().splitlines()[1]
    for text in (run.log, run.summary, json.dumps(run.env)):
        assert body not in text and PASSWORD not in text
    assert not list(Path(run.env["OCIGITOPS_WORK"]).glob("*.key"))  # removed at the end
    policy = runner.workspace / "policy.yaml"
    policy.write_text(f"""rule: any
authorities:
  - name: release-key
    cosign: {{keys: [{pub}]}}
attestations:
  - name: built-by-release
    predicateType: slsaprovenance1
    authorities: [release-key]
    conditions:
      - "predicate.buildDefinition.resolvedDependencies[0].digest.gitCommit == '{SHA}'"
""")
    verified = _ok(runner.run(ACTIONS / "verify", {"url": f"oci://{repo}:v1",
                                                   "policy": "policy.yaml"}))
    assert verified.outputs == {"verified": "true", "digest": digest,
                                "digest-url": f"oci://{repo}@{digest}"}
    assert "**Verified**: yes" in verified.summary
    # Another key: the verify action fails the job, and says so.
    other = tmp_path / "other"
    other.mkdir()
    Cosign3(other)("generate-key-pair")
    failed = runner.run(ACTIONS / "verify", {"url": f"oci://{repo}:v1",
                                             "key": str(other / "cosign.pub")})
    assert not failed.ok
    assert failed.outputs["verified"] == "false"
    assert "::error title=ocigitops verify::" in failed.step("verify").stdout
    assert "**Verified**: NO" in failed.summary


def test_notation_signing_from_secrets(embedded_registry: Registry, tmp_path: Path) -> None:
    home = tmp_path / "notation-home"
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / "config")}
    subprocess.run([tool("notation"), "cert", "generate-test", "--default", "gha"],
                   env={**os.environ, **env}, check=True, capture_output=True, timeout=120)
    config = home / "config" / "notation"
    runner = _runner(tmp_path)
    repo = f"{embedded_registry.host}/gha/{uuid.uuid4().hex[:8]}"
    key_pem = (config / "localkeys" / "gha.key").read_text()
    run = _ok(runner.run(ACTIONS / "push-artifact", {
        "repository": repo, "path": _tree(runner), "tags": "v1", "sign": "notation",
        "notation-key": key_pem,
        "notation-cert": (config / "localkeys" / "gha.crt").read_text()}))
    assert "**Signed** (notation)" in run.summary
    assert key_pem.strip().splitlines()[1] not in run.log
    policy = tmp_path / "trustpolicy.json"
    policy.write_text(json.dumps({"version": "1.0", "trustPolicies": [{
        "name": "gha", "registryScopes": ["*"], "signatureVerification": {"level": "strict"},
        "trustStores": ["ca:gha"], "trustedIdentities": ["*"]}]}))
    proc = cli("verify", "artifact", run.outputs["digest-url"], "--trust-policy", str(policy),
               "--trust-store", str(config / "truststore"), *embedded_registry.cli_flags())
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kustomize_render_is_what_is_pushed(embedded_registry: Registry,
                                            tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    overlay = runner.workspace / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources: [cm.yaml]\nnamePrefix: prod-\n")
    (overlay / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\n")
    repo = f"{embedded_registry.host}/gha/{uuid.uuid4().hex[:8]}"
    run = _ok(runner.run(ACTIONS / "push-artifact", {
        "repository": repo, "path": "overlay", "tags": "v1", "render": "kustomize"}))
    out = tmp_path / "out"
    proc = cli("pull", "artifact", run.outputs["digest-url"], "--output", str(out),
               *embedded_registry.cli_flags())
    assert proc.returncode == 0, proc.stderr
    rendered = "".join(p.read_text() for p in out.rglob("*.yaml"))
    assert "name: prod-app" in rendered and "namePrefix" not in rendered


def test_scan_failure_stops_the_job(embedded_registry: Registry, tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    repo = f"{embedded_registry.host}/gha/{uuid.uuid4().hex[:8]}"
    run = runner.run(ACTIONS / "push-artifact", {
        "repository": repo, "path": _tree(runner, text=PRIVILEGED_POD), "tags": "v1",
        "scan": "trivy", "fail-on": "HIGH,CRITICAL"})
    assert not run.ok
    assert run.step("scan").outcome == "failure"
    assert run.step("push").outcome == "skipped" and run.step("summary").outcome == "success"
    assert "nothing was pushed" in run.step("scan").stdout
    assert run.outputs["pushed"] == "" and _tags(embedded_registry, repo) == {}
    assert "HIGH" in run.summary and "**Pushed**: nothing" in run.summary
    # Report only (fail-on empty): the same tree is pushed, the findings summarised.
    report_only = _ok(runner.run(ACTIONS / "push-artifact", {
        "repository": repo, "path": "deploy", "tags": "v1", "scan": "trivy", "fail-on": ""}))
    assert report_only.outputs["pushed"] == "true"
    assert _tags(embedded_registry, repo) == {"v1": report_only.outputs["digest"]}


def test_wait_rollout_without_a_reachable_cluster_fails_the_job(
        embedded_registry: Registry, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: dev\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: dev, context: {cluster: c, user: u}}]\n")
    runner = _runner(tmp_path, KUBECONFIG=str(kubeconfig))
    repo = f"{embedded_registry.host}/gha/{uuid.uuid4().hex[:8]}"
    run = runner.run(ACTIONS / "push-artifact", {
        "repository": repo, "path": _tree(runner), "tags": "v1", "wait-rollout": "20s"})
    assert not run.ok and run.outputs["pushed"] == "true"
    assert run.step("rollout").outcome == "failure"
    assert "cannot reach the Kubernetes API server" in run.step("rollout").stdout
    assert "**Rollout**: cannot reach the Kubernetes API server" in run.summary
    # Without the input, no rollout step.
    assert _ok(runner.run(ACTIONS / "push-artifact", {
        "repository": repo, "path": "deploy", "tags": "v2"})).step("rollout").outcome == \
        "skipped"


@pytest.mark.parametrize("inputs, fragment", [
    ({"repository": "oci://ghcr.io/acme/app"}, "without oci://"),
    ({"repository": "ghcr.io/Acme/App"}, "must be lowercase"),
    ({"repository": "ghcr.io/acme/app:v1"}, "must not carry a tag"),
    ({"repository": "ghcr.io/acme/app", "sign": "cosign"}, "sign must be one of"),
    ({"repository": "ghcr.io/acme/app", "tags": "bad tag!"}, "invalid tag"),
    ({"repository": "ghcr.io/acme/app", "sign": "key"}, "needs cosign-key"),
    ({"repository": "ghcr.io/acme/app", "provenance": "true"}, "set sign to key or keyless"),
])
def test_bad_inputs_fail_first(tmp_path: Path, inputs: dict[str, str], fragment: str) -> None:
    runner = _runner(tmp_path)
    run = runner.run(ACTIONS / "push-artifact", inputs)
    assert not run.ok
    assert run.step("prepare").outcome == "failure"
    assert fragment in run.step("prepare").stdout
    assert [s.outcome for s in run.steps[1:5]] == ["skipped"] * 4


class _TokenEndpoint(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []

    def do_GET(self) -> None:
        type(self).requests.append({"path": self.path,
                                    "authorization": self.headers.get("Authorization")})
        body = json.dumps({"value": "not-a-jwt"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def token_endpoint() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    _TokenEndpoint.requests = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _TokenEndpoint)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}/token?api-version=2.0", _TokenEndpoint.requests
    finally:
        srv.shutdown()


def test_keyless_asks_the_jobs_oidc_endpoint(embedded_registry: Registry, tmp_path: Path,
                                             token_endpoint: tuple[str, list[dict[str, Any]]]
                                             ) -> None:
    url, seen = token_endpoint
    runner = _runner(tmp_path, ACTIONS_ID_TOKEN_REQUEST_URL=url,
                     ACTIONS_ID_TOKEN_REQUEST_TOKEN="request-token-123",
                     HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1,localhost")
    repo = f"{embedded_registry.host}/gha/{uuid.uuid4().hex[:8]}"
    run = runner.run(ACTIONS / "push-artifact", {
        "repository": repo, "path": _tree(runner), "tags": "v1", "sign": "keyless"}, timeout=120)
    assert len(seen) == 1, run.log
    assert seen[0]["authorization"] == "bearer request-token-123" or \
        seen[0]["authorization"] == "Bearer request-token-123"
    assert "audience=sigstore" in seen[0]["path"]
    # The token that came back is not a JWT: the signing step fails there, before Fulcio.
    assert not run.ok and run.step("push").outcome == "failure"
    assert "token" in run.step("push").stderr.lower()
    assert "request-token-123" not in run.log.replace(url, "")


def test_setup_installs_the_pinned_version(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(venv)], check=True)
    runner = _runner(tmp_path, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
                     PIP_NO_INDEX="1", VIRTUAL_ENV=str(venv))
    run = _ok(runner.run(ACTIONS / "setup", {"version": "0.1.0"}))
    assert run.outputs == {"version": "0.1.0"}
    assert "uses actions/setup-python@v5" in run.log and "satisfied by the local" in run.log
    assert "'cache': 'pip'" in run.log
    bad = runner.run(ACTIONS / "setup", {"version": "main; rm -rf /"})
    assert not bad.ok and "must be a release number" in bad.step("install").stdout
    wrong = runner.run(ACTIONS / "setup", {"version": "9.9.9"})
    assert not wrong.ok  # no index: pip cannot find it, and the job stops


def test_setup_default_version_is_the_projects() -> None:
    meta = yaml.safe_load((ACTIONS / "setup" / "action.yml").read_text())
    project = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert project and meta["inputs"]["version"]["default"] == project.group(1)


# --- actionlint and shellcheck ---------------------------------------------------------------

def _actionlint() -> str:
    return tool("actionlint")


def _all_inputs_workflow() -> str:
    """A workflow calling each local action with every input it declares."""
    steps: list[dict[str, Any]] = [{"uses": "actions/checkout@v4"}]
    for name in sorted(p.name for p in ACTIONS.iterdir() if (p / "action.yml").is_file()):
        meta = yaml.safe_load((ACTIONS / name / "action.yml").read_text())
        steps.append({"id": name.replace("-", "_"), "uses": f"./github-actions/{name}",
                      "with": {k: "x" for k in meta.get("inputs") or {}}})
        for out in meta.get("outputs") or {}:
            ref = f"steps.{name.replace('-', '_')}.outputs.{out}"
            steps.append({"run": 'echo "$V"', "env": {"V": "${{ " + ref + " }}"}})
    return yaml.safe_dump({"name": "all inputs", "on": "push", "permissions": {
        "contents": "read", "id-token": "write", "packages": "write"},
        "jobs": {"all": {"runs-on": "ubuntu-latest", "steps": steps}}}, sort_keys=False)


def test_actionlint_is_clean_on_the_examples_and_the_actions(tmp_path: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed: run `scripts/install-tools debian`"
    project = tmp_path / "project"
    (project / ".github" / "workflows").mkdir(parents=True)
    (project / ".git").mkdir()
    shutil.copytree(ACTIONS, project / "github-actions")
    examples = sorted(EXAMPLES.glob("*.yml"))
    assert {p.name for p in examples} >= {"release.yml", "promote.yml"}
    for p in examples:
        shutil.copy(p, project / ".github" / "workflows" / p.name)
    (project / ".github" / "workflows" / "all-inputs.yml").write_text(_all_inputs_workflow())
    proc = subprocess.run([_actionlint(), "-shellcheck", shellcheck, "-color=false"],
                          cwd=project, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # actionlint does read the local action.yml files: an unknown input is an error.
    bad = project / ".github" / "workflows" / "all-inputs.yml"
    bad.write_text(bad.read_text().replace("diff-tag: x", "diff-tags: x"))
    proc = subprocess.run([_actionlint(), "-shellcheck", shellcheck, "-color=false"],
                          cwd=project, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1 and "diff-tags" in proc.stdout, proc.stdout
    # And it runs shellcheck on the workflows' scripts.
    (project / ".github" / "workflows" / "all-inputs.yml").unlink()
    (project / ".github" / "workflows" / "sc.yml").write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo $UNQUOTED\n")
    proc = subprocess.run([_actionlint(), "-shellcheck", shellcheck, "-color=false"],
                          cwd=project, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1 and "SC2086" in proc.stdout, proc.stdout


def test_shellcheck_passes_on_every_run_script(tmp_path: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed: run `scripts/install-tools debian`"
    checked = 0
    for action in sorted(ACTIONS.glob("*/action.yml")):
        for n, step in enumerate(yaml.safe_load(action.read_text())["runs"]["steps"]):
            if "run" not in step:
                continue
            script = tmp_path / f"{action.parent.name}-{n}.sh"
            script.write_text("#!/usr/bin/env bash\nset -eo pipefail\n" + step["run"])
            proc = subprocess.run([shellcheck, "-s", "bash", str(script)], capture_output=True,
                                  text=True, check=False)
            assert proc.returncode == 0, f"{action.parent.name} step {n}:\n{proc.stdout}"
            checked += 1
    assert checked >= 6
