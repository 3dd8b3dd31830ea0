"""The package layout (docs/architecture.md): one ``ocigitops`` namespace from four folders,
and layers that only import downwards.

Layers: core (``ocigitops.*`` modules) <- verifier <- publisher, puller <- cli. The CLI is
the leaf: nothing imports it. Every import counts, also the ones inside functions (the CLI
and several modules import lazily for start-up time), so the check reads the source with
:mod:`ast` rather than importing it.

The test suite has a layout of its own, checked here too: a tier folder holds test modules
and a conftest (fixtures and hooks only), shared helpers live in ``tests.helpers``, and no
test module imports another test module or a conftest.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from tests.helpers.paths import REPO_ROOT

pytestmark = pytest.mark.unit

REPO = REPO_ROOT
#: Folder of each portion of the namespace (the core is ocigitops/ at the root).
PORTIONS = {"ocigitops": REPO / "ocigitops",
            "ocigitops.publisher": REPO / "publisher" / "ocigitops" / "publisher",
            "ocigitops.verifier": REPO / "verifier" / "ocigitops" / "verifier",
            "ocigitops.puller": REPO / "puller" / "ocigitops" / "puller"}
#: What each layer may import (besides itself, the standard library and third parties).
ALLOWED = {"core": {"core"},
           "verifier": {"core"},
           "publisher": {"core", "verifier"},
           "puller": {"core", "verifier"},
           "cli": {"core", "verifier", "publisher", "puller"}}


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package, root in PORTIONS.items():
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if package == "ocigitops" and parts and parts[0] in ("examples",):
                continue
            if package == "ocigitops" and len(parts) > 1:
                continue  # a subfolder of the core folder is not a module of ours
            out[name] = path
    return out


def _layer(module: str) -> str | None:
    if not module.startswith("ocigitops"):
        return None
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in ("publisher", "verifier", "puller"):
        return parts[1]
    if len(parts) >= 2 and parts[1] == "cli":
        return "cli"
    return "core"


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def test_layers_import_only_downwards() -> None:
    modules = _modules()
    assert "ocigitops.cli" in modules and "ocigitops.puller.manager" in modules
    # The scanner sees imports at any depth (a lazy one inside a function included).
    assert "ocigitops.verifier.verify" in _imports(
        modules["ocigitops.puller.sources.oci"], "ocigitops.puller.sources.oci")
    assert "ocigitops.puller.manager" in _imports(modules["ocigitops.cli"], "ocigitops.cli")
    wrong: list[str] = []
    for module, path in sorted(modules.items()):
        layer = _layer(module)
        assert layer is not None
        for imported in sorted(_imports(path, module)):
            target = _layer(imported)
            if target is None or target == layer:
                continue
            if target == "cli" or target not in ALLOWED[layer]:
                wrong.append(f"{module} ({layer}) imports {imported} ({target})")
    assert not wrong, "layer violations:\n" + "\n".join(wrong)


def test_old_top_level_names_are_gone() -> None:
    """``publisher``, ``verifier`` and ``puller`` exist on PyPI as other projects: the
    folders hold only the ``ocigitops`` portion, never a package of that name."""
    for folder in ("publisher", "verifier", "puller"):
        entries = {p.name for p in (REPO / folder).iterdir() if p.name != "__pycache__"}
        assert entries == {"ocigitops"}, (folder, entries)
    assert not (REPO / "ocigitops" / "__init__.py").exists(), \
        "ocigitops is a PEP 420 namespace package: no __init__.py"


def test_every_package_is_declared() -> None:
    """pyproject's explicit package list and package-dir map match the tree."""
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(cfg["packages"])
    dirs = {k: REPO / v for k, v in cfg["package-dir"].items()}
    found = {"ocigitops", "ocigitops.examples"}
    for package, root in PORTIONS.items():
        if package == "ocigitops":
            continue
        assert dirs[package] == root
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            found.add(".".join([package, *rel]))
    assert declared == found


def test_private_sigstore_imports_stay_in_one_module() -> None:
    """sigstore-python's private names are imported in ocigitops.verifier.sigstore_private
    only (it says why, and the dependency is pinned below the next major version)."""
    offenders = [module for module, path in _modules().items()
                 if module != "ocigitops.verifier.sigstore_private"
                 and any(m.startswith(("sigstore._internal", "sigstore._utils"))
                         for m in _imports(path, module))]
    assert offenders == []


# -- the test suite's own layout (tests/) ---------------------------------------------------

TESTS = REPO / "tests"
TIER_FOLDERS = ("unit", "integration", "e2e")


def _test_modules() -> dict[str, Path]:
    return {".".join(p.relative_to(REPO).with_suffix("").parts): p
            for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts}


def test_tests_import_helpers_only() -> None:
    """Shared code is in ``tests.helpers``: no test module imports another test module or a
    conftest (fixtures come from pytest, never by import), so a tier runs on its own."""
    modules = _test_modules()
    assert "tests.helpers.registries" in modules and "tests.conftest" in modules
    wrong: list[str] = []
    for module, path in sorted(modules.items()):
        for imported in sorted(_imports(path, module)):
            parts = imported.split(".")
            if ("conftest" in parts or parts[0].startswith("test_")
                    or (parts[0] == "tests" and len(parts) > 1 and parts[1] != "helpers")):
                wrong.append(f"{module} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_tests_folders_hold_what_they_are_for() -> None:
    """tests/ holds the three tier folders (test modules and conftests only) and helpers/
    (no tests, no fixtures); pytest imports test modules by path (importlib mode), so two
    tiers may hold files of the same name."""
    stray: list[str] = []
    for path in sorted(TESTS.rglob("*.py")):
        rel = path.relative_to(TESTS)
        if "__pycache__" in rel.parts:
            continue
        if len(rel.parts) == 1:
            ok = rel.name in ("__init__.py", "conftest.py")
        elif rel.parts[0] in TIER_FOLDERS:
            ok = rel.name == "conftest.py" or (rel.name.startswith("test_")
                                               and len(rel.parts) == 2)
        elif rel.parts[0] == "helpers":
            ok = not rel.name.startswith(("test_", "conftest"))
        else:
            ok = False
        if not ok:
            stray.append(str(rel))
    assert not stray, f"misplaced under tests/: {stray}"
    pytest_cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"][
        "ini_options"]
    assert "--import-mode=importlib" in pytest_cfg["addopts"].split()
    assert "." in pytest_cfg["pythonpath"]  # tests.helpers imports from the root


def test_conftests_hold_fixtures_and_hooks_only() -> None:
    """Every function at the top of a conftest.py is a fixture or a ``pytest_*`` hook, and
    there are no classes: helpers belong in tests.helpers, where tests can import them."""
    wrong: list[str] = []
    for path in sorted(TESTS.rglob("conftest.py")):
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.ClassDef):
                wrong.append(f"{path.relative_to(REPO)}: class {node.name}")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                fixture = any("fixture" in ast.unparse(d) for d in node.decorator_list)
                if not fixture and not node.name.startswith("pytest_"):
                    wrong.append(f"{path.relative_to(REPO)}: def {node.name}")
    assert not wrong, "\n".join(wrong)
