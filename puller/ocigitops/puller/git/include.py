"""``spec.include``: other GitRepositories' artifacts grafted into a commit's tree.

source-controller checks the commit out, then moves each included artifact's ``fromPath``
to ``toPath`` in the work tree (a rename: it fails when ``toPath`` already holds something)
and archives the result. We never check out: the included files (an artifact already
unpacked from the cache, its digest verified while reading) become blobs and trees in the
fetch's scratch object store, and a new root tree is built with them at ``toPath``. The
archive is then written from that tree as from any commit, so ``.sourceignore`` files of
the included content, ``spec.ignore`` and every bound apply to the whole, as Flux's archive
of the work tree does.

Bounds: entries and sizes are counted against the same :class:`~ocigitops.extract.Limits`
the archive uses; only regular files and folders are read (artifacts hold nothing else);
paths have no ``..``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dulwich.object_store import BaseObjectStore
from dulwich.objects import Blob, ObjectID, Tree

from ocigitops.extract import DEFAULT_LIMITS, Limits
from ocigitops.puller.git.errors import GitError

_MODE_DIR, _MODE_FILE, _MODE_EXEC = 0o040000, 0o100644, 0o100755


class IncludeCopyError(GitError):
    """An include cannot be placed (source-controller's reason ``CopyFailure``)."""


@dataclass(frozen=True)
class IncludeDir:
    """One include, its artifact unpacked at ``root``."""

    #: The included GitRepository's name (for messages).
    name: str
    root: Path
    from_path: str
    to_path: str


def path_parts(path: str, what: str) -> tuple[str, ...]:
    """``path`` as clean parts (``./a//b/`` -> ``a``, ``b``); ``..`` is refused."""
    parts = tuple(p for p in path.replace("\\", "/").split("/") if p not in ("", "."))
    if ".." in parts or "\0" in path:
        raise IncludeCopyError(f"{what} {path!r} must stay inside the artifact (no '..')")
    return parts


class _Counter:
    def __init__(self, limits: Limits) -> None:
        self.limits, self.entries, self.total = limits, 0, 0

    def entry(self) -> None:
        self.entries += 1
        self.limits.check_entries(self.entries, "the included artifacts")

    def file(self, name: str, size: int) -> None:
        self.limits.check_file(name, size, "file")
        self.total += size
        if self.total > self.limits.max_total:
            raise IncludeCopyError(f"the included artifacts hold more than"
                                   f" {self.limits.max_total} bytes")


def _blob(store: BaseObjectStore, path: Path, st: os.stat_result, rel: str,
          count: _Counter) -> tuple[int, ObjectID]:
    count.entry()
    count.file(rel, st.st_size)
    with open(path, "rb") as f:
        data = f.read(st.st_size + 1)
    if len(data) != st.st_size:
        raise IncludeCopyError(f"included file {rel} changed while it was read")
    blob = Blob.from_string(data)
    store.add_object(blob)
    return (_MODE_EXEC if st.st_mode & 0o111 else _MODE_FILE), blob.id


def _tree(store: BaseObjectStore, path: Path, rel: str, count: _Counter) -> ObjectID:
    count.entry()
    tree = Tree()
    with os.scandir(path) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        sub = f"{rel}/{e.name}" if rel else e.name
        st = e.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            tree.add(e.name.encode(), _MODE_DIR, _tree(store, Path(e.path), sub, count))
        elif stat.S_ISREG(st.st_mode):
            mode, sha = _blob(store, Path(e.path), st, sub, count)
            tree.add(e.name.encode(), mode, sha)
        # Anything else (an artifact holds none) is left out, as Flux's archive does.
    store.add_object(tree)
    return ObjectID(tree.id)


def _insert(store: BaseObjectStore, tree_id: ObjectID, parts: tuple[str, ...], mode: int,
            sha: ObjectID, inc: IncludeDir) -> ObjectID:
    """A copy of tree ``tree_id`` with ``(mode, sha)`` at ``parts`` (folders created)."""
    old = store[ObjectID(tree_id)]
    if not isinstance(old, Tree):
        raise GitError("a tree of the commit is missing from the fetched objects")
    tree = Tree()
    for item in old.items():
        tree.add(item.path, item.mode, item.sha)
    name = parts[0].encode()
    where = "/".join(parts)
    existing = old[name] if name in old else None  # noqa: SIM401 (Tree has no get)
    if len(parts) == 1:
        if existing is not None:
            raise IncludeCopyError(f"cannot copy include '{inc.name}' to '{inc.to_path}':"
                                   " that path already exists")
        tree.add(name, mode, sha)
    else:
        if existing is None:
            empty = Tree()
            store.add_object(empty)
            child = ObjectID(empty.id)
        elif existing[0] != _MODE_DIR:
            raise IncludeCopyError(f"cannot copy include '{inc.name}' to '{inc.to_path}':"
                                   f" '{parts[0]}' is a file, not a folder ({where})")
        else:
            child = existing[1]
        tree.add(name, _MODE_DIR, _insert(store, child, parts[1:], mode, sha, inc))
    store.add_object(tree)
    return ObjectID(tree.id)


def graft(store: BaseObjectStore, root_tree: ObjectID, includes: Sequence[IncludeDir],
          limits: Limits = DEFAULT_LIMITS) -> ObjectID:
    """The id of a new root tree: ``root_tree`` with every include's ``from_path`` at its
    ``to_path``, in order (a later include cannot land on an earlier one, as a rename in
    source-controller cannot)."""
    count = _Counter(limits)
    for inc in includes:
        src = path_parts(inc.from_path, "include fromPath")
        dst = path_parts(inc.to_path, "include toPath")
        if not dst:
            raise IncludeCopyError(f"include '{inc.name}': toPath {inc.to_path!r} is the"
                                   " artifact's root")
        path = inc.root.joinpath(*src)
        try:
            st = path.lstat()
        except OSError:
            raise IncludeCopyError(f"include '{inc.name}': fromPath {inc.from_path!r} is not"
                                   " in its artifact") from None
        if stat.S_ISDIR(st.st_mode):
            mode, sha = _MODE_DIR, _tree(store, path, "/".join(dst), count)
        elif stat.S_ISREG(st.st_mode):
            mode, sha = _blob(store, path, st, "/".join(dst), count)
        else:
            raise IncludeCopyError(f"include '{inc.name}': fromPath {inc.from_path!r} is"
                                   " neither a file nor a folder")
        root_tree = _insert(store, root_tree, dst, mode, sha, inc)
    return root_tree


__all__ = ["IncludeCopyError", "IncludeDir", "graft", "path_parts"]
