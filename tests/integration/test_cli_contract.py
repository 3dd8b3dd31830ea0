"""The CLI's contract with its users (issue 9: "One error style, no tracebacks" and
"Consistent flags, Flux's where Flux has them"), through the real entry point
(``python -m ocigitops.cli``), against real registries on 127.0.0.1.

- every failure is one ``error:`` line on stderr, naming the cause and the fix;
- one exit-code scheme (``ocigitops.exitcodes``): 0 yes, 1 no, 2 usage, 3 failure,
  4 not found, 5 denied, 6 unreachable;
- ``-o json|yaml`` on every command that prints a result, a document even on failure;
- ``--debug`` shows the HTTP exchanges with secrets redacted; a dead registry fails fast;
- Flux's flags (``--timeout`` durations, ``--provider``), the loopback rule, completion,
  help pages and ``version``.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import click
import pytest
import yaml

from ocigitops import cli as cli_module
from ocigitops import exitcodes
from ocigitops.reference import is_loopback
from tests.helpers.cli import cli, isolate_credentials, ocigitops, one_error
from tests.helpers.registries import Registry, free_port, loopback_alias

SRC = "https://github.com/example/cli-contract"
REV = "main@sha1:0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def _no_host_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_credentials(monkeypatch, tmp_path)


def tree(root: Path, nonce: str | None = None) -> Path:
    (root / "apps").mkdir(parents=True, exist_ok=True)
    (root / "apps" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n"
        f"  nonce: {nonce or uuid.uuid4().hex}\n")
    return root


def push(reg: Registry, repo: str, path: Path, tag: str = "v1", *extra: str) -> str:
    proc = cli("push", "artifact", f"{reg.url(repo)}:{tag}", "--path", str(path),
               "--source", SRC, "--revision", REV, "-o", "json", *reg.cli_flags(), *extra)
    assert proc.returncode == 0, proc.stderr
    return str(json.loads(proc.stdout)["digest"])


def dead_host() -> str:
    return f"127.0.0.1:{free_port()}"  # bound and released: nothing listens there


def kubeconfig_to(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: dev\n"
        f"clusters: [{{name: c, cluster: {{server: '{server}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: dev, context: {cluster: c, user: u}}]\n")
    return path


# -- one error style, no tracebacks ---------------------------------------------------------

CLUSTER_COMMANDS = [
    ("get", "kustomizations"),
    ("get", "sources", "oci"),
    ("reconcile", "ks", "app"),
    ("suspend", "kustomization", "app"),
    ("resume", "source", "oci", "app"),
    ("controller", "run", "--metrics-addr", "0", "--health-addr", "0"),
]


@pytest.mark.parametrize("args", CLUSTER_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_cluster_commands_without_a_kubeconfig(args: tuple[str, ...], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "config"
    proc = cli(*args, env={"KUBECONFIG": str(missing), "HOME": str(tmp_path)})
    one_error(proc, f"kubeconfig: {missing} not found", "--kubeconfig")
    assert proc.returncode == exitcodes.FAILURE


@pytest.mark.parametrize("args", CLUSTER_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_cluster_commands_with_an_unreachable_api_server(args: tuple[str, ...],
                                                         tmp_path: Path) -> None:
    server = f"https://{dead_host()}"
    kubeconfig = kubeconfig_to(tmp_path, server)
    proc = cli(*args, "--kubeconfig", str(kubeconfig))
    one_error(proc, f"cannot reach the Kubernetes API server {server}", "context dev",
              f"kubeconfig {kubeconfig}", "connection refused")
    assert proc.returncode == exitcodes.UNREACHABLE


@pytest.mark.parametrize("args", [("get", "kustomizations"),
                                  ("controller", "run", "--metrics-addr", "0",
                                   "--health-addr", "0")], ids=lambda a: " ".join(a[:2]))
def test_unknown_context_is_a_usage_error(args: tuple[str, ...], tmp_path: Path) -> None:
    kubeconfig = kubeconfig_to(tmp_path, f"https://{dead_host()}")
    proc = cli(*args, "--kubeconfig", str(kubeconfig), "--context", "prod")
    one_error(proc, "--context prod", "no such context", "(it has: dev)")
    assert proc.returncode == exitcodes.USAGE


@pytest.mark.parametrize("args,fragments", [
    (("registry", "serve", "--address", "0.0.0.0:abc"), ("--address '0.0.0.0:abc'",
                                                           "HOST:PORT")),
    (("quickstart", "--address", "nonsense"), ("--address 'nonsense'", "HOST:PORT")),
    (("list", "artifacts", "oci://127.0.0.1:1/app", "--filter-semver", "garbage"),
     ("invalid semver range 'garbage'", ">=1.0.0 <2.0.0")),
    (("list", "artifacts", "oci://127.0.0.1:5000"),
     ("names the registry 127.0.0.1:5000 but no repository", "oci://127.0.0.1:5000/REPO")),
    (("pull", "artifact", "oci://localhost:5000", "--output", "out"),
     ("names the registry localhost:5000 but no repository",)),
    (("list", "artifacts", "oci://127.0.0.1:1/app", "--timeout", "soon"),
     ("--timeout", "invalid duration 'soon'")),
    (("push", "artifact", "oci://127.0.0.1:1/app:v1", "--no-such-flag"),
     ("No such option '--no-such-flag'", "ocigitops push artifact --help")),
    (("verify", "artifact"), ("Missing argument 'URL'",)),
    (("nonsense",), ("No such command 'nonsense'",)),
], ids=["serve-address", "quickstart-address", "semver", "host-only-url", "host-only-pull",
        "timeout", "unknown-flag", "missing-arg", "unknown-command"])
def test_usage_errors_are_one_line_exit_2(args: tuple[str, ...], fragments: tuple[str, ...],
                                          tmp_path: Path) -> None:
    proc = cli(*args, cwd=tmp_path, env={"HOME": str(tmp_path)}, timeout=30)
    line = one_error(proc, *fragments)
    assert proc.returncode == exitcodes.USAGE, line
    assert "docker.io" not in line  # a host-only URL never names Docker Hub


def test_garbage_semver_is_refused_before_the_registry_is_asked() -> None:
    start = time.monotonic()
    proc = cli("list", "artifacts", f"oci://{dead_host()}/app", "--filter-semver", "1.x.y.z!")
    one_error(proc, "invalid semver range")
    assert "cannot reach" not in proc.stderr and time.monotonic() - start < 10


def test_busy_port_names_the_address(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        address = f"127.0.0.1:{s.getsockname()[1]}"
        proc = cli("registry", "serve", "--storage", str(tmp_path / "s"), "--address",
                   address, timeout=30)
    one_error(proc, f"cannot listen on {address}", "already in use")
    assert proc.returncode == exitcodes.FAILURE


def test_controller_busy_metrics_port_names_the_address(tmp_path: Path,
                                                        embedded_registry: Registry) -> None:
    # The API server check comes first, so point it at something that answers /version.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = cli("controller", "run", "--kubeconfig",
                   str(kubeconfig_to(tmp_path, f"http://{embedded_registry.host}")),
                   "--metrics-addr", f"127.0.0.1:{port}", "--health-addr", "0", timeout=30)
    # The registry answers /version with 404: the controller says so in one line, or, if
    # it got past that, the metrics address is named.
    one_error(proc)
    assert f"127.0.0.1:{port}" in proc.stderr or "/version" in proc.stderr


def test_broken_pipe_is_not_an_error(embedded_registry: Registry, tmp_path: Path) -> None:
    repo = f"pipe/{uuid.uuid4().hex[:8]}"
    push(embedded_registry, repo, tree(tmp_path / "src"))
    # The reader is gone before the command writes: every write to stdout fails (EPIPE).
    proc = subprocess.Popen([sys.executable, "-m", "ocigitops.cli", "list", "artifacts",
                             embedded_registry.url(repo)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert err == "", err


# -- exit codes -----------------------------------------------------------------------------

def test_diff_exit_codes_split_no_from_trouble(embedded_registry: Registry,
                                               tmp_path: Path) -> None:
    repo = f"codes/{uuid.uuid4().hex[:8]}"
    src = tree(tmp_path / "src", "same")
    push(embedded_registry, repo, src)
    url = f"{embedded_registry.url(repo)}:v1"
    same = cli("diff", "artifact", url, "--path", str(src))
    assert same.returncode == exitcodes.SUCCESS and "no changes" in same.stdout, same.stderr
    other = tree(tmp_path / "other", "different")
    changed = cli("diff", "artifact", url, "--path", str(other))
    assert changed.returncode == exitcodes.NO and "differs" in changed.stdout
    doc = json.loads(cli("diff", "artifact", url, "--path", str(other), "-o", "json").stdout)
    assert doc["same"] is False and doc["remoteDigest"].startswith("sha256:")
    missing = cli("diff", "artifact", f"{embedded_registry.url(repo)}:nope", "--path",
                  str(src))
    one_error(missing, "not found")
    assert missing.returncode == exitcodes.NOT_FOUND
    down = cli("diff", "artifact", f"oci://{dead_host()}/app:v1", "--path", str(src))
    one_error(down, "cannot reach registry", "connection refused")
    assert down.returncode == exitcodes.UNREACHABLE


def test_verify_exit_codes_and_a_document_on_every_outcome(embedded_registry: Registry,
                                                           tmp_path: Path) -> None:
    ocigitops("generate", "key-pair", cwd=tmp_path, env={"COSIGN_PASSWORD": ""})
    repo = f"verify/{uuid.uuid4().hex[:8]}"
    push(embedded_registry, repo, tree(tmp_path / "src"))
    url = f"{embedded_registry.url(repo)}:v1"
    key = ["--key", str(tmp_path / "cosign.pub")]
    unsigned = cli("verify", "artifact", url, *key, "-o", "yaml")
    assert unsigned.returncode == exitcodes.NO, unsigned.stderr
    assert yaml.safe_load(unsigned.stdout)["verified"] is False
    ok = cli("sign", "artifact", url, "--key", str(tmp_path / "cosign.key"), "-o", "json",
             env={"COSIGN_PASSWORD": ""})
    assert ok.returncode == 0, ok.stderr
    signed = cli("verify", "artifact", url, *key, "-o", "json")
    assert signed.returncode == exitcodes.SUCCESS, signed.stderr
    assert json.loads(signed.stdout)["verified"] is True
    down = cli("verify", "artifact", f"oci://{dead_host()}/app:v1", *key, "-o", "json")
    one_error(down, "cannot reach registry")
    assert down.returncode == exitcodes.UNREACHABLE
    doc = json.loads(down.stdout)
    assert doc["exitCode"] == exitcodes.UNREACHABLE and "cannot reach" in doc["error"]


def test_wrong_credentials_exit_5_and_debug_redacts_them(debian_auth: Registry) -> None:
    secret = f"not-the-SECRET-{uuid.uuid4().hex[:6]}"
    proc = cli("list", "artifacts", debian_auth.url("app"), "--creds", f"tester:{secret}",
               "--debug")
    assert proc.returncode == exitcodes.DENIED, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[-1].startswith("error: ") and "refused the credentials" in lines[-1]
    debug = [x for x in lines if x.startswith("debug: ")]
    assert any(x.startswith(f"debug: > GET http://{debian_auth.host}/v2/") for x in debug)
    assert any(x.startswith("debug: < 401") for x in debug), debug
    assert any("authorization: Basic <redacted>" in x for x in debug), debug
    basic = base64.b64encode(f"tester:{secret}".encode()).decode()
    assert secret not in proc.stderr and basic not in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_dead_registry_fails_fast_and_debug_reports_it() -> None:
    host = dead_host()
    start = time.monotonic()
    proc = cli("pull", "artifact", f"oci://{host}/app:v1", "--output", "out", "-v")
    assert time.monotonic() - start < 4  # interpreter start-up included; no backoff
    assert proc.returncode == exitcodes.UNREACHABLE
    assert f"debug: > GET https://{host}/v2/app/manifests/v1" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"error: cannot reach registry {host}")


# -- output formats, stdout and stderr --------------------------------------------------------

def test_output_formats_on_tag_list_and_stdout_only_carries_results(
        embedded_registry: Registry, tmp_path: Path) -> None:
    repo = f"fmt/{uuid.uuid4().hex[:8]}"
    digest = push(embedded_registry, repo, tree(tmp_path / "src"))
    url = f"{embedded_registry.url(repo)}:v1"
    text = cli("tag", "artifact", url, "--tag", "latest")
    assert text.stdout.strip() == f"{embedded_registry.url(repo)}:latest@{digest}"
    as_json = json.loads(cli("tag", "artifact", url, "--tag", "stable", "-o", "json").stdout)
    assert as_json == {"digest": digest,
                       "urls": [f"{embedded_registry.url(repo)}:stable@{digest}"]}
    as_yaml = yaml.safe_load(cli("tag", "artifact", url, "--tag", "x1", "-o", "yaml").stdout)
    assert as_yaml["digest"] == digest
    listed = cli("list", "artifacts", embedded_registry.url(repo), "-o", "yaml")
    assert {r["digest"] for r in yaml.safe_load(listed.stdout)} == {digest}
    assert listed.stderr == ""


# -- Flux's flags ----------------------------------------------------------------------------

def test_timeout_takes_go_durations(embedded_registry: Registry, tmp_path: Path) -> None:
    repo = f"timeout/{uuid.uuid4().hex[:8]}"
    push(embedded_registry, repo, tree(tmp_path / "src"), "v1", "--timeout", "90s")
    for value in ("5m", "1m30s", "300"):
        proc = cli("list", "artifacts", embedded_registry.url(repo), "--timeout", value)
        assert proc.returncode == 0, (value, proc.stderr)
    one_error(cli("list", "artifacts", embedded_registry.url(repo), "--timeout", "0s"),
              "not a positive duration")


def test_provider_generic_works_and_the_cloud_ones_fail_clearly(
        embedded_registry: Registry, tmp_path: Path) -> None:
    repo = f"provider/{uuid.uuid4().hex[:8]}"
    push(embedded_registry, repo, tree(tmp_path / "src"), "v1", "--provider", "generic")
    for provider in ("aws", "azure", "gcp"):
        proc = cli("list", "artifacts", embedded_registry.url(repo), "--provider", provider)
        one_error(proc, f"--provider {provider} is not implemented yet",
                  "--provider generic")
        assert proc.returncode == exitcodes.FAILURE
    one_error(cli("list", "artifacts", embedded_registry.url(repo), "--provider", "oracle"),
              "Invalid value for '--provider'")


# -- the loopback rule ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["embedded_registry", "debian_plain"])
def test_loopback_registries_speak_plain_http_without_the_flag(
        name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    reg: Registry = request.getfixturevalue(name)
    repo = f"loopback/{uuid.uuid4().hex[:8]}"
    src = tree(tmp_path / "src")
    flagless = [f for f in reg.cli_flags() if f != "--insecure-registry"]
    proc = cli("push", "artifact", f"{reg.url(repo)}:v1", "--path", str(src), "--source", SRC,
               "--revision", REV, *flagless)
    assert proc.returncode == 0, proc.stderr
    pulled = cli("pull", "artifact", f"{reg.url(repo)}:v1", "--output",
                 str(tmp_path / "out"), *flagless)
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / "out" / "apps" / "cm.yaml").read_text() == \
        (src / "apps" / "cm.yaml").read_text()
    port = reg.host.rpartition(":")[2]
    via_localhost = cli("list", "artifacts", f"oci://localhost:{port}/{repo}", *flagless)
    assert via_localhost.returncode == 0, via_localhost.stderr


def test_other_hosts_still_need_the_insecure_flag(embedded_registry: Registry,
                                                  tmp_path: Path) -> None:
    """The rule is on the name as written, never on what it resolves to: a DNS answer
    must not turn TLS off."""
    alias = loopback_alias()
    if alias is None:
        pytest.skip("no host name other than localhost resolves to 127.0.0.1 here")
    assert not is_loopback(alias)
    repo = f"alias/{uuid.uuid4().hex[:8]}"
    push(embedded_registry, repo, tree(tmp_path / "src"))
    port = embedded_registry.host.rpartition(":")[2]
    url = f"oci://{alias}:{port}/{repo}"
    refused = cli("list", "artifacts", url)
    one_error(refused, f"cannot reach registry {alias}:{port}", "pass --insecure-registry")
    assert refused.returncode == exitcodes.UNREACHABLE
    assert cli("list", "artifacts", url, "--insecure-registry").returncode == 0


# -- completion, help, version ----------------------------------------------------------------

def test_plain_ocigitops_prints_help_and_exits_0() -> None:
    proc = ocigitops()
    assert proc.stdout.startswith("Usage: ocigitops") and "Exit codes:" in proc.stdout
    group = ocigitops("push")
    assert "artifact" in group.stdout and group.returncode == 0


@pytest.mark.parametrize("shell,marker", [("bash", "complete -o nosort -F"),
                                          ("zsh", "#compdef ocigitops"),
                                          ("fish", "complete --no-files --command ocigitops")])
def test_completion_scripts(shell: str, marker: str) -> None:
    proc = ocigitops("completion", shell)
    assert marker in proc.stdout and "_OCIGITOPS_COMPLETE" in proc.stdout
    # The script's protocol answers: the commands that start with "re".
    env = {"_OCIGITOPS_COMPLETE": f"{shell}_complete", "COMP_WORDS": "ocigitops re",
           "COMP_CWORD": "re" if shell == "fish" else "1"}  # fish passes the word
    answer = subprocess.run([sys.executable, "-m", "ocigitops.cli"], capture_output=True,
                            text=True, env={**os.environ, **env}, check=False)
    for command in ("reconcile", "registry", "resume"):
        assert command in answer.stdout, answer


def _leaf_commands() -> list[tuple[str, ...]]:
    cli_module._finish(cli_module.main)
    return sorted(path for path, cmd in cli_module._walk(cli_module.main)
                  if not isinstance(cmd, click.Group))


@pytest.mark.parametrize("path", _leaf_commands(), ids=" ".join)
def test_every_help_page_has_examples_and_every_option_a_description(
        path: tuple[str, ...]) -> None:
    page = ocigitops(*path, "--help").stdout
    assert "Examples:" in page and f"ocigitops {path[0]}" in page.split("Examples:")[1]
    assert "--debug" in page
    ctx = click.Context(cli_module.main)
    command: click.Command = cli_module.main
    for word in path:
        assert isinstance(command, click.Group)
        command = command.commands[word]
    undocumented = [o.opts for o in command.get_params(ctx)
                    if isinstance(o, click.Option) and not o.hidden and not o.help]
    assert not undocumented


def test_version(tmp_path: Path) -> None:
    from ocigitops.version import __version__

    client = ocigitops("version", "--client")
    assert client.stdout.strip() == f"ocigitops: v{__version__}" and client.stderr == ""
    as_json = json.loads(ocigitops("version", "--client", "-o", "json").stdout)
    assert as_json == {"client": f"v{__version__}", "controller": None, "kubernetes": None}
    # No cluster: the client version is still the answer; stderr says why the rest is not.
    no_cluster = ocigitops("version", "--kubeconfig",
                           str(kubeconfig_to(tmp_path, f"https://{dead_host()}")))
    assert no_cluster.stdout.strip() == f"ocigitops: v{__version__}"
    assert "controller version unknown: cannot reach the Kubernetes API server" in \
        no_cluster.stderr
