"""The runtime's reverse reference index: kept from informer events, it answers "who
references this object" without scanning every cached object."""

from __future__ import annotations

import pytest

from ocigitops.puller.runtime.refindex import ReferenceIndex

pytestmark = pytest.mark.unit

SRC = ("OCIRepository", "apps", "web")
OTHER = ("OCIRepository", "apps", "db")
KS_A = ("Kustomization", ("apps", "a"))
KS_B = ("Kustomization", ("apps", "b"))


def test_update_and_reverse_lookup() -> None:
    idx = ReferenceIndex()
    idx.update(KS_B, [SRC])
    idx.update(KS_A, [SRC, ("Kustomization", "apps", "b")])
    assert idx.referencing(SRC) == [KS_A, KS_B]
    assert idx.referencing(("Kustomization", "apps", "b")) == [KS_A]
    assert idx.referencing(OTHER) == []
    assert len(idx) == 2


def test_a_changed_reference_moves_the_referrer() -> None:
    idx = ReferenceIndex()
    idx.update(KS_A, [SRC])
    idx.update(KS_A, [OTHER])
    assert idx.referencing(SRC) == [] and idx.referencing(OTHER) == [KS_A]
    # The same references again change nothing; duplicates count once.
    idx.update(KS_A, [OTHER, OTHER])
    assert idx.referencing(OTHER) == [KS_A]


def test_removed_referrers_are_forgotten() -> None:
    idx = ReferenceIndex()
    idx.update(KS_A, [SRC])
    idx.update(KS_B, [SRC])
    idx.remove(KS_A)
    assert idx.referencing(SRC) == [KS_B]
    idx.update(KS_B, [])
    assert idx.referencing(SRC) == [] and len(idx) == 0
    idx.remove(KS_B)  # twice, or never added: no error
    assert len(idx) == 0
