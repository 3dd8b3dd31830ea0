"""Defaults for ``--source`` and ``--revision`` from the CI environment or a Git checkout.

Flux's recommended revision form is ``<branch|tag>@sha1:<commit>``. In GitHub Actions the
environment says it all; elsewhere we ask ``git`` about the checkout holding the path.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Origin:
    """Where content came from: ``source`` URL and ``revision`` (either may be empty)."""

    source: str = ""
    revision: str = ""


def from_github_env(env: Mapping[str, str]) -> Origin:
    """Origin from GitHub Actions variables (empty when not in Actions)."""
    if env.get("GITHUB_ACTIONS") != "true" or not env.get("GITHUB_REPOSITORY"):
        return Origin()
    server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    source = f"{server}/{env['GITHUB_REPOSITORY']}"
    sha = env.get("GITHUB_SHA", "")
    ref_name = env.get("GITHUB_HEAD_REF") or env.get("GITHUB_REF_NAME", "")
    revision = f"{ref_name}@sha1:{sha}" if ref_name and sha else (f"sha1:{sha}" if sha else "")
    return Origin(source=source, revision=revision)


def _git(cwd: Path, *args: str) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _clean_remote(url: str) -> str:
    # Never publish credentials embedded in a remote URL.
    if "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = url.split("://", 1)
        url = f"{scheme}://{rest.split('@', 1)[1]}"
    return url


def from_git(path: Path) -> Origin:
    """Origin from the Git checkout containing ``path`` (empty outside one)."""
    cwd = path if path.is_dir() else path.parent
    commit = _git(cwd, "rev-parse", "HEAD")
    if not commit:
        return Origin()
    remote = _git(cwd, "config", "--get", "remote.origin.url")
    if not remote:
        remotes = _git(cwd, "remote").splitlines()
        remote = _git(cwd, "config", "--get", f"remote.{remotes[0]}.url") if remotes else ""
    branch = _git(cwd, "symbolic-ref", "--short", "-q", "HEAD")
    if not branch:
        branch = _git(cwd, "describe", "--tags", "--exact-match", "HEAD")
    revision = f"{branch}@sha1:{commit}" if branch else f"sha1:{commit}"
    return Origin(source=_clean_remote(remote), revision=revision)


def detect(path: Path, env: Mapping[str, str] | None = None) -> Origin:
    """GitHub Actions variables first, then the Git checkout, field by field."""
    gh = from_github_env(os.environ if env is None else env)
    if gh.source and gh.revision:
        return gh
    git = from_git(path)
    return Origin(source=gh.source or git.source, revision=gh.revision or git.revision)
