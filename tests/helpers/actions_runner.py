"""A local runner for composite GitHub Actions, reproducing the contract the tests need.

What GitHub's runner does for ``runs: using: composite`` and what this does the same way:

- expressions ``${{ ... }}`` in ``run``, ``env``, ``with`` and ``if`` (``if`` without the
  braces too), over the contexts ``inputs`` (defaults from ``action.yml``, ``${{ }}`` in the
  defaults evaluated), ``github``, ``env``, ``steps.<id>.outputs/outcome/conclusion``, and
  ``runner``; literals, ``.`` and ``[...]`` property access, ``!``, ``==``, ``!=``, ``<``,
  ``<=``, ``>``, ``>=``, ``&&``, ``||`` (returning operands, as GitHub's do), parentheses, and
  the functions ``format``, ``contains``, ``startsWith``, ``endsWith``, ``join``, ``toJSON``,
  ``fromJSON``, ``success``, ``failure``, ``always`` and ``cancelled``; equality is GitHub's
  loose one (strings compared case-insensitively, numbers coerced);
- a step's ``if`` defaults to ``success()``; a failing step fails the action and the next
  steps are skipped unless their ``if`` calls ``always()`` or ``failure()``;
- ``run`` steps run as ``bash --noprofile --norc -eo pipefail FILE`` (GitHub's ``shell:
  bash``) in the workspace, with the ``GITHUB_*``/``RUNNER_*`` variables, ``GITHUB_ACTION_PATH``
  and the files ``GITHUB_OUTPUT``, ``GITHUB_ENV``, ``GITHUB_PATH`` and ``GITHUB_STEP_SUMMARY``,
  read back after each step (``name=value`` and ``name<<DELIMITER`` heredocs);
- ``uses:`` of a marketplace action (``actions/setup-python@v5``) is satisfied by this
  machine (its Python is already set up): logged as such, never fetched or run.

Not reproduced: masking of secrets in the log (the tests check no secret is printed instead),
``post`` steps, ``working-directory`` other than the workspace, and ``uses:`` of local actions.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# --- expressions ---------------------------------------------------------------------------

_TOKEN = re.compile(r"""\s*(?:
    (?P<str>'(?:[^']|'')*')
  | (?P<num>-?(?:0x[0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?))
  | (?P<op>==|!=|<=|>=|&&|\|\||[!<>()\[\].,*])
  | (?P<name>[A-Za-z_][A-Za-z0-9_-]*)
)""", re.VERBOSE)


class ExpressionError(ValueError):
    """An expression this runner (or GitHub) cannot evaluate."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ExpressionError(f"cannot parse {text[pos:]!r} in {text!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def _num(v: Any) -> float:
    if v is None or v is False:
        return 0.0
    if v is True:
        return 1.0
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return 0.0
        try:
            return float(int(s, 16)) if s.lower().startswith("0x") else float(s)
        except ValueError:
            return float("nan")
    return float("nan")


def loose_equal(a: Any, b: Any) -> bool:
    """GitHub's ``==``: same type compares directly (strings case-insensitively); otherwise
    both are coerced to numbers (objects and arrays are equal only to themselves)."""
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    if type(a) is type(b) and not isinstance(a, dict | list):
        return bool(a == b)
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return a is b
    return _num(a) == _num(b)


def truthy(v: Any) -> bool:
    """GitHub's truthiness: false, 0, -0, NaN, '' and null are falsy."""
    if v is None or v is False or v == "":
        return False
    if isinstance(v, int | float) and not isinstance(v, bool):
        return v == v and v != 0
    return True


def to_string(v: Any) -> str:
    """How a value is written into a string (``${{ }}`` in text, ``format``)."""
    if v is None:
        return ""
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, dict | list):
        return json.dumps(v, indent=2)
    return str(v)


def _order(op: str, a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        x, y = a.lower(), b.lower()
        return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]
    m, n = _num(a), _num(b)
    return {"<": m < n, "<=": m <= n, ">": m > n, ">=": m >= n}[op]


def _format(template: str, *args: Any) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(0) in ("{{", "}}"):
            return m.group(0)[0]
        i = int(m.group(1))
        if i >= len(args):
            raise ExpressionError(f"format: no argument {{{i}}} in {template!r}")
        return to_string(args[i])
    return re.sub(r"\{\{|\}\}|\{(\d+)\}", sub, template)


def _contains(haystack: Any, needle: Any) -> bool:
    if isinstance(haystack, list):
        return any(loose_equal(x, needle) for x in haystack)
    return to_string(needle).lower() in to_string(haystack).lower()


class _Parser:
    def __init__(self, text: str, ctx: dict[str, Any], status: str) -> None:
        self.text, self.toks, self.i, self.ctx, self.status = text, _tokens(text), 0, ctx, status

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise ExpressionError(f"expected {value or 'more'} in {self.text!r}")
        self.i += 1
        return tok

    def parse(self) -> Any:
        v = self.or_()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()} in {self.text!r}")
        return v

    def or_(self) -> Any:
        v = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            rhs = self.and_()
            v = v if truthy(v) else rhs
        return v

    def and_(self) -> Any:
        v = self.cmp()
        while self.peek() == ("op", "&&"):
            self.take()
            rhs = self.cmp()
            v = rhs if truthy(v) else v
        return v

    def cmp(self) -> Any:
        v = self.unary()
        while (tok := self.peek()) and tok[1] in ("==", "!=", "<", "<=", ">", ">="):
            op = self.take()[1]
            rhs = self.unary()
            if op == "==":
                v = loose_equal(v, rhs)
            elif op == "!=":
                v = not loose_equal(v, rhs)
            else:
                v = _order(op, v, rhs)
        return v

    def unary(self) -> Any:
        if self.peek() == ("op", "!"):
            self.take()
            return not truthy(self.unary())
        return self.postfix(self.primary())

    def primary(self) -> Any:
        kind, value = self.take()
        if kind == "str":
            return value[1:-1].replace("''", "'")
        if kind == "num":
            return float(int(value, 16)) if "x" in value.lower() else float(value)
        if value == "(":
            v = self.or_()
            self.take(")")
            return v
        if kind != "name":
            raise ExpressionError(f"unexpected {value!r} in {self.text!r}")
        if value in ("true", "false"):
            return value == "true"
        if value == "null":
            return None
        if self.peek() == ("op", "("):
            return self.call(value)
        if value not in self.ctx:
            raise ExpressionError(f"unknown context {value!r} in {self.text!r}")
        return self.ctx[value]

    def postfix(self, v: Any) -> Any:
        while (tok := self.peek()) and tok[1] in (".", "["):
            self.take()
            if tok[1] == ".":
                key: Any = self.take()[1]
            else:
                key = self.or_()
                self.take("]")
            if isinstance(v, dict):
                lowered = {str(k).lower(): x for k, x in v.items()}
                v = lowered.get(to_string(key).lower())
            elif isinstance(v, list) and isinstance(key, float) and 0 <= key < len(v):
                v = v[int(key)]
            else:
                v = None
        return v

    def call(self, name: str) -> Any:
        self.take("(")
        args: list[Any] = []
        while self.peek() != ("op", ")"):
            args.append(self.or_())
            if self.peek() == ("op", ","):
                self.take()
        self.take(")")
        fn = name.lower()
        if fn == "success":
            return self.status == "success"
        if fn == "failure":
            return self.status == "failure"
        if fn == "always":
            return True
        if fn == "cancelled":
            return False
        if fn == "format":
            return _format(to_string(args[0]), *args[1:])
        if fn == "contains":
            return _contains(args[0], args[1])
        if fn == "startswith":
            return to_string(args[0]).lower().startswith(to_string(args[1]).lower())
        if fn == "endswith":
            return to_string(args[0]).lower().endswith(to_string(args[1]).lower())
        if fn == "join":
            sep = to_string(args[1]) if len(args) > 1 else ","
            return sep.join(map(to_string, args[0])) if isinstance(args[0], list) else \
                to_string(args[0])
        if fn == "tojson":
            return json.dumps(args[0], indent=2)
        if fn == "fromjson":
            return json.loads(to_string(args[0]))
        raise ExpressionError(f"unknown function {name}() in {self.text!r}")


def evaluate(expr: str, ctx: dict[str, Any], status: str = "success") -> Any:
    """The value of one expression (without ``${{ }}``)."""
    return _Parser(expr, ctx, status).parse()


_INTERP = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)


def interpolate(text: Any, ctx: dict[str, Any], status: str = "success") -> str:
    """``text`` with each ``${{ expr }}`` replaced by its value as a string."""
    if not isinstance(text, str):
        return to_string(text)
    return _INTERP.sub(lambda m: to_string(evaluate(m.group(1), ctx, status)), text)


def condition(text: Any, ctx: dict[str, Any], status: str) -> bool:
    """A step's ``if``: ``success()`` when absent; status functions as GitHub's, where an
    ``if`` that calls none of them is ``success() && (...)``."""
    if text is None or text == "":
        return status == "success"
    if isinstance(text, bool):
        return text and status == "success"
    expr = str(text).strip()
    m = re.fullmatch(r"\$\{\{(.*)\}\}", expr, re.DOTALL)
    if m:
        expr = m.group(1)
    if not re.search(r"\b(success|failure|always|cancelled)\s*\(", expr):
        expr = f"success() && ({expr})"
    return truthy(evaluate(expr, ctx, status))


# --- GitHub's command files ------------------------------------------------------------------

def read_command_file(path: Path) -> dict[str, str]:
    """``name=value`` lines and ``name<<DELIMITER`` heredocs, as GITHUB_OUTPUT/GITHUB_ENV."""
    out: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            body: list[str] = []
            while i < len(lines) and lines[i] != delim:
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                raise ValueError(f"{path.name}: no closing {delim!r} for {name!r}")
            i += 1
            out[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
        else:
            raise ValueError(f"{path.name}: unparsable line {line!r}")
    return out


# --- the runner ------------------------------------------------------------------------------

@dataclass
class StepRecord:
    """What one step did."""

    id: str
    name: str
    outcome: str  # success, failure or skipped
    outputs: dict[str, str] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""


@dataclass
class ActionRun:
    """The result of running one composite action."""

    status: str  # success or failure
    outputs: dict[str, str]
    steps: list[StepRecord]
    summary: str
    env: dict[str, str]
    paths: list[str]
    log: str

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def step(self, step_id: str) -> StepRecord:
        return next(s for s in self.steps if s.id == step_id)


def github_context(env: dict[str, str], workspace: Path, event: dict[str, Any] | None = None,
                   **extra: Any) -> dict[str, Any]:
    """The ``github`` context from the GITHUB_* variables of ``env``."""
    ref = env.get("GITHUB_REF", "")
    ctx: dict[str, Any] = {
        "server_url": env.get("GITHUB_SERVER_URL", "https://github.com"),
        "api_url": env.get("GITHUB_API_URL", "https://api.github.com"),
        "repository": env.get("GITHUB_REPOSITORY", ""),
        "repository_owner": env.get("GITHUB_REPOSITORY", "/").split("/")[0],
        "sha": env.get("GITHUB_SHA", ""), "ref": ref,
        "ref_name": env.get("GITHUB_REF_NAME") or ref.rsplit("/", 1)[-1],
        "ref_type": "tag" if ref.startswith("refs/tags/") else "branch",
        "workflow_ref": env.get("GITHUB_WORKFLOW_REF", ""),
        "run_id": env.get("GITHUB_RUN_ID", ""), "run_attempt": env.get("GITHUB_RUN_ATTEMPT", ""),
        "event_name": env.get("GITHUB_EVENT_NAME", "push"),
        "actor": env.get("GITHUB_ACTOR", "octocat"), "token": env.get("GITHUB_TOKEN", ""),
        "workspace": str(workspace), "event": event or {},
    }
    ctx.update(extra)
    return ctx


class CompositeRunner:
    """Runs composite actions the way GitHub's runner does (see the module docstring)."""

    def __init__(self, workspace: Path, env: dict[str, str], *, temp: Path | None = None,
                 github: dict[str, Any] | None = None) -> None:
        self.workspace = workspace
        self.temp = temp or Path(tempfile.mkdtemp(prefix="runner-temp-"))
        self.temp.mkdir(parents=True, exist_ok=True)
        self.base_env = {**env, "GITHUB_WORKSPACE": str(workspace),
                         "RUNNER_TEMP": str(self.temp), "RUNNER_OS": "Linux",
                         "RUNNER_ARCH": "X64", "CI": "true", "GITHUB_ACTIONS": "true"}
        self.github = github or github_context(self.base_env, workspace)
        self.runner = {"os": "Linux", "arch": "X64", "temp": str(self.temp),
                       "tool_cache": str(self.temp / "tool-cache"), "name": "local",
                       "environment": env.get("RUNNER_ENVIRONMENT", "github-hosted")}
        self.job_env: dict[str, str] = {}  # what GITHUB_ENV set, for every later step
        self.paths: list[str] = []          # what GITHUB_PATH added
        self.summary_file = self.temp / "step_summary.md"
        self.summary_file.touch()

    def run(self, action_dir: Path, inputs: dict[str, str] | None = None,
            timeout: float = 600.0) -> ActionRun:
        meta = yaml.safe_load((action_dir / "action.yml").read_text())
        self.github = {**self.github, "action_path": str(action_dir.resolve())}
        if meta["runs"]["using"] != "composite":
            raise ValueError(f"{action_dir}: not a composite action")
        declared: dict[str, Any] = meta.get("inputs") or {}
        unknown = set(inputs or {}) - set(declared)
        if unknown:  # GitHub warns; a test calling an input that does not exist is a bug
            raise ValueError(f"{action_dir.name}: unknown inputs {sorted(unknown)}")
        base_ctx = {"github": self.github, "runner": self.runner,
                    "env": {**self.base_env, **self.job_env}}
        values: dict[str, str] = {}
        for name, spec in declared.items():
            if inputs and name in inputs:
                values[name] = inputs[name]
            else:
                default = (spec or {}).get("default", "")
                values[name] = interpolate(default, base_ctx)
                if (spec or {}).get("required") and name not in (inputs or {}) \
                        and not values[name]:
                    raise ValueError(f"{action_dir.name}: input {name!r} is required")
        steps: dict[str, dict[str, Any]] = {}
        records: list[StepRecord] = []
        log: list[str] = []
        status = "success"
        for n, step in enumerate(meta["runs"]["steps"]):
            sid = str(step.get("id") or f"__step{n}")
            name = str(step.get("name") or step.get("uses") or sid)
            ctx = {"inputs": values, "github": self.github, "runner": self.runner,
                   "steps": steps, "env": {**self.base_env, **self.job_env}}
            if not condition(step.get("if"), ctx, status):
                log.append(f"- {name}: skipped")
                records.append(StepRecord(sid, name, "skipped"))
                steps[sid] = {"outputs": {}, "outcome": "skipped", "conclusion": "skipped"}
                continue
            if "uses" in step:
                with_ = {k: interpolate(v, ctx) for k, v in (step.get("with") or {}).items()}
                log.append(f"- {name}: uses {step['uses']} with {with_}: satisfied by the"
                           " local environment (not fetched)")
                records.append(StepRecord(sid, name, "success"))
                steps[sid] = {"outputs": {}, "outcome": "success", "conclusion": "success"}
                continue
            rec = self._run_step(action_dir, sid, name, step, ctx, timeout)
            records.append(rec)
            log.append(f"- {name}: {rec.outcome}\n{rec.stdout}{rec.stderr}")
            steps[sid] = {"outputs": rec.outputs, "outcome": rec.outcome,
                          "conclusion": rec.outcome}
            if rec.outcome == "failure":
                status = "failure"
        final = {"inputs": values, "github": self.github, "runner": self.runner,
                 "steps": steps, "env": {**self.base_env, **self.job_env}}
        outputs = {k: interpolate((v or {}).get("value", ""), final)
                   for k, v in (meta.get("outputs") or {}).items()}
        return ActionRun(status=status, outputs=outputs, steps=records,
                         summary=self.summary_file.read_text(), env=dict(self.job_env),
                         paths=list(self.paths), log="\n".join(log))

    def _run_step(self, action_dir: Path, sid: str, name: str, step: dict[str, Any],
                  ctx: dict[str, Any], timeout: float) -> StepRecord:
        if step.get("shell") != "bash":
            raise ValueError(f"step {name!r}: composite run steps need shell: bash here")
        step_env = {k: interpolate(v, ctx) for k, v in (step.get("env") or {}).items()}
        script = interpolate(step["run"], ctx)
        files = {}
        for var in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH"):
            files[var] = self.temp / f"{var.lower()}_{uuid.uuid4().hex[:8]}"
            files[var].touch()
        script_file = self.temp / f"step_{uuid.uuid4().hex[:8]}.sh"
        script_file.write_text(script)
        env = {**self.base_env, **self.job_env, **step_env,
               "GITHUB_ACTION_PATH": str(action_dir.resolve()),
               "GITHUB_STEP_SUMMARY": str(self.summary_file),
               **{k: str(v) for k, v in files.items()}}
        env["PATH"] = os.pathsep.join([*reversed(self.paths), env.get("PATH", os.defpath)])
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail",
                               str(script_file)], cwd=self.workspace, env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)
        outputs = read_command_file(files["GITHUB_OUTPUT"])
        self.job_env.update(read_command_file(files["GITHUB_ENV"]))
        self.paths += [p for p in files["GITHUB_PATH"].read_text().splitlines() if p.strip()]
        return StepRecord(sid, name, "success" if proc.returncode == 0 else "failure",
                          outputs, proc.stdout, proc.stderr)
