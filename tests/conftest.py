"""Hooks and session fixtures for every tier: a test's tier mark comes from its folder, the
upstream test vectors are checked once, and real registries on 127.0.0.1 are started once
and shared. Helpers live in ``tests.helpers``; this module holds fixtures and hooks only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import registries
from tests.helpers.paths import TESTVECTORS
from tests.helpers.registries import Registry

TIERS = ("unit", "integration", "e2e")


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by mark
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test's tier is the folder it is in (tests/unit, tests/integration, tests/e2e):
    a test without a ``pytestmark`` still runs with its tier, and one outside the three
    folders is an error, never silently deselected by ``-m``."""
    here = Path(__file__).resolve().parent
    stray: list[str] = []
    for item in items:
        parts = Path(str(item.path)).resolve().relative_to(here).parts
        if len(parts) > 1 and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))
        else:
            stray.append(item.nodeid)
    if stray:
        raise pytest.UsageError("tests outside tests/{unit,integration,e2e}: "
                                + ", ".join(stray[:5]))
    if not (TESTVECTORS / "README.md").is_file():
        # Once, naming what is missing, rather than an error in every test that reads them.
        raise pytest.UsageError(
            f"the upstream test vectors are missing: {TESTVECTORS} (the project's shared/"
            " folder must sit beside the repository, as CI lays it out)")


@pytest.fixture(scope="session")
def embedded_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Our embedded registry (referrers API)."""
    with registries.embedded(tmp_path_factory.mktemp("embedded")) as reg:
        yield reg


@pytest.fixture(scope="session")
def debian_plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Debian docker-registry 2.8 over plain HTTP (no referrers API)."""
    with registries.debian(tmp_path_factory.mktemp("debian")) as reg:
        yield reg


@pytest.fixture(scope="session")
def debian_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Debian docker-registry with htpasswd basic auth."""
    with registries.debian(tmp_path_factory.mktemp("debian-auth"), auth=True) as reg:
        yield reg


@pytest.fixture(scope="session")
def debian_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Debian docker-registry with TLS from a test CA."""
    with registries.debian(tmp_path_factory.mktemp("debian-tls"), tls=True) as reg:
        yield reg


@pytest.fixture(scope="session")
def ggcr_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """go-containerregistry's registry (no referrers API)."""
    with registries.crane(tmp_path_factory.mktemp("ggcr")) as reg:
        yield reg


@pytest.fixture(scope="session")
def olareg_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """olareg (third-party, referrers API)."""
    with registries.olareg(tmp_path_factory.mktemp("olareg")) as reg:
        yield reg


_FLAVOURS = {"embedded": "embedded_registry", "debian_plain": "debian_plain",
             "debian_auth": "debian_auth", "debian_tls": "debian_tls",
             "olareg": "olareg_registry", "ggcr": "ggcr_registry"}


@pytest.fixture(params=list(_FLAVOURS))
def any_registry(request: pytest.FixtureRequest) -> Registry:
    """Each registry flavour in turn."""
    reg: Registry = request.getfixturevalue(_FLAVOURS[request.param])
    return reg
