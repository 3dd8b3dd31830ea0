"""The artifact of a commit: its tree as a tar+gzip in Flux's artifact format.

Built straight from the fetched objects (nothing is checked out to disk): a ``.`` root
entry, then directories and files depth first in byte order, directories mode 0750, files
0600 (0700 when executable), uid/gid 0, no user names, time zero, as source-controller's
``Storage.Archive`` sanitizes them. Symbolic links are left out, as Flux's archive leaves
them out (so nothing in the artifact can point outside it), and so are submodules
(gitlinks).

Ignore rules are source-controller's: with neither ``.sourceignore`` files nor
``spec.ignore``, the default exclusions (VCS files, images and archives, CI and CLI
configs); otherwise the VCS files plus those rules, ``.sourceignore`` files scoped to their
folder, ``spec.ignore`` last; the last matching rule wins. ``sparse`` keeps only the
listed folders.

Bounds: files and folders (``max_entries``), each file's size, the total, and every name
(no ``..``, ``.``, empty, ``/`` or NUL in a tree entry, no ``.git`` entry: Git itself
refuses such trees, and only a hostile server sends one).
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from dulwich.object_store import BaseObjectStore
from dulwich.objects import Blob, ObjectID, Tree
from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

from ocigitops.extract import DEFAULT_LIMITS, Limits
from ocigitops.puller.git.errors import GitError, GitLimitError, UnsafePathError
from ocigitops.tarball import BLOCK, header_blocks

VCS_PATTERNS = (".git/", ".gitignore", ".gitmodules", ".gitattributes")
DEFAULT_PATTERNS = (
    "*.jpg", "*.jpeg", "*.gif", "*.png", "*.wmv", "*.flv", "*.tar.gz", "*.zip",
    ".github/", ".circleci/", ".travis.yml", ".gitlab-ci.yml", "appveyor.yml", ".drone.yml",
    "cloudbuild.yaml", "codeship-services.yml", "codeship-steps.yml",
    ".goreleaser.yml", ".sops.yaml", ".flux.yaml",
)
SOURCEIGNORE = ".sourceignore"
_MODE_DIR, _MODE_LINK, _MODE_GITLINK = 0o040000, 0o120000, 0o160000
_MAX_IGNORE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class _Rule:
    domain: tuple[str, ...]
    pattern: GitIgnoreSpecPattern


class IgnoreRules:
    """Ordered gitignore rules, each scoped to a folder (its domain); last match wins."""

    def __init__(self) -> None:
        self.rules: list[_Rule] = []

    def add(self, text: str, domain: tuple[str, ...] = ()) -> None:
        """Append the rules of a gitignore-format ``text`` scoped to ``domain``."""
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                pat = GitIgnoreSpecPattern(line)
            except Exception:  # pathspec raises plain errors for broken patterns
                continue
            if pat.include is not None:
                self.rules.append(_Rule(domain, pat))

    def ignored(self, parts: tuple[str, ...], is_dir: bool) -> bool:
        """Whether the path ``parts`` is excluded."""
        for rule in reversed(self.rules):
            d = rule.domain
            if parts[:len(d)] != d or len(parts) == len(d):
                continue
            rel = "/".join(parts[len(d):]) + ("/" if is_dir else "")
            if rule.pattern.match_file(rel) is not None:
                return bool(rule.pattern.include)
        return False


@dataclass(frozen=True)
class ArchiveResult:
    """The artifact written: its digest and size, and what it holds."""

    digest: str
    size: int
    files: int
    total: int


def _check_name(name: bytes, where: str) -> str:
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafePathError(f"tree entry {name!r} in {where or '/'} is not UTF-8") from None
    if text in ("", ".", "..") or "/" in text or "\x00" in text or "\\" in text:
        raise UnsafePathError(f"tree entry {text!r} in {where or '/'} is not a safe name")
    if text.lower() == ".git":
        raise UnsafePathError(f"tree holds a '.git' entry in {where or '/'}")
    return text


class _Writer:
    """tar -> gzip -> file, hashed and counted on the way."""

    def __init__(self, out: BinaryIO) -> None:
        self.sha = hashlib.sha256()
        self.size = 0
        self._out = out
        self.gz = gzip.GzipFile(fileobj=self, mode="wb", mtime=0, compresslevel=6)

    def write(self, data: bytes) -> int:  # called by GzipFile
        self.sha.update(data)
        self.size += len(data)
        self._out.write(data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()


def _load_ignores(store: BaseObjectStore, tree: Tree, parts: tuple[str, ...],
                  rules: IgnoreRules, limits: Limits, seen: list[int]) -> None:
    """Read every ``.sourceignore`` (root first, then depth first), scoped to its folder."""
    for entry in tree.items():
        if entry.path == SOURCEIGNORE.encode() and not entry.mode & 0o040000 \
                and (entry.mode & 0o170000) == 0o100000:
            blob = store[ObjectID(entry.sha)]
            if isinstance(blob, Blob) and len(blob.data) <= _MAX_IGNORE_BYTES:
                rules.add(blob.data.decode("utf-8", errors="replace"), parts)
    for entry in tree.items():
        if entry.mode == _MODE_DIR:
            seen[0] += 1
            limits.check_entries(seen[0], "the commit's tree")
            name = _check_name(entry.path, "/".join(parts))
            sub = store[ObjectID(entry.sha)]
            if isinstance(sub, Tree):
                _load_ignores(store, sub, (*parts, name), rules, limits, seen)


def build_rules(store: BaseObjectStore, root: Tree, spec_ignore: str | None,
                limits: Limits = DEFAULT_LIMITS) -> IgnoreRules:
    """source-controller's rule set for a commit's tree (see the module docstring)."""
    loaded = IgnoreRules()
    _load_ignores(store, root, (), loaded, limits, [0])
    rules = IgnoreRules()
    if not loaded.rules and spec_ignore is None:
        rules.add("\n".join(VCS_PATTERNS + DEFAULT_PATTERNS))
        return rules
    rules.add("\n".join(VCS_PATTERNS))
    rules.rules += loaded.rules
    if spec_ignore is not None:
        rules.add(spec_ignore)
    return rules


def _sparse_keep(parts: tuple[str, ...], sparse: Sequence[tuple[str, ...]]) -> bool:
    """Whether a path is inside (or leads to) one of the sparse-checkout folders."""
    if not sparse:
        return True
    return any(parts[:len(s)] == s or s[:len(parts)] == parts for s in sparse)


def _walk(store: BaseObjectStore, tree: Tree, parts: tuple[str, ...], rules: IgnoreRules,
          sparse: Sequence[tuple[str, ...]]) -> Iterator[tuple[tuple[str, ...], int, bytes]]:
    """(path parts, mode, sha) of every directory and regular file, in Flux's order."""
    entries = sorted(tree.items(), key=lambda e: e.path)
    for e in entries:
        name = _check_name(e.path, "/".join(parts))
        path = (*parts, name)
        if e.mode in (_MODE_LINK, _MODE_GITLINK):
            continue  # left out, as Flux's archive leaves links out
        if not _sparse_keep(path, sparse):
            continue
        if e.mode == _MODE_DIR:
            sub = store[ObjectID(e.sha)]
            if not isinstance(sub, Tree):
                raise GitError(f"tree entry {'/'.join(path)} is not a tree")
            if not rules.ignored(path, True):
                yield path, e.mode, e.sha
            yield from _walk(store, sub, path, rules, sparse)
        elif (e.mode & 0o170000) == 0o100000:
            if not rules.ignored(path, False):
                yield path, e.mode, e.sha
        else:
            raise GitError(f"tree entry {'/'.join(path)} has an unknown mode {e.mode:o}")


def write_artifact(store: BaseObjectStore, commit_tree: bytes, out: BinaryIO, *,
                   spec_ignore: str | None = None, sparse: Sequence[str] = (),
                   limits: Limits = DEFAULT_LIMITS) -> ArchiveResult:
    """Write the artifact of the tree ``commit_tree`` to ``out``; its sha256 digest."""
    root = store[ObjectID(commit_tree)]
    if not isinstance(root, Tree):
        raise GitError("the commit's tree is missing from the fetched objects")
    rules = build_rules(store, root, spec_ignore, limits)
    folders = [tuple(p for p in s.strip("/").removeprefix("./").split("/") if p)
               for s in sparse]
    w = _Writer(out)
    gz = w.gz
    gz.write(header_blocks(".", 0o750, 0, True))
    entries = files = total = 0
    for parts, mode, sha in _walk(store, root, (), rules, [f for f in folders if f]):
        entries += 1
        limits.check_entries(entries, "the commit's tree")
        name = "/".join(parts)
        if mode == _MODE_DIR:
            gz.write(header_blocks(name, 0o750, 0, True))
            continue
        blob = store[ObjectID(sha)]
        if not isinstance(blob, Blob):
            raise GitError(f"{name} is not a blob")
        data = blob.as_raw_string()
        limits.check_file(name, len(data), "file")
        total += len(data)
        if total > limits.max_total:
            raise GitLimitError(f"the commit's files hold more than {limits.max_total}"
                                " bytes")
        files += 1
        gz.write(header_blocks(name, 0o700 if mode & 0o111 else 0o600, len(data), False))
        gz.write(data)
        if len(data) % BLOCK:
            gz.write(b"\0" * (-len(data) % BLOCK))
    gz.write(b"\0" * (2 * BLOCK))
    gz.close()
    w.flush()
    return ArchiveResult(digest="sha256:" + w.sha.hexdigest(), size=w.size, files=files,
                         total=total)


__all__ = ["DEFAULT_PATTERNS", "VCS_PATTERNS", "ArchiveResult", "IgnoreRules", "build_rules",
           "write_artifact"]
