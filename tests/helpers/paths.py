"""Folders of the repository (and of the project beside it) that tests read."""

from __future__ import annotations

from pathlib import Path

#: The repository's root (the folder holding ``pyproject.toml``).
REPO_ROOT = Path(__file__).resolve().parents[2]
#: The shipped examples (package data of ``ocigitops``).
EXAMPLES = REPO_ROOT / "ocigitops" / "examples"
#: The controller's install manifests, and the CRDs among them.
DEPLOY = REPO_ROOT / "deploy"
CRDS = DEPLOY / "crds"
#: Real signatures and trust material made by upstream tools: the project's ``shared/``
#: folder sits beside the repository (as CI lays it out), never inside it.
TESTVECTORS = REPO_ROOT.parent / "shared" / "testvectors"
