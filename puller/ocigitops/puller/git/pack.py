"""A streaming pre-check of a received pack, before dulwich indexes it.

A pack's objects are zlib streams: a few kilobytes of pack can inflate to gigabytes, and
indexing inflates every object in memory. So before the pack is indexed this walks it once,
inflating each object in bounded chunks and throwing the output away, and refuses it when
one object (a blob, or what a delta builds) is larger than the per-file limit, when all of
them together are over the total limit, or when it is truncated or malformed.
"""

from __future__ import annotations

import time
import zlib
from typing import BinaryIO

from ocigitops.puller.git.errors import GitError, GitLimitError, GitTimeoutError

_CHUNK = 1024 * 1024
_OFS_DELTA, _REF_DELTA = 6, 7


def _byte(f: BinaryIO) -> int:
    b = f.read(1)
    if not b:
        raise GitError("the pack is truncated")
    return b[0]


def _delta_target_size(head: bytes) -> int:
    """The result size a delta declares (its second varint)."""
    pos = 0
    for _ in range(2):
        value, shift = 0, 0
        while True:
            if pos >= len(head):
                raise GitError("the pack holds a malformed delta")
            c = head[pos]
            pos += 1
            value |= (c & 0x7F) << shift
            shift += 7
            if not c & 0x80:
                break
            if shift > 63:
                raise GitError("the pack holds a malformed delta")
    return value


def check_pack(f: BinaryIO, *, max_object: int, max_total: int, max_objects: int,
               deadline: float) -> int:
    """Walk the pack in ``f`` (positioned at its start); the number of objects.

    Raises :class:`GitLimitError` for an object over ``max_object`` bytes, inflated
    contents over ``max_total`` or more than ``max_objects`` objects, and
    :class:`GitError` for a malformed pack.
    """
    head = f.read(12)
    if len(head) != 12 or head[:4] != b"PACK" or int.from_bytes(head[4:8], "big") not in (2, 3):
        raise GitError("the server sent something that is not a Git pack")
    count = int.from_bytes(head[8:12], "big")
    if count > max_objects:
        raise GitLimitError(f"the pack holds {count} objects, over the limit of {max_objects}")
    total = 0
    for _ in range(count):
        if time.monotonic() > deadline:
            raise GitTimeoutError("checking the pack did not finish within the timeout")
        c = _byte(f)
        kind = (c >> 4) & 7
        size, shift = c & 0x0F, 4
        while c & 0x80:
            c = _byte(f)
            size |= (c & 0x7F) << shift
            shift += 7
            if shift > 70:
                raise GitError("the pack holds a malformed object header")
        if kind == _OFS_DELTA:
            c = _byte(f)
            while c & 0x80:
                c = _byte(f)
        elif kind == _REF_DELTA:
            if len(f.read(20)) != 20:
                raise GitError("the pack is truncated")
        elif kind not in (1, 2, 3, 4):
            raise GitError(f"the pack holds an object of unknown type {kind}")
        if kind in (1, 2, 3, 4) and size > max_object:
            raise GitLimitError(f"the pack holds an object of {size} bytes, over the"
                                f" {max_object}-byte per-file limit")
        d = zlib.decompressobj()
        inflated, first = 0, b""
        while not d.eof:
            chunk = f.read(64 * 1024)
            if not chunk:
                raise GitError("the pack is truncated")
            buf = chunk
            while buf and not d.eof:
                try:
                    out = d.decompress(buf, _CHUNK)
                except zlib.error:
                    raise GitError("the pack holds a corrupt object") from None
                inflated += len(out)
                if len(first) < 32:
                    first += out[:32 - len(first)]
                if inflated > size:
                    raise GitError("a pack object inflates past its declared size")
                buf = d.unconsumed_tail
            if d.eof and d.unused_data:
                f.seek(-len(d.unused_data), 1)
        if inflated != size:
            raise GitError("a pack object does not inflate to its declared size")
        target = size if kind in (1, 2, 3, 4) else _delta_target_size(first)
        if target > max_object:
            raise GitLimitError(f"the pack builds an object of {target} bytes, over the"
                                f" {max_object}-byte per-file limit")
        total += target
        if total > max_total:
            raise GitLimitError(f"the pack's objects hold more than {max_total} bytes")
    return count


__all__ = ["check_pack"]
