"""``driftDetection.ignore`` rules, as Flux's helm-controller reads them (``fluxcd/pkg``
``ssa/jsondiff``): each rule is a list of JSON pointers (RFC 6901; ``""`` is the whole
object) and an optional ``target`` selector whose ``group``, ``version``, ``kind``, ``name``
and ``namespace`` are regular expressions anchored at both ends, and whose
``labelSelector`` and ``annotationSelector`` are Kubernetes label selector expressions.
Every rule whose target matches an object of the release (as Helm rendered it) adds its
paths; those paths are removed from both the desired (dry-run) and the live object before
they are compared, and are left as they are in the cluster when drift is corrected.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ocigitops.errors import OcigitopsError

#: At most this many rules, and paths per rule (the spec is user input).
MAX_RULES = 100
MAX_PATHS = 100


class InvalidIgnoreRuleError(OcigitopsError):
    """A ``driftDetection.ignore`` rule that does not parse; the message names it."""


# -- JSON pointers ------------------------------------------------------------------------------


def parse_pointer(pointer: str) -> tuple[str, ...]:
    """RFC 6901: ``""`` is the whole document, else ``/``-separated tokens with ``~1``
    for ``/`` and ``~0`` for ``~``."""
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise ValueError(f"JSON pointer {pointer!r} must be empty or start with '/'")
    tokens = pointer[1:].split("/")
    for t in tokens:
        if re.search(r"~(?![01])", t):
            raise ValueError(f"JSON pointer {pointer!r} has a '~' not followed by 0 or 1")
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in tokens)


def _step(node: Any, token: str) -> tuple[bool, Any]:
    if isinstance(node, Mapping):
        return (token in node, node.get(token))
    if isinstance(node, list) and token.isdigit() and int(token) < len(node):
        return (True, node[int(token)])
    return (False, None)


def pointer_get(doc: Any, tokens: tuple[str, ...]) -> tuple[bool, Any]:
    """``(found, value)`` at ``tokens`` in ``doc``."""
    node = doc
    for t in tokens:
        found, node = _step(node, t)
        if not found:
            return (False, None)
    return (True, node)


def pointer_remove(doc: Any, tokens: tuple[str, ...]) -> None:
    """Remove what ``tokens`` points at in ``doc`` (in place); nothing if absent."""
    if not tokens:
        return
    found, parent = pointer_get(doc, tokens[:-1])
    if not found:
        return
    last = tokens[-1]
    if isinstance(parent, dict):
        parent.pop(last, None)
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]


def pointer_set(doc: Any, tokens: tuple[str, ...], value: Any) -> None:
    """Set ``value`` at ``tokens`` (in place), creating missing maps on the way; a list
    index out of range is left alone."""
    node = doc
    for i, t in enumerate(tokens):
        last = i == len(tokens) - 1
        if isinstance(node, dict):
            if last:
                node[t] = copy.deepcopy(value)
                return
            if not isinstance(node.get(t), (dict, list)):
                node[t] = {}
            node = node[t]
        elif isinstance(node, list) and t.isdigit() and int(t) < len(node):
            if last:
                node[int(t)] = copy.deepcopy(value)
                return
            node = node[int(t)]
        else:
            return


# -- label selectors ------------------------------------------------------------------------


_REQ = re.compile(r"""\s*(?:
    (?P<neg>!)\s*(?P<nkey>[^\s,!=()]+)                                   # !key
  | (?P<skey>[^\s,!=()]+)\s+(?P<op>in|notin)\s*\((?P<vals>[^)]*)\)      # key in (a,b)
  | (?P<ekey>[^\s,!=()]+)\s*(?P<eq>==|=|!=)\s*(?P<val>[^\s,!=()]*)       # key=value
  | (?P<key>[^\s,!=()]+)                                                 # key
)\s*(?:,|$)""", re.X)


@dataclass(frozen=True)
class Requirement:
    """One requirement of a label selector."""

    key: str
    op: str  # exists, !exists, =, !=, in, notin
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Kubernetes' semantics (``!=`` and ``notin`` match an absent key)."""
        has = self.key in labels
        if self.op == "exists":
            return has
        if self.op == "!exists":
            return not has
        if self.op in ("=", "in"):
            return has and labels[self.key] in self.values
        return not has or labels[self.key] not in self.values


def parse_selector(text: str) -> list[Requirement]:
    """A label selector expression (``a=b,c!=d,e in (f,g),!h``) as requirements."""
    out: list[Requirement] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _REQ.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"selector {text!r}: cannot parse at {text[pos:][:20]!r}")
        pos = m.end()
        if m.group("neg"):
            out.append(Requirement(m.group("nkey"), "!exists"))
        elif m.group("op"):
            vals = frozenset(v.strip() for v in m.group("vals").split(",") if v.strip())
            out.append(Requirement(m.group("skey"), m.group("op"), vals))
        elif m.group("eq"):
            op = "!=" if m.group("eq") == "!=" else "="
            out.append(Requirement(m.group("ekey"), op, frozenset([m.group("val")])))
        else:
            out.append(Requirement(m.group("key"), "exists"))
    return out


# -- rules ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A rule's ``target``: anchored regular expressions and label selectors."""

    group: re.Pattern[str] | None = None
    version: re.Pattern[str] | None = None
    kind: re.Pattern[str] | None = None
    name: re.Pattern[str] | None = None
    namespace: re.Pattern[str] | None = None
    labels: tuple[Requirement, ...] = ()
    annotations: tuple[Requirement, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Whether ``obj`` (namespace filled in) is selected."""
        api = str(obj.get("apiVersion") or "")
        group, _, version = api.rpartition("/")
        md = obj.get("metadata") or {}
        for rx, value in ((self.group, group), (self.version, version),
                          (self.kind, str(obj.get("kind") or "")),
                          (self.name, str(md.get("name") or "")),
                          (self.namespace, str(md.get("namespace") or ""))):
            if rx is not None and not rx.fullmatch(value):
                return False
        labels = {str(k): str(v) for k, v in (md.get("labels") or {}).items()}
        annotations = {str(k): str(v) for k, v in (md.get("annotations") or {}).items()}
        return (all(r.matches(labels) for r in self.labels)
                and all(r.matches(annotations) for r in self.annotations))


@dataclass(frozen=True)
class IgnoreRule:
    """One ``driftDetection.ignore`` entry."""

    paths: tuple[tuple[str, ...], ...]
    target: Target | None = None


@dataclass
class Ignored:
    """What the rules ignore in one object: all of it, or these paths."""

    whole: bool = False
    paths: list[tuple[str, ...]] = field(default_factory=list)


_TARGET_FIELDS = ("group", "version", "kind", "name", "namespace", "labelSelector",
                  "annotationSelector")


def parse_ignore_rules(raw: Any) -> list[IgnoreRule]:
    """``spec.driftDetection.ignore`` as rules; ``InvalidIgnoreRuleError`` names the
    first entry that does not parse."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidIgnoreRuleError("spec.driftDetection.ignore must be a list")
    if len(raw) > MAX_RULES:
        raise InvalidIgnoreRuleError(f"spec.driftDetection.ignore has more than {MAX_RULES}"
                                     " rules")
    rules: list[IgnoreRule] = []
    for i, entry in enumerate(raw):
        where = f"spec.driftDetection.ignore[{i}]"
        if not isinstance(entry, Mapping):
            raise InvalidIgnoreRuleError(f"{where} must be a map with paths and target")
        extra = set(entry) - {"paths", "target"}
        if extra:
            raise InvalidIgnoreRuleError(f"{where} has unknown field(s) {sorted(extra)}")
        paths = entry.get("paths")
        if not isinstance(paths, list) or not paths or len(paths) > MAX_PATHS \
                or not all(isinstance(p, str) for p in paths):
            raise InvalidIgnoreRuleError(f"{where}.paths must be a list of 1 to {MAX_PATHS}"
                                         " JSON pointers")
        try:
            parsed = tuple(parse_pointer(p) for p in paths)
        except ValueError as e:
            raise InvalidIgnoreRuleError(f"{where}.paths: {e}") from None
        rules.append(IgnoreRule(parsed, _target(entry.get("target"), f"{where}.target")))
    return rules


def _target(raw: Any, where: str) -> Target | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidIgnoreRuleError(f"{where} must be a map")
    extra = set(raw) - set(_TARGET_FIELDS)
    if extra:
        raise InvalidIgnoreRuleError(f"{where} has unknown field(s) {sorted(extra)}")
    rx: dict[str, re.Pattern[str] | None] = {}
    for key in ("group", "version", "kind", "name", "namespace"):
        value = raw.get(key)
        if value in (None, ""):
            rx[key] = None
            continue
        if not isinstance(value, str):
            raise InvalidIgnoreRuleError(f"{where}.{key} must be a string")
        try:
            rx[key] = re.compile(value)
        except re.error as e:
            raise InvalidIgnoreRuleError(f"{where}.{key}: invalid regular expression: {e}"
                                         ) from None
    sels: dict[str, tuple[Requirement, ...]] = {}
    for key in ("labelSelector", "annotationSelector"):
        value = raw.get(key)
        if value in (None, ""):
            sels[key] = ()
            continue
        if not isinstance(value, str):
            raise InvalidIgnoreRuleError(f"{where}.{key} must be a string")
        try:
            sels[key] = tuple(parse_selector(value))
        except ValueError as e:
            raise InvalidIgnoreRuleError(f"{where}.{key}: {e}") from None
    return Target(group=rx["group"], version=rx["version"], kind=rx["kind"], name=rx["name"],
                  namespace=rx["namespace"], labels=sels["labelSelector"],
                  annotations=sels["annotationSelector"])


def ignored(rules: list[IgnoreRule], obj: Mapping[str, Any]) -> Ignored:
    """What ``rules`` ignore in ``obj`` (the desired object, namespace filled in)."""
    out = Ignored()
    for rule in rules:
        if rule.target is not None and not rule.target.matches(obj):
            continue
        for p in rule.paths:
            if p == ():
                out.whole = True
            else:
                out.paths.append(p)
    return out


def without(obj: Mapping[str, Any], paths: list[tuple[str, ...]]) -> dict[str, Any]:
    """A deep copy of ``obj`` without ``paths``."""
    out: dict[str, Any] = copy.deepcopy(dict(obj))
    # Longest first, and list indexes from the end, so one removal does not shift another.
    for p in sorted(paths, key=lambda t: (len(t), t), reverse=True):
        pointer_remove(out, p)
    return out


def keep_live(desired: Mapping[str, Any], live: Mapping[str, Any],
              paths: list[tuple[str, ...]]) -> dict[str, Any]:
    """``desired`` with each ignored path as it is in ``live`` (removed when ``live`` has
    none): applying it corrects everything but the ignored paths, and takes no field away
    from whoever owns it."""
    out: dict[str, Any] = copy.deepcopy(dict(desired))
    for p in paths:
        found, value = pointer_get(live, p)
        if found:
            pointer_set(out, p, value)
        else:
            pointer_remove(out, p)
    return out


__all__ = ["IgnoreRule", "Ignored", "InvalidIgnoreRuleError", "Target", "ignored",
           "keep_live", "parse_ignore_rules", "parse_pointer", "parse_selector",
           "pointer_get", "pointer_remove", "pointer_set", "without"]
