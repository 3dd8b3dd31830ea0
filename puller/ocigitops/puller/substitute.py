"""Post-build variable substitution, as Flux's ``postBuild``.

``${var}``, ``${var:=default}`` and ``${var:-default}`` in every object's YAML are replaced
by variables from ``postBuild.substitute`` (which win) and ``substituteFrom`` ConfigMaps
and Secrets. Undefined variables without a default become empty strings (Flux's
non-strict default). ``$${var}`` escapes a literal ``${var}``. Objects annotated
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


def substitute_text(text: str, variables: Mapping[str, str]) -> str:
    """Replace every ``${...}`` in ``text``."""
    def repl(m: re.Match[str]) -> str:
        escaped, name, colon, op, default = m.groups()
        if escaped:
            return m.group(0)[1:]
        if not _VAR_NAME.match(name):
            return m.group(0)
        value = variables.get(name)
        if op is None:
            return value or ""
        # "${v:=d}"/"${v:-d}": d when unset or empty; "${v=d}"/"${v-d}": d when unset.
        if value is None or (colon and value == ""):
            return default
        return value

    return _PATTERN.sub(repl, text)


def substitute_objects(objs: list[dict[str, Any]], variables: Mapping[str, str],
                       ) -> list[dict[str, Any]]:
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
        try:
            new = yaml.safe_load(substitute_text(text, variables))
        except yaml.YAMLError as e:
            md = obj.get("metadata") or {}
            raise SubstitutionError(f"{obj.get('kind')} {md.get('name')}: substituted YAML is"
                                    f" invalid: {e}") from e
        out.append(new)
    return out
