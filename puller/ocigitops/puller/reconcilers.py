"""The kinds this controller knows: one line per kind.

Each entry is a kind module's ``RECONCILER`` (see
:mod:`ocigitops.puller.runtime.reconciler`). Adding a kind is a new module and one line
here; ``controller run --controllers`` picks among these names (default: all).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ocigitops.errors import OcigitopsError
from ocigitops.puller import helmrelease, kustomization
from ocigitops.puller.runtime.reconciler import Reconciler
from ocigitops.puller.sources import git, helmchart, helmrepository, oci

#: Sources first: their artifacts are what the other kinds consume.
ALL: tuple[Reconciler[Any], ...] = (
    oci.RECONCILER,
    git.RECONCILER,
    helmrepository.RECONCILER,
    helmchart.RECONCILER,
    kustomization.RECONCILER,
    helmrelease.RECONCILER,
)


def names() -> list[str]:
    """The ``--controllers`` names, in order."""
    return [r.name for r in ALL]


def select(wanted: Iterable[str]) -> tuple[Reconciler[Any], ...]:
    """The reconcilers ``--controllers`` names (names, aliases or kinds, any case; empty
    or ``all``: every one), in :data:`ALL`'s order; an unknown name is an error that
    lists the valid ones."""
    wanted = [w.strip().lower() for w in wanted if w.strip()]
    if not wanted or "all" in wanted:
        return ALL
    by_name = {n.lower(): r for r in ALL for n in (r.name, r.kind, *r.aliases)}
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        raise OcigitopsError(f"unknown controller {', '.join(unknown)}: choose from"
                             f" {', '.join(names())} or all")
    chosen = {by_name[w].kind for w in wanted}
    return tuple(r for r in ALL if r.kind in chosen)
