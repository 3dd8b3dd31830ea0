"""Which objects reference which: the reverse index the runtime wakes consumers with.

After a reconcile the runtime wakes the objects that reference the one reconciled (a
Kustomization its OCIRepository, a dependent its ``dependsOn``). Scanning every cached
object of every kind for that costs O(objects) per reconcile, O(objects²) per resync; this
index is kept up to date from the informers' events (each object's ``references`` are
computed once per event) and answers in O(consumers).
"""

from __future__ import annotations

from collections.abc import Iterable

from ocigitops.puller.runtime.reconciler import ObjectKey

#: ``(kind, (namespace, name))``: one object the index knows.
Referrer = tuple[str, tuple[str, str]]


class ReferenceIndex:
    """Object -> what it references, and the reverse, for every running kind."""

    def __init__(self) -> None:
        self._targets: dict[Referrer, frozenset[ObjectKey]] = {}
        self._referrers: dict[ObjectKey, set[Referrer]] = {}

    def update(self, referrer: Referrer, targets: Iterable[ObjectKey]) -> None:
        """Record that ``referrer`` now references exactly ``targets``."""
        new = frozenset(targets)
        old = self._targets.get(referrer, frozenset())
        if new == old:
            return
        for t in old - new:
            users = self._referrers.get(t)
            if users is not None:
                users.discard(referrer)
                if not users:
                    del self._referrers[t]
        for t in new - old:
            self._referrers.setdefault(t, set()).add(referrer)
        if new:
            self._targets[referrer] = new
        else:
            self._targets.pop(referrer, None)

    def remove(self, referrer: Referrer) -> None:
        """Forget ``referrer`` (deleted)."""
        self.update(referrer, ())

    def referencing(self, target: ObjectKey) -> list[Referrer]:
        """The objects that reference ``target``, sorted (a stable wake order)."""
        return sorted(self._referrers.get(target, ()))

    def __len__(self) -> int:
        return len(self._targets)
