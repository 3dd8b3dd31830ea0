"""ocigitops.extract.extract_stream: documented to raise UnsafeArchiveError (SizeLimitError
is one) only, and never to hang.

Each input is extracted twice into a fresh directory that is deleted afterwards: gzipped
(so the mutations reach the tar reader) and as it is (so they reach the gunzip layer).
Small limits keep every run fast. After a successful extraction the tree must hold only
regular files and directories inside the target, within the limits.
"""

from __future__ import annotations

import atexit
import gzip
import io
import os
import shutil
import stat
import tempfile
from pathlib import Path

from ocigitops.errors import UnsafeArchiveError
from ocigitops.extract import Limits, extract_stream

LIMITS = Limits(max_total=1 << 20, max_file=256 << 10, max_entries=64)

#: Set by the runner to a directory it deletes afterwards (libFuzzer ends the worker without
#: running atexit handlers); elsewhere (pytest) a temporary directory deleted at exit.
SCRATCH_ENV = "OCIGITOPS_FUZZ_SCRATCH"
#: In memory where there is a tmpfs: creating and deleting the tree on a disk file system
#: costs more than the extraction itself.
SHM = "/dev/shm"


def _base() -> Path:
    scratch = os.environ.get(SCRATCH_ENV)
    if scratch:
        base = Path(scratch) / f"extract-{os.getpid()}"  # fork mode: one per process
        base.mkdir(parents=True, exist_ok=True)
        return base
    base = Path(tempfile.mkdtemp(prefix="ocigitops-fuzz-extract-",
                                 dir=SHM if os.access(SHM, os.W_OK) else None))
    atexit.register(shutil.rmtree, base, True)
    return base


_BASE = _base()


def _check_tree(dest: Path, written: int) -> None:
    root = os.path.realpath(dest)
    files = total = 0
    for top, dirs, names in os.walk(dest):
        for name in dirs + names:
            path = os.path.join(top, name)
            st = os.lstat(path)
            assert stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode), \
                f"extraction made {path} of mode {st.st_mode:o}"
            assert os.path.realpath(path).startswith(root + os.sep), f"{path} is outside"
            if stat.S_ISREG(st.st_mode):
                files += 1
                total += st.st_size
                assert st.st_size <= LIMITS.max_file, f"{path} is over the file limit"
    assert files <= written, f"{files} files on disk, extract_stream reported {written}"
    assert total <= LIMITS.max_total, f"{total} bytes extracted, over the limit"


def _extract(stream: bytes) -> None:
    dest = _BASE / "tree"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir()
    try:
        try:
            written = extract_stream(io.BytesIO(stream), dest, LIMITS)
        except UnsafeArchiveError:
            return
        _check_tree(dest, written)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def test_one_input(data: bytes) -> None:
    _extract(gzip.compress(data, compresslevel=1, mtime=0))
    _extract(data)
