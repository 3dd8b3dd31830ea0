"""The artifact cache (verify on store and on read) and status conditions."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ocigitops.artifact import build_layer
from ocigitops.errors import DigestMismatchError
from ocigitops.puller import conditions as c
from ocigitops.puller.cache import ArtifactCache, CorruptCacheError

pytestmark = pytest.mark.unit


def _layer(tmp: Path) -> tuple[bytes, str]:
    tree = tmp / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.yaml").write_text("a: 1\n")
    (tree / "sub" / "b.yaml").write_text("b: 2\n")
    layer = build_layer(tree, tmp / "l.tgz")
    return (tmp / "l.tgz").read_bytes(), layer.digest


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 7):
        yield data[i:i + 7]


def test_store_extract_and_detect_corruption(tmp_path: Path) -> None:
    data, digest = _layer(tmp_path)
    cache = ArtifactCache(tmp_path / "cache")
    asyncio.run(cache.store(digest, _chunks(data)))
    assert cache.has(digest)
    out = tmp_path / "out"
    assert cache.extract(digest, out) == 2
    assert (out / "sub" / "b.yaml").read_text() == "b: 2\n"
    # flip one byte inside the gzip trailer: still extracts, but must be refused
    p = cache.path(digest)
    raw = bytearray(p.read_bytes())
    raw[-5] ^= 0xFF
    p.write_bytes(bytes(raw))
    (out / "keep.txt").write_text("previous content")
    with pytest.raises(CorruptCacheError):
        cache.extract(digest, out)
    assert not cache.has(digest)
    assert (out / "keep.txt").exists()  # the previous tree is untouched


def test_store_refuses_a_wrong_digest(tmp_path: Path) -> None:
    data, _ = _layer(tmp_path)
    cache = ArtifactCache(tmp_path / "cache")
    wrong = "sha256:" + hashlib.sha256(b"other").hexdigest()
    with pytest.raises(DigestMismatchError):
        asyncio.run(cache.store(wrong, _chunks(data)))
    assert not cache.has(wrong)
    assert not [f for f in (tmp_path / "cache" / "sha256").iterdir()]


def test_gc_keeps_what_is_referenced(tmp_path: Path) -> None:
    data, digest = _layer(tmp_path)
    cache = ArtifactCache(tmp_path / "cache")
    asyncio.run(cache.store(digest, _chunks(data)))
    other = "sha256:" + hashlib.sha256(b"x").hexdigest()
    asyncio.run(cache.store(other, _chunks(b"x")))
    assert cache.gc([digest]) == 1
    assert cache.has(digest) and not cache.has(other)


def test_conditions_transition_times_and_kstatus_shape() -> None:
    conds: list[dict[str, object]] = []
    c.mark_reconciling(conds, "Progressing", "fetching", 1)  # type: ignore[arg-type]
    assert {x["type"]: x["status"] for x in conds} == {"Reconciling": "True",
                                                        "Ready": "Unknown"}
    c.mark_ready(conds, "Succeeded", "stored artifact", 1)  # type: ignore[arg-type]
    assert [(x["type"], x["status"]) for x in conds] == [("Ready", "True")]
    t0 = conds[0]["lastTransitionTime"]
    assert not c.set_condition(conds, "Ready", "True", "Succeeded", "stored artifact", 1)  # type: ignore[arg-type]
    assert conds[0]["lastTransitionTime"] == t0
    c.mark_failed(conds, "InvalidURL", "bad url", 2, stalled=True)  # type: ignore[arg-type]
    assert {x["type"]: x["status"] for x in conds} == {"Ready": "False", "Stalled": "True"}
    assert c.find(conds, "Ready")["observedGeneration"] == 2  # type: ignore[arg-type, index]
