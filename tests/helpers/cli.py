"""Run the real ``ocigitops`` CLI (and peer binaries) as subprocesses in tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(args: list[str], *, check: bool = True, cwd: Path | None = None,
        input: bytes | None = None, env: dict[str, str] | None = None,
        timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    """Run a command; on unexpected failure, raise with its stdout and stderr."""
    proc = subprocess.run(args, capture_output=True, text=input is None, cwd=cwd,
                          input=input, env={**os.environ, **(env or {})}, timeout=timeout,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args[0]} {' '.join(args[1:3])} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def ocigitops(*args: str, check: bool = True, cwd: Path | None = None,
              env: dict[str, str] | None = None,
              timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ocigitops.cli ARGS`` (the installed entry point's module)."""
    return run([sys.executable, "-m", "ocigitops.cli", *args], check=check, cwd=cwd, env=env,
               timeout=timeout)


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    """:func:`ocigitops` for a run that may fail: the exit code is the caller's to check."""
    return ocigitops(*args, check=False, cwd=cwd, env=env, timeout=timeout)


def one_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The run failed with exactly one stderr line, ``error: ...`` naming every fragment
    (no traceback, nothing else); that line."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{proc.stderr}"
    line = lines[0]
    assert line.startswith("error: "), line
    for fragment in fragments:
        assert fragment in line, line
    return line


def isolate_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials of the host: an empty ``DOCKER_CONFIG`` and no ``OCIGITOPS_CREDS``."""
    cfg = tmp_path / "docker-config"
    cfg.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg))
    monkeypatch.delenv("OCIGITOPS_CREDS", raising=False)
