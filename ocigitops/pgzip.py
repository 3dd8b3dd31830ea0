"""Parallel gzip compression with pigz's scheme, on threads.

Written here because the standard :mod:`gzip` compresses on one core and no maintained
library offers deterministic multi-threaded gzip for Python. The input is cut into
fixed 1 MiB blocks; each block is deflated independently with the previous 32 KiB as
preset dictionary and ends with a sync flush, the last one with a final block. The
concatenation is a single valid deflate stream. zlib releases the GIL while it works,
so blocks compress in parallel while the caller keeps producing input.

The output depends only on the input, the level and the block size: never on the number
of threads or their timing, so artifacts stay reproducible.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

BLOCK_SIZE = 1 << 20
_WINDOW = 32 * 1024
# gzip header: magic, deflate, no flags, mtime 0, XFL 0 (levels 2-8), OS 255 (unknown):
# the same ten bytes Go's compress/gzip writes at its default level.
_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


def _deflate(block: bytes, zdict: bytes, level: int, last: bool) -> bytes:
    if zdict:
        c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 8,
                             zlib.Z_DEFAULT_STRATEGY, zdict)
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 8,
                             zlib.Z_DEFAULT_STRATEGY)
    return c.compress(block) + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class ParallelGzipWriter:
    """A write-only gzip stream compressing on ``workers`` threads."""

    def __init__(self, sink: _Sink, level: int = 6, workers: int | None = None) -> None:
        if not 2 <= level <= 8:
            # Other levels change the header's XFL byte; keep Go's header.
            raise ValueError("level must be between 2 and 8")
        self._sink = sink
        self._level = level
        self._workers = workers or min(4, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(max_workers=self._workers,
                                        thread_name_prefix="pgzip")
        self._pending: deque[Future[bytes]] = deque()
        self._buf = bytearray()
        self._tail = b""
        self._crc = 0
        self._size = 0
        self._closed = False
        sink.write(_HEADER)

    def write(self, data: bytes) -> int:
        """Buffer ``data``; full blocks go to the thread pool."""
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._buf += data
        while len(self._buf) >= BLOCK_SIZE:
            block = bytes(self._buf[:BLOCK_SIZE])
            del self._buf[:BLOCK_SIZE]
            self._submit(block, last=False)
        return len(data)

    def _submit(self, block: bytes, last: bool) -> None:
        self._pending.append(self._pool.submit(_deflate, block, self._tail, self._level, last))
        self._tail = block[-_WINDOW:]
        # Bound memory: at most two blocks in flight per worker.
        while len(self._pending) > 2 * self._workers:
            self._sink.write(self._pending.popleft().result())

    def close(self) -> None:
        """Compress the rest, write the trailer (CRC-32 and size) and stop the threads."""
        if self._closed:
            return
        self._closed = True
        try:
            self._submit(bytes(self._buf), last=True)
            while self._pending:
                self._sink.write(self._pending.popleft().result())
            self._sink.write(struct.pack("<II", self._crc & 0xFFFFFFFF,
                                         self._size & 0xFFFFFFFF))
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
