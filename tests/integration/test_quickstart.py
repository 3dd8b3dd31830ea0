"""The README's first command: ``ocigitops quickstart`` on a fresh state directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli import ocigitops
from tests.registries import free_port
from tests.tools import tool

pytestmark = pytest.mark.integration


def test_quickstart_pushes_pulls_and_stops(tmp_path: Path) -> None:
    kustomize_dir = str(Path(tool("kustomize")).parent)
    import os

    env = {"PATH": f"{kustomize_dir}:{os.environ['PATH']}"}
    state = tmp_path / "state"
    port = free_port()
    try:
        res = ocigitops("quickstart", "--address", f"127.0.0.1:{port}", "--state-dir",
                        str(state), env=env)
        out = res.stdout
        assert f"started the embedded registry at 127.0.0.1:{port}" in out
        assert "rendered" in out and "with kustomize" in out
        assert out.count("identical") == 2
        assert "Next, try:" in out
        # what it prints next works
        rows = ocigitops("list", "artifacts",
                         f"oci://127.0.0.1:{port}/quickstart/app-staging",
                         "--insecure-registry").stdout
        assert "latest" in rows
        # a second run reuses the running registry
        again = ocigitops("quickstart", "--address", f"127.0.0.1:{port}", "--state-dir",
                          str(state), env=env).stdout
        assert "registry already running" in again
    finally:
        stopped = ocigitops("registry", "stop", "--state-dir", str(state)).stdout
    assert "registry stopped" in stopped
