"""An in-memory stand-in for the reads a reconciler makes before it applies anything.

A fake, and said so: the reconcilers' unit tests inject it as the context's ``kube`` to
drive every branch that decides from objects in the cluster (a missing source, a source
without an artifact, a dependency not Ready, a missing Secret) without an API server.
It implements only ``get``, ``secret_data`` and ``event``; anything that writes to the
cluster (server-side apply, prune, health) is tested on the real kube-apiserver in
tests/e2e, and calling it here fails loudly.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any


class MemKube:
    """Objects by ``(kind, namespace, name)``."""

    def __init__(self, *objects: Mapping[str, Any]) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.gets: list[tuple[str, str, str]] = []
        for obj in objects:
            self.put(obj)

    def put(self, obj: Mapping[str, Any]) -> None:
        """Store (or replace) an object."""
        md = obj.get("metadata") or {}
        self.objects[(str(obj["kind"]), md.get("namespace") or "", md["name"])] = dict(obj)

    def secret(self, namespace: str, name: str, data: Mapping[str, bytes]) -> None:
        """Store a Secret with ``data`` (base64-encoded as the API server returns it)."""
        self.put({"apiVersion": "v1", "kind": "Secret",
                  "metadata": {"name": name, "namespace": namespace},
                  "data": {k: base64.b64encode(v).decode() for k, v in data.items()}})

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None, *, impersonate: str | None = None,
                  ) -> dict[str, Any] | None:
        self.gets.append((kind, namespace or "", name))
        return self.objects.get((kind, namespace or "", name))

    async def secret_data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        obj = self.objects.get(("Secret", namespace, name))
        if obj is None:
            return None
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}

    async def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str,
                    **_: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"MemKube does not implement {name}: test writes on the real"
                             " API server (tests/e2e)")
