"""What a kind plugs into the controller runtime: one :class:`Reconciler` per kind.

Shaped as Flux's controllers set themselves up with controller-runtime: each kind's
module declares its API type (kind, plural, typed status), how to build its context from
the process's shared parts, its reconcile function, its finalizer, and which other
objects it *references* (a Kustomization its source and its ``dependsOn``; a HelmRelease
its chart). The runtime (:mod:`ocigitops.puller.manager`) inverts those references to know
whom to wake: when an object changes or becomes Ready, the objects referencing it are
reconciled at once instead of at their next interval. A kind whose objects others consume
as a source also declares its :class:`~ocigitops.puller.sources.contract.SourceKind`.

Adding a kind is one module defining a ``RECONCILER`` and one line in
:mod:`ocigitops.puller.reconcilers`; the runtime has no kind-specific code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.cache import ArtifactCache
from ocigitops.puller.reconcile import Outcome
from ocigitops.puller.runtime.options import Options

if TYPE_CHECKING:
    from ocigitops.puller.kube import DynamicClient
    from ocigitops.puller.sources.contract import SourceKind

C = TypeVar("C")

#: ``(kind, namespace, name)`` of an object another one refers to.
ObjectKey = tuple[str, str, str]

#: Writes a status while a reconcile is still working (Reconciling=True, "fetching ...").
Progress = Callable[[Mapping[str, Any], Mapping[str, Any]], Awaitable[None]]


async def no_progress(obj: Mapping[str, Any], status: Mapping[str, Any]) -> None:
    """The default :data:`Progress`: report nothing (unit tests, one-shot reconciles)."""


@dataclass
class Deps:
    """What the process shares with every kind: the API client, the artifact cache, the
    flags, the source kinds that exist, and the in-progress status writer."""

    kube: DynamicClient
    cache: ArtifactCache
    options: Options
    #: Every source kind consumers may reference, by kind name, with whether this
    #: process reconciles it (``--controllers``).
    sources: Mapping[str, SourceKind] = field(default_factory=dict)
    served: frozenset[str] = frozenset()
    progress: Progress = no_progress


def no_references(obj: Mapping[str, Any]) -> Iterable[ObjectKey]:
    """The default for a kind that refers to nothing."""
    return ()


@dataclass(frozen=True)
class Reconciler(Generic[C]):
    """One kind's reconciler, as the runtime sees it."""

    #: The ``--controllers`` name (``oci``, ``kustomization``).
    name: str
    kind: str
    plural: str
    #: The typed status: a status that does not parse as this type is never written.
    status_type: type
    #: Builds the kind's context (its injected I/O) from the shared parts.
    context: Callable[[Deps], C]
    reconcile: Callable[[Mapping[str, Any], C], Awaitable[Outcome]]
    #: The finalizer the kind's objects carry (``Outcome.add_finalizer`` adds this one).
    finalizer: str | None = None
    #: The objects whose changes wake an object of this kind.
    references: Callable[[Mapping[str, Any]], Iterable[ObjectKey]] = no_references
    #: Set when other kinds consume this kind's artifacts.
    source: SourceKind | None = None
    api_version: str = API_VERSION
    #: Other names accepted by ``--controllers`` (``ocirepository``, ``ks``).
    aliases: tuple[str, ...] = ()
