"""The shape of each composite action in ``github-actions/`` (actionlint lints workflows,
not ``action.yml``: this is the schema check), and their READMEs."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.helpers.paths import REPO_ROOT

ACTIONS = REPO_ROOT / "github-actions"
NAMES = sorted(p.parent.name for p in ACTIONS.glob("*/action.yml"))


def _meta(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ACTIONS / name / "action.yml").read_text())
    return doc


def test_the_three_actions_exist() -> None:
    assert NAMES == ["push-artifact", "setup", "verify"]


@pytest.mark.parametrize("name", NAMES)
def test_action_schema(name: str) -> None:
    meta = _meta(name)
    assert set(meta) <= {"name", "description", "author", "branding", "inputs", "outputs",
                         "runs"}
    assert meta["name"] and meta["description"]
    assert meta["runs"]["using"] == "composite"
    for key, spec in (meta.get("inputs") or {}).items():
        assert re.fullmatch(r"[a-z][a-z0-9-]*", key), key
        assert set(spec) <= {"description", "required", "default", "deprecationMessage"}, key
        assert spec.get("description"), key
        assert isinstance(spec.get("default", ""), str), f"{key}: defaults are strings"
    for key, spec in (meta.get("outputs") or {}).items():
        assert set(spec) == {"description", "value"}, key
        assert re.fullmatch(r"\$\{\{ steps\.[a-z_-]+\.outputs\.[a-z-]+ \}\}", spec["value"])
    ids = set()
    for step in meta["runs"]["steps"]:
        assert ("run" in step) != ("uses" in step), step
        if "id" in step:
            assert step["id"] not in ids
            ids.add(step["id"])
        if "run" in step:
            assert step.get("shell") == "bash", "composite run steps must name their shell"
            # Script injection: expressions go through env, never into the script text.
            assert "${{" not in step["run"], step["run"]
        else:
            assert re.fullmatch(r"[\w-]+/[\w-]+@v\d+", step["uses"]), step["uses"]
    for spec in (meta.get("outputs") or {}).values():
        step_id = spec["value"].split(".")[1]
        assert step_id in ids


@pytest.mark.parametrize("name", NAMES)
def test_readme_names_every_input_and_output(name: str) -> None:
    readme = (ACTIONS / name / "README.md").read_text()
    meta = _meta(name)
    for key in [*(meta.get("inputs") or {}), *(meta.get("outputs") or {})]:
        assert f"`{key}`" in readme, f"{name}/README.md does not document {key}"
    assert f"github-actions/{name}@" in readme  # a copy-paste example


def test_secrets_only_reach_steps_through_env() -> None:
    meta = _meta("push-artifact")
    for step in meta["runs"]["steps"]:
        env = step.get("env") or {}
        text = yaml.safe_dump(step.get("run", ""))
        for secret in ("cosign-key", "cosign-password", "notation-key", "creds",
                       "github-token"):
            assert f"inputs.{secret}" not in text
        for value in env.values():
            if "inputs.creds" in value or "inputs.github-token" in value:
                assert step["id"] in ("push", "tags")


def test_docs_link_each_action() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    doc = (REPO_ROOT / "docs" / "github-actions.md").read_text()
    for name in NAMES:
        assert f"github-actions/{name}" in readme and f"github-actions/{name}" in doc
    for example in ("release.yml", "promote.yml"):
        assert (REPO_ROOT / "docs" / "examples" / "github" / example).is_file()
        assert f"docs/examples/github/{example}" in readme


def test_the_action_scripts_are_python_3_11() -> None:
    for script in ACTIONS.glob("*/*.py"):
        compile(script.read_text(), str(script), "exec")
