"""Post-build variable substitution, as Flux's ``postBuild``.

``${var}``, ``${var:=default}`` and ``${var:-default}`` in every object's YAML are replaced
by variables from ``postBuild.substitute`` (which win) and ``substituteFrom`` ConfigMaps
and Secrets. In strict mode (the default, as kustomize-controller 1.9's
StrictPostBuildSubstitutions) an undefined variable without a default is an error naming
it; otherwise it becomes an empty string. ``$${var}`` escapes a literal ``${var}``.
Whether to substitute at all is the caller's choice (Flux: only with ``postBuild``, and by
default only when a variable is defined). Objects annotated
``kustomize.ocigitops.dev/substitute: disabled`` are left alone. Variable names follow
Flux's rule: letters, digits and underscores, not starting with a digit.

Written here because Flux's envsubst is a Go library; the grammar is small.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from ocigitops.errors import OcigitopsError

SUBSTITUTE_ANNOTATION = "kustomize.ocigitops.dev/substitute"
_VAR_NAME = re.compile(r"^[_a-zA-Z][_a-zA-Z0-9]*$")
_PATTERN = re.compile(r"\$(\$)?\{([^}:=\-]*)(?:(:)?([=-])([^}]*))?\}")


class SubstitutionError(OcigitopsError):
    """A variable name or the substituted YAML is invalid."""


def check_vars(variables: Mapping[str, str]) -> None:
    """Refuse variable names Flux refuses."""
    bad = sorted(k for k in variables if not _VAR_NAME.match(k))
    if bad:
        raise SubstitutionError(f"invalid variable name(s) {bad}: use letters, digits and"
                                " underscores, not starting with a digit")


def substitute_text(text: str, variables: Mapping[str, str], *, strict: bool = False) -> str:
    """Replace every ``${...}`` in ``text``; with ``strict``, an undefined variable without
    a default raises SubstitutionError."""
    def repl(m: re.Match[str]) -> str:
        escaped, name, colon, op, default = m.groups()
        if escaped:
            return m.group(0)[1:]
        if not _VAR_NAME.match(name):
            return m.group(0)
        value = variables.get(name)
        if op is None:
            if value is None and strict:
                raise SubstitutionError(f"variable {name!r} is not defined and has no default"
                                        " (define it in postBuild, or write ${"
                                        f"{name}:=default}}; $${{{name}}} keeps it literal)")
            return value or ""
        # "${v:=d}"/"${v:-d}": d when unset or empty; "${v=d}"/"${v-d}": d when unset.
        if value is None or (colon and value == ""):
            return default
        return value

    return _PATTERN.sub(repl, text)


def substitute_objects(objs: list[dict[str, Any]], variables: Mapping[str, str], *,
                       strict: bool = False) -> list[dict[str, Any]]:
    """Substitute into every object not opted out; objects are re-parsed from YAML."""
    check_vars(variables)
    out: list[dict[str, Any]] = []
    for obj in objs:
        ann = (obj.get("metadata") or {}).get("annotations") or {}
        if ann.get(SUBSTITUTE_ANNOTATION) == "disabled":
            out.append(obj)
            continue
        text = yaml.safe_dump(obj, sort_keys=False)
        if "${" not in text:
            out.append(obj)
            continue
        md = obj.get("metadata") or {}
        try:
            new = yaml.safe_load(substitute_text(text, variables, strict=strict))
        except SubstitutionError as e:
            raise SubstitutionError(f"{obj.get('kind')} {md.get('name')}: {e}") from e
        except yaml.YAMLError as e:
            raise SubstitutionError(f"{obj.get('kind')} {md.get('name')}: substituted YAML is"
                                    f" invalid: {e}") from e
        out.append(new)
    return out
