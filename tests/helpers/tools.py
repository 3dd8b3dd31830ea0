"""Locate the external tools installed by ``scripts/install-tools``.

A missing tool is a test failure naming the install command, never a silent skip
(``../shared/design/testing.md``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

TOOLS_DIR = Path(os.environ.get("OCIGITOPS_TOOLS", Path.home() / ".cache/ocigitops/tools"))


def tool(name: str, binary: str | None = None) -> str:
    """Return the path of tool ``name`` (cache dir ``name-*/bin/binary``), or fail the test."""
    binary = binary or name
    candidates = sorted(TOOLS_DIR.glob(f"{name}-*/bin/{binary}"))
    if candidates:
        return str(candidates[-1])
    found = shutil.which(binary) if name == binary else None
    if found:
        return found
    pytest.fail(f"{name} is not installed: run `scripts/install-tools {name}`", pytrace=False)


def debian_registry() -> str:
    """Path of the Debian ``docker-registry`` binary (distribution 2.8), or fail."""
    for p in ("/usr/bin/docker-registry", shutil.which("docker-registry") or ""):
        if p and os.access(p, os.X_OK):
            return p
    pytest.fail("docker-registry is not installed: run `scripts/install-tools debian`",
                pytrace=False)
