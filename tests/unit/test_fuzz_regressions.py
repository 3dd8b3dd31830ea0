"""Fuzzing findings stay fixed: every reproducer in ``fuzz/regressions/<target>/`` (and every
committed seed in ``fuzz/corpus/<target>/``) goes through its target's ``test_one_input``,
without atheris. A target lets only its parser's typed errors through, so a raw ValueError,
KeyError, RecursionError... fails here as it did under the fuzzer; a hang hits the timeout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.targets import TARGETS, load
from tests.helpers.paths import REPO_ROOT

pytestmark = pytest.mark.unit

FUZZ = REPO_ROOT / "fuzz"


def _inputs(kind: str) -> list[tuple[str, Path]]:
    root = FUZZ / kind
    if not root.is_dir():
        return []
    return [(target.name, path) for target in sorted(root.iterdir()) if target.is_dir()
            for path in sorted(target.iterdir()) if path.is_file()]


def _id(case: tuple[str, Path]) -> str:
    return f"{case[0]}/{case[1].name}"


REGRESSIONS = _inputs("regressions")
SEEDS = _inputs("corpus")


def test_directories_name_targets() -> None:
    for kind in ("regressions", "corpus"):
        for d in (FUZZ / kind).iterdir():
            assert not d.is_dir() or d.name in TARGETS, f"fuzz/{kind}/{d.name} is not a fuzz target"
    assert {t for t, _ in SEEDS} == set(TARGETS), "every target has committed seeds"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", REGRESSIONS, ids=[_id(c) for c in REGRESSIONS])
def test_reproducer_stays_fixed(case: tuple[str, Path]) -> None:
    target, path = case
    load(target)(path.read_bytes())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", SEEDS, ids=[_id(c) for c in SEEDS])
def test_seed_passes(case: tuple[str, Path]) -> None:
    target, path = case
    load(target)(path.read_bytes())
