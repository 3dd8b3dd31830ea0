"""Ignore rules for packaging, as Flux applies them (gitignore syntax via pathspec).

``flux push artifact`` ignores VCS files and some binary extensions by default; a user
list replaces that default and an "add" list extends it. In-cluster re-archiving also
reads ``.sourceignore`` files (see :func:`read_sourceignore`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

EXCLUDE_VCS = (".git/", ".gitignore", ".gitmodules", ".gitattributes")
EXCLUDE_EXT = ("*.jpg", "*.jpeg", "*.gif", "*.png", "*.wmv", "*.flv", "*.tar.gz", "*.zip")
DEFAULT_IGNORE: tuple[str, ...] = EXCLUDE_VCS + EXCLUDE_EXT


def effective_patterns(ignore_paths: Sequence[str] | None,
                       add_ignore_paths: Sequence[str] = ()) -> list[str]:
    """The pattern list: ``ignore_paths`` (or the default when None) plus additions.

    Entries may hold several comma-separated patterns, as Flux's flag does.
    """
    base = DEFAULT_IGNORE if ignore_paths is None else tuple(ignore_paths)
    out: list[str] = []
    for item in (*base, *add_ignore_paths):
        out.extend(p.strip() for p in item.split(",") if p.strip())
    return out


def matcher(patterns: Sequence[str]) -> Callable[[str, bool], bool] | None:
    """A predicate ``(relative_path, is_dir) -> ignored`` or None when nothing is ignored."""
    if not patterns:
        return None
    # Imported here: pathspec costs ~25 ms at import, and commands that never package
    # anything (``pull artifact``, every controller start) import this module.
    import pathspec

    spec = pathspec.GitIgnoreSpec.from_lines(patterns)

    def excluded(rel: str, is_dir: bool) -> bool:
        return bool(spec.match_file(rel + "/" if is_dir else rel))

    return excluded


def read_sourceignore(root: Path) -> list[str]:
    """Patterns from ``root/.sourceignore`` (empty when absent)."""
    f = root / ".sourceignore"
    if not f.is_file():
        return []
    return [ln for ln in f.read_text(errors="replace").splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]
