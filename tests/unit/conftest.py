"""Fixtures of the unit tier: an in-process embedded registry per test, and the registry
options that reach it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ocigitops.options import RegistryOptions
from ocigitops.regserver import BackgroundRegistry


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[BackgroundRegistry]:
    """The embedded registry on a background thread, storage in the test's tmp_path."""
    with BackgroundRegistry(tmp_path / "storage") as r:
        yield r


@pytest.fixture
def remote() -> RegistryOptions:
    """Plain HTTP (the embedded registry has no TLS) and a short deadline: a hang fails
    fast."""
    return RegistryOptions(insecure=True, timeout=30)
