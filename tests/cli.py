"""Run the real ``ocigitops`` CLI (and peer binaries) as subprocesses in tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


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
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ocigitops.cli ARGS`` (the installed entry point's module)."""
    return run([sys.executable, "-m", "ocigitops.cli", *args], check=check, cwd=cwd, env=env)


def tree_files(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every regular file under ``root``."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def tree_modes(root: Path) -> dict[str, int]:
    """Relative path -> permission bits of every regular file under ``root``."""
    return {p.relative_to(root).as_posix(): p.stat().st_mode & 0o777
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}
