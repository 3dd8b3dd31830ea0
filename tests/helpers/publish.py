"""Artifacts for the puller's tests: manifest trees written from objects, pushed (and signed)
with the library, as CI would publish them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from ocigitops.artifact import Metadata
from ocigitops.publisher.artifacts import push_artifact
from ocigitops.publisher.sign_cosign import sign_cosign_key
from ocigitops.reference import parse_reference
from ocigitops.registry import RegistryClient
from ocigitops.verifier.keys import load_private_key

#: The source and revision every e2e artifact is published with.
SOURCE = "https://example.com/e2e"
REVISION = f"main@sha1:{'b' * 40}"


def configmap(name: str, data: dict[str, str], annotations: dict[str, str] | None = None,
              ) -> dict[str, Any]:
    """A ConfigMap ``name`` holding ``data``."""
    md: dict[str, Any] = {"name": name}
    if annotations:
        md["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": md, "data": data}


def manifest_tree(tmp: Path, label: str, *objs: dict[str, Any]) -> Path:
    """A directory ``tmp/tree-<label>`` with one manifest file per object (no
    kustomization.yaml: the controller generates one)."""
    root = tmp / f"tree-{label}"
    root.mkdir()
    for i, obj in enumerate(objs):
        (root / f"{i:02d}-{obj['kind'].lower()}.yaml").write_text(
            yaml.safe_dump(obj, sort_keys=False))
    return root


def publish(host: str, repo: str, tree: Path, tag: str = "latest",
            key_pem: bytes | None = None) -> str:
    """Push ``tree`` to ``host/repo:tag`` over plain HTTP (signed with the cosign key
    ``key_pem``, password ``pw``, when given); Flux's revision ``tag@digest``."""
    async def go() -> str:
        ref = parse_reference(f"{host}/{repo}:{tag}")
        async with RegistryClient(insecure=True) as c:
            pushed = await push_artifact(c, ref, tree, Metadata(SOURCE, REVISION))
            if key_pem is not None:
                await sign_cosign_key(c, ref.repo_only(), pushed.digest,
                                      load_private_key(key_pem, b"pw"))
            return str(pushed.digest)

    return f"{tag}@{asyncio.run(go())}"
