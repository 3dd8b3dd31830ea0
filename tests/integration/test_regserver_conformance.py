"""The embedded registry against the OCI distribution-spec conformance suite.

The suite is a Go test binary built by ``scripts/install-tools conformance``. All four
workflows run (pull, push, content discovery, content management), once deleting
manifests before blobs and once the other way round.
"""

from __future__ import annotations

import logging
import os
import subprocess
import xml.etree.ElementTree as ET
from collections import deque
from pathlib import Path

import pytest

from ocigitops.regserver import BackgroundRegistry
from tests.helpers.tools import tool

pytestmark = pytest.mark.integration

# Specs the suite skips by design with the settings below: they run only when the
# registry is pre-populated, or for the other answer of an optional behaviour
# (202 instead of 201 on mount, automatic cross-mount enabled).
EXPECTED_SKIPS = {
    "Pull Setup Get tag name from environment",
    "Content Discovery Setup Populate registry with test tags (no push)",
    "Push Cross-Repository Blob Mount Cross-mounting of nonexistent blob should yield session id",
    "Push Cross-Repository Blob Mount Cross-mounting without from, and automatic content "
    "discovery enabled should return a 201",
}
SUITE_PREFIX = "[It] OCI Distribution Conformance Tests "


class _Tail(logging.Handler):
    """Keeps the registry's last request log lines to print when the suite fails."""

    def __init__(self, size: int = 80) -> None:
        super().__init__(logging.DEBUG)
        self.lines: deque[str] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _junit_results(path: Path) -> tuple[list[str], list[str], list[str]]:
    """Names of the passed, failed and skipped specs in a JUnit report."""
    passed, failed, skipped = [], [], []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "").removeprefix(SUITE_PREFIX)
        if name.startswith("[") or name == "conformance tests":
            continue  # ginkgo's suite-level nodes (ReportAfterSuite and the like)
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(name)
        elif case.find("skipped") is not None:
            skipped.append(name)
        else:
            passed.append(name)
    return passed, failed, skipped


@pytest.mark.parametrize("manifests_first", ["1", "0"], ids=["manifests-first", "blobs-first"])
def test_distribution_spec_conformance(tmp_path: Path, manifests_first: str) -> None:
    binary = tool("conformance", "conformance.test")
    workdir = tmp_path / "work"
    workdir.mkdir()
    tail = _Tail()
    logger = logging.getLogger("ocigitops.regserver")
    previous_level = logger.level
    logger.addHandler(tail)
    logger.setLevel(logging.DEBUG)
    try:
        with BackgroundRegistry(tmp_path / "storage") as reg:
            env = {
                **os.environ,
                "OCI_ROOT_URL": reg.url,
                "OCI_NAMESPACE": "conformance/main",
                "OCI_CROSSMOUNT_NAMESPACE": "conformance/other",
                "OCI_TEST_PULL": "1",
                "OCI_TEST_PUSH": "1",
                "OCI_TEST_CONTENT_DISCOVERY": "1",
                "OCI_TEST_CONTENT_MANAGEMENT": "1",
                "OCI_HIDE_SKIPPED_WORKFLOWS": "0",
                "OCI_DEBUG": "0",
                "OCI_DELETE_MANIFEST_BEFORE_BLOBS": manifests_first,
                # Set to 0: a mount without "from" must start a session (we never guess).
                "OCI_AUTOMATIC_CROSSMOUNT": "0",
                "OCI_REPORT_DIR": str(workdir),
            }
            proc = subprocess.run([binary, "-ginkgo.no-color"], cwd=workdir, env=env,
                                  capture_output=True, text=True, timeout=240, check=False)
    finally:
        logger.removeHandler(tail)
        logger.setLevel(previous_level)

    report = workdir / "junit.xml"
    output_tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-60:])
    assert report.is_file(), f"no junit report; conformance output:\n{output_tail}"
    passed, failed, skipped = _junit_results(report)
    if proc.returncode != 0 or failed:
        pytest.fail(
            f"conformance exit {proc.returncode}, failed specs:\n  " + "\n  ".join(failed)
            + f"\n--- conformance output (tail) ---\n{output_tail}"
            + "\n--- registry log (tail) ---\n" + "\n".join(tail.lines),
            pytrace=False)
    # Every workflow really ran: only the by-design skips are allowed.
    assert set(skipped) <= EXPECTED_SKIPS, sorted(set(skipped) - EXPECTED_SKIPS)
    for workflow in ("Pull ", "Push ", "Content Discovery ", "Content Management "):
        assert any(name.startswith(workflow) for name in passed), workflow
    assert len(passed) >= 70
