"""Tag selection: hiding non-artifact tags, regex and semver filters, latest-in-range.

Semver ranges follow Masterminds/semver (what Flux uses): comparison operators, ``x``
wildcards, ``~`` and ``^``, ``||`` alternatives and space- or comma-separated
conjunctions; prereleases match only constraints that name a prerelease.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import semver

from ocigitops.errors import UsageError

#: Tags that are not artifacts: cosign signatures/attestations/SBOMs and referrer indexes.
_HIDDEN_TAG = re.compile(r"^sha256-[a-f0-9]{64}(\.(sig|att|sbom))?$")

def filter_tags(tags: Sequence[str], semver_range: str | None = None,
                regex: str | None = None) -> list[str]:
    """Hide signature/referrer tags, apply filters, sort descending (semver-aware)."""
    visible = [t for t in tags if not _HIDDEN_TAG.match(t)]
    if regex:
        try:
            pattern = re.compile(regex)
        except re.error as e:
            raise UsageError(f"--filter-regex {regex!r} does not compile: {e}") from e
        visible = [t for t in visible if pattern.search(t)]
    if semver_range:
        check_semver_range(semver_range)
        matched: list[tuple[semver.Version, str]] = []
        for t in visible:
            v = parse_semver(t)
            if v is not None and semver_matches(v, semver_range):
                matched.append((v, t))
        return [t for _, t in sorted(matched, reverse=True)]
    return sorted(visible, reverse=True)


def check_semver_range(constraint: str) -> str:
    """Return ``constraint`` if it parses as a semver range, else raise UsageError.

    Every part is parsed up front: matching alone would never look at a garbage range
    when no tag is a version, and would silently list nothing.
    """
    probe = semver.Version(0, 0, 0)
    parts = [c for alt in constraint.split("||") for c in re.split(r"[,\s]+", alt.strip())
             if c]
    bad = None if parts else "it is empty"
    for c in parts:
        try:
            _match_one(probe, c)
        except ValueError:
            bad = f"cannot read {c!r}"
            break
    if bad:
        raise UsageError(f"invalid semver range {constraint!r} ({bad}): use e.g. '>=1.0.0',"
                         " '>=1.0.0 <2.0.0', '~1.2' or '1.x'")
    return constraint


def parse_semver(tag: str) -> semver.Version | None:
    """Parse a tag as semver, allowing a leading ``v`` and missing minor/patch."""
    text = tag[1:] if tag[:1] in ("v", "V") else tag
    try:
        return semver.Version.parse(text, optional_minor_and_patch=True)
    except ValueError:
        return None


def semver_matches(v: semver.Version, constraint: str) -> bool:
    """Match a Masterminds-style constraint (``>=1.0.0 <2.0.0``, ``1.x``, ``~1.2``,
    ``^1.2``, ``||`` alternatives, comma or space separated conjunctions)."""
    try:
        for alt in constraint.split("||"):
            parts = [c for c in re.split(r"[,\s]+", alt.strip()) if c]
            # As Masterminds (Flux): a prerelease version is considered only by a group
            # of constraints that names a prerelease somewhere (">=1.0.0-0 <2.0.0").
            if v.prerelease and not any("-" in p.split("+", 1)[0] for p in parts):
                continue
            if all(_match_one(v, c) for c in parts):
                return True
        return False
    except ValueError as e:
        raise UsageError(f"invalid semver range {constraint!r}: {e}") from e


def _match_one(v: semver.Version, c: str) -> bool:
    m = re.match(r"^(>=|<=|!=|==|=|>|<|~|\^)?v?(.*)$", c)
    if not m:
        raise ValueError(c)
    op, ver = m.group(1) or "=", m.group(2)
    if ver in ("*", "x", "X", ""):
        return v.prerelease is None
    # Split "1.2.3-rc.1+build" into the numeric core and the prerelease before parsing,
    # so prerelease constraints (">=2.0.0-rc.0") parse.
    core, _, pre = ver.split("+", 1)[0].partition("-")
    parts = core.split(".")
    wild = any(p in ("x", "X", "*") for p in parts) or len(parts) < 3
    nums = [int(p) for p in parts if p not in ("x", "X", "*")]
    padded = [*nums, 0, 0, 0]
    base = semver.Version(padded[0], padded[1], padded[2], prerelease=pre or None)
    if op in ("=", "==") and wild:
        op = "~" if len(nums) >= 2 else "^"
        if not nums:
            return True
    if op in ("=", "=="):
        return v.compare(base) == 0
    if op == "!=":
        return v.compare(base) != 0
    if op == ">":
        return v.compare(base) > 0
    if op == ">=":
        return v.compare(base) >= 0
    if op == "<":
        return v.compare(base) < 0
    if op == "<=":
        return v.compare(base) <= 0
    if op == "~":
        upper = base.bump_minor() if len(nums) >= 2 else base.bump_major()
        return base.compare(v) <= 0 < upper.compare(v)
    # caret
    if base.major > 0 or len(nums) == 1:
        upper = base.bump_major()
    elif base.minor > 0 or len(nums) == 2:
        upper = base.bump_minor()
    else:
        upper = base.bump_patch()
    return base.compare(v) <= 0 < upper.compare(v)




def select_latest(tags: Sequence[str], constraint: str) -> str | None:
    """The highest tag matching the semver ``constraint``, or None."""
    matched = filter_tags(tags, semver_range=constraint)
    return matched[0] if matched else None
