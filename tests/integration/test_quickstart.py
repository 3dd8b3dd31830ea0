"""The README's first command: ``ocigitops quickstart`` on a fresh state directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers.cli import ocigitops
from tests.helpers.paths import REPO_ROOT
from tests.helpers.registries import free_port
from tests.helpers.tools import tool

pytestmark = pytest.mark.integration


def test_quickstart_pushes_pulls_and_stops(tmp_path: Path) -> None:
    kustomize_dir = str(Path(tool("kustomize")).parent)
    env = {"PATH": f"{kustomize_dir}:{os.environ['PATH']}"}
    state = tmp_path / "state"
    port = free_port()
    try:
        res = ocigitops("quickstart", "--address", f"127.0.0.1:{port}", "--state-dir",
                        str(state), env=env)
        out = res.stdout
        assert f"started the embedded registry at 127.0.0.1:{port}" in out
        assert "rendered" in out and "with kustomize" in out
        assert out.count("identical") == 2
        assert "Next, try:" in out
        # what it prints next works
        rows = ocigitops("list", "artifacts",
                         f"oci://127.0.0.1:{port}/quickstart/app-staging",
                         "--insecure-registry").stdout
        assert "latest" in rows
        # a second run reuses the running registry
        again = ocigitops("quickstart", "--address", f"127.0.0.1:{port}", "--state-dir",
                          str(state), env=env).stdout
        assert "registry already running" in again
    finally:
        stopped = ocigitops("registry", "stop", "--state-dir", str(state)).stdout
    assert "registry stopped" in stopped


def test_quickstart_from_a_built_wheel_in_an_empty_directory(tmp_path: Path) -> None:
    """``pip wheel . && pip install ocigitops-*.whl``, then ``ocigitops quickstart`` in an
    empty directory: the examples are package data, the wheel installs one top-level name
    (``ocigitops``), and ``import publisher`` fails.

    The venv sees the test machine's site-packages for the third-party dependencies (no
    download); the wheel's own files come first on its path, and the test checks that the
    modules it runs are the wheel's.
    """
    repo = REPO_ROOT
    # Build from a copy of the tracked files: an in-tree build would leave build/ behind.
    src = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True,
                             check=True, timeout=60).stdout.decode().split("\0")
    for rel in filter(None, tracked):
        if (repo / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / rel, src / rel)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist),
                    str(src)], check=True, timeout=300)
    (wheel,) = dist.glob("ocigitops-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        top = next(n for n in names if n.endswith("top_level.txt"))
        assert zf.read(top).decode().split() == ["ocigitops"]
    assert {n.split("/")[0] for n in names if not n.startswith("ocigitops-")} == {"ocigitops"}
    assert "ocigitops/examples/app/base/kustomization.yaml" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                   check=True, timeout=300)
    empty = tmp_path / "empty"
    empty.mkdir()
    probe = subprocess.run([str(py), "-c", "import ocigitops.publisher.quickstart as q;"
                            " print(q.__file__); print(q.shipped_examples())"],
                           cwd=empty, capture_output=True, text=True, check=True, timeout=60)
    assert all(line.startswith(str(venv)) for line in probe.stdout.split()), probe.stdout
    fails = subprocess.run([str(py), "-c", "import publisher"], cwd=empty,
                           capture_output=True, text=True, timeout=60)
    assert fails.returncode != 0 and "No module named 'publisher'" in fails.stderr
    port = free_port()
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    try:
        res = subprocess.run([str(venv / "bin" / "ocigitops"), "quickstart", "--address",
                              f"127.0.0.1:{port}", "--state-dir", str(tmp_path / "state")],
                             cwd=empty, capture_output=True, text=True, timeout=180, env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert res.stdout.count("identical") == 2, res.stdout + res.stderr
    finally:
        subprocess.run([str(venv / "bin" / "ocigitops"), "registry", "stop", "--state-dir",
                        str(tmp_path / "state")], cwd=empty, capture_output=True, timeout=60,
                       env=env)
    assert list(empty.iterdir()) == []
