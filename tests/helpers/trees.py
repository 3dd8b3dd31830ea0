"""Write file trees and read them back for comparison."""

from __future__ import annotations

from pathlib import Path


def write(path: Path, text: str) -> Path:
    """Write ``text`` to ``path``, creating its parent folders; ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def tree_files(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every regular file under ``root``."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def tree_modes(root: Path) -> dict[str, int]:
    """Relative path -> permission bits of every regular file under ``root``."""
    return {p.relative_to(root).as_posix(): p.stat().st_mode & 0o777
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Relative path -> content (None for a folder) of everything under ``root``; ``{}``
    when it does not exist."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}
