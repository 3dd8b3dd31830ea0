"""The local composite-action runner's expressions and command files
(``tests/helpers/actions_runner.py``), on GitHub's documented examples."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.actions_runner import (
    CompositeRunner,
    ExpressionError,
    condition,
    evaluate,
    interpolate,
    read_command_file,
)

CTX: dict[str, Any] = {
    "inputs": {"scan": "trivy", "sign": "none", "repository": "ghcr.io/acme/app", "creds": ""},
    "github": {"actor": "octocat", "ref_name": "main", "event": {"commits": [1, 2]}},
    "env": {"OCIGITOPS_WORK": "/tmp/w", "EMPTY": ""},
    "steps": {"push": {"outputs": {"pushed": "true", "digest-url": "oci://x@sha256:1"}}},
    "runner": {"os": "Linux"},
}


@pytest.mark.parametrize("expr, want", [
    ("inputs.scan == 'trivy'", True),
    ("inputs.scan == 'TRIVY'", True),  # strings compare case-insensitively
    ("inputs.sign != 'none'", False),
    ("!inputs.creds", True),
    ("inputs.creds || 'fallback'", "fallback"),
    ("inputs.scan && 'yes'", "yes"),
    ("steps.push.outputs.pushed == 'true' && env.EMPTY != ''", False),
    ("steps.push.outputs['digest-url']", "oci://x@sha256:1"),
    ("steps.push.outputs.digest-url", "oci://x@sha256:1"),
    ("steps.missing.outputs.x", None),
    ("format('{0}:{1}', github.actor, 'tok')", "octocat:tok"),
    ("format('{{0}} {0}', 'a')", "{0} a"),
    ("startsWith(inputs.repository, 'GHCR.io/')", True),
    ("endsWith(inputs.repository, '/app')", True),
    ("contains(inputs.repository, 'acme')", True),
    ("contains(fromJSON('[\"a\", \"b\"]'), 'b')", True),
    ("fromJSON('{\"a\": 2}').a", 2.0),
    ("join(fromJSON('[\"a\", \"b\"]'), '-')", "a-b"),
    ("runner.os == 'Linux' && (1 < 2) && 3 >= 3", True),
    ("'0' == 0 && '' == 0 && null == 0 && true == 1", True),
    ("'it''s'", "it's"),
    ("github.event.commits[1]", 2),
    (("inputs.creds || (startsWith(inputs.repository, 'ghcr.io/') && "
      "format('{0}:{1}', github.actor, 'T')) || ''"), "octocat:T"),
])
def test_expressions(expr: str, want: Any) -> None:
    assert evaluate(expr, CTX) == want


def test_interpolation_and_conditions() -> None:
    assert interpolate("a ${{ inputs.scan }} b ${{ 1 == 1 }} ${{ env.NONE }}.", CTX) == \
        "a trivy b true ."
    assert condition(None, CTX, "success") and not condition(None, CTX, "failure")
    assert not condition("inputs.scan == 'trivy'", CTX, "failure")  # success() && (...)
    assert condition("always() && env.OCIGITOPS_WORK != ''", CTX, "failure")
    assert condition("${{ failure() }}", CTX, "failure")
    with pytest.raises(ExpressionError):
        evaluate("nosuch.context", CTX)
    with pytest.raises(ExpressionError):
        evaluate("hashFiles('x')", CTX)


def test_command_files(tmp_path: Path) -> None:
    f = tmp_path / "out"
    f.write_text("a=1\nb=x=y\n\nbody<<EOF\nline 1\nline 2\nEOF\nc=\n")
    assert read_command_file(f) == {"a": "1", "b": "x=y", "body": "line 1\nline 2", "c": ""}
    f.write_text("body<<EOF\nnever closed\n")
    with pytest.raises(ValueError, match="no closing"):
        read_command_file(f)


def test_a_composite_action_end_to_end(tmp_path: Path) -> None:
    action = tmp_path / "act"
    action.mkdir()
    (action / "action.yml").write_text("""name: t
description: t
inputs:
  who: {description: w, default: "${{ github.actor }}"}
  fail: {description: f, default: "false"}
outputs:
  greeting: {description: g, value: "${{ steps.one.outputs.greeting }}"}
runs:
  using: composite
  steps:
    - uses: actions/setup-python@v5
      with: {python-version: "3.11"}
    - id: one
      shell: bash
      env: {WHO: "${{ inputs.who }}"}
      run: |
        echo "greeting=hello $WHO" >>"$GITHUB_OUTPUT"
        echo "LATER=from-env" >>"$GITHUB_ENV"
        mkdir -p "$RUNNER_TEMP/bin" && echo "$RUNNER_TEMP/bin" >>"$GITHUB_PATH"
        printf '#!/bin/sh\\necho tool\\n' >"$RUNNER_TEMP/bin/mytool"
        chmod +x "$RUNNER_TEMP/bin/mytool"
    - id: two
      shell: bash
      if: inputs.fail == 'true'
      run: exit 3
    - id: three
      shell: bash
      run: |
        echo "$LATER $(mytool) $GITHUB_ACTION_PATH" >>"$GITHUB_STEP_SUMMARY"
    - id: four
      if: always()
      shell: bash
      run: echo "ran ${{ steps.two.outcome }}"
""")
    env = {"PATH": os.environ["PATH"], "GITHUB_ACTOR": "octocat"}
    runner = CompositeRunner(tmp_path, env, temp=tmp_path / "temp")
    (tmp_path / "temp").mkdir(exist_ok=True)
    run = runner.run(action)
    assert run.ok, run.log
    assert run.outputs == {"greeting": "hello octocat"}
    assert "satisfied by the local environment" in run.log
    assert f"from-env tool {action.resolve()}" in run.summary
    assert [s.outcome for s in run.steps] == ["success", "success", "skipped", "success",
                                              "success"]
    failed = CompositeRunner(tmp_path, env, temp=tmp_path / "temp2").run(
        action, {"who": "you", "fail": "true"})
    assert not failed.ok
    assert [s.outcome for s in failed.steps[2:]] == ["failure", "skipped", "success"]
    assert failed.step("four").stdout == "ran failure\n"
    with pytest.raises(ValueError, match="unknown inputs"):
        runner.run(action, {"nope": "1"})
