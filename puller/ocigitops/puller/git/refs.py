"""Resolving ``spec.ref`` against a ref listing, with source-controller's rules.

Precedence: ``commit`` > ``name`` > ``semver`` > ``tag`` > ``branch``; with none of them
the branch ``master`` (Flux's API default). Revision strings are Flux's:

- branch ``main``: ``main@sha1:<commit>``;
- tag ``v1.0.0`` (or the tag a semver range selected): ``v1.0.0@sha1:<commit>``, the
  commit the tag points to (an annotated tag is peeled);
- name ``refs/pull/1/head``: ``refs/pull/1/head@sha1:<commit>`` (the full name);
- commit alone: ``sha1:<commit>``; commit with a branch: ``<branch>@sha1:<commit>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ocigitops.errors import UsageError
from ocigitops.puller.git.errors import GitURLError, RefNotFoundError
from ocigitops.puller.git.transport import RemoteRefs
from ocigitops.tags import check_semver_range, select_latest

DEFAULT_BRANCH = "master"
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
# git check-ref-format, the parts that matter for a name we put on the wire.
_BAD_REF = re.compile(r"(^/|/$|//|\.\.|@\{|[\x00-\x20\x7f~^:?*\[\\]|\.lock(/|$)|/\.|^\.)")


@dataclass(frozen=True)
class RefSpec:
    """``spec.ref`` of a GitRepository (all optional)."""

    branch: str | None = None
    tag: str | None = None
    semver: str | None = None
    name: str | None = None
    commit: str | None = None

    def check(self) -> None:
        """Raise :class:`GitURLError` (a usage error) for a malformed field."""
        if self.commit is not None and not _SHA1.match(self.commit):
            raise GitURLError(f"ref.commit {self.commit!r} must be a full 40-character"
                              " lower-case SHA-1")
        for what, value in (("branch", self.branch), ("tag", self.tag)):
            if value is not None and (not value or _BAD_REF.search(value)):
                raise GitURLError(f"ref.{what} {value!r} is not a valid Git ref name")
        if self.name is not None and (not self.name.startswith("refs/")
                                      or _BAD_REF.search(self.name)):
            raise GitURLError(f"ref.name {self.name!r} must be a full ref such as"
                              " refs/heads/main or refs/pull/1/head")
        if self.semver is not None:
            try:
                check_semver_range(self.semver)
            except UsageError as e:
                raise GitURLError(f"ref.semver: {e}") from None

    @property
    def effective_branch(self) -> str | None:
        """The branch in force when no higher-precedence field is set (default master)."""
        if self.commit or self.name or self.semver or self.tag:
            return self.branch
        return self.branch or DEFAULT_BRANCH


@dataclass(frozen=True)
class Resolved:
    """What a ref resolved to."""

    #: The full ref name fetched (``refs/heads/main``), or None for a bare commit.
    ref: str | None
    #: The commit (hex SHA-1) the artifact is built from.
    commit: str
    #: The annotated tag object's id when the ref is an annotated tag, else None.
    tag_object: str | None
    #: Flux's revision string.
    revision: str
    #: The short tag name when the ref is a tag (for messages and verification).
    tag: str | None = None

    @property
    def want(self) -> str:
        """The object to fetch: the tag object (so it can be verified) or the commit."""
        return self.tag_object or self.commit


def _tag(refs: RemoteRefs, tag: str) -> Resolved:
    full = f"refs/tags/{tag}"
    obj = refs.refs.get(full)
    if obj is None:
        raise RefNotFoundError(f"tag {tag!r} not found in the repository")
    peeled = refs.refs.get(full + "^{}")
    return Resolved(ref=full, commit=peeled or obj, tag_object=obj if peeled else None,
                    revision=f"{tag}@sha1:{peeled or obj}", tag=tag)


def resolve(refs: RemoteRefs, spec: RefSpec) -> Resolved:
    """Resolve ``spec`` against the listing; :class:`RefNotFoundError` when it names
    nothing there. A bare ``commit`` is not checked here (a listing only has ref tips):
    the fetch checks it."""
    spec.check()
    if spec.commit:
        if spec.branch:
            full = f"refs/heads/{spec.branch}"
            if full not in refs.refs:
                raise RefNotFoundError(f"branch {spec.branch!r} not found in the repository")
            return Resolved(ref=full, commit=spec.commit, tag_object=None,
                            revision=f"{spec.branch}@sha1:{spec.commit}")
        return Resolved(ref=None, commit=spec.commit, tag_object=None,
                        revision=f"sha1:{spec.commit}")
    if spec.name:
        name = spec.name.removesuffix("^{}")
        obj = refs.refs.get(name)
        if obj is None:
            raise RefNotFoundError(f"ref {spec.name!r} not found in the repository")
        peeled = refs.refs.get(name + "^{}")
        is_tag = name.startswith("refs/tags/")
        return Resolved(ref=name, commit=peeled or obj,
                        tag_object=obj if peeled and is_tag else None,
                        revision=f"{spec.name}@sha1:{peeled or obj}",
                        tag=name.removeprefix("refs/tags/") if is_tag else None)
    if spec.semver:
        tags = [k.removeprefix("refs/tags/") for k in refs.refs
                if k.startswith("refs/tags/") and not k.endswith("^{}")]
        chosen = select_latest(tags, spec.semver)
        if chosen is None:
            raise RefNotFoundError(f"no tag matches semver range {spec.semver!r}")
        return _tag(refs, chosen)
    if spec.tag:
        return _tag(refs, spec.tag)
    branch = spec.effective_branch or DEFAULT_BRANCH
    full = f"refs/heads/{branch}"
    sha = refs.refs.get(full)
    if sha is None:
        raise RefNotFoundError(f"branch {branch!r} not found in the repository")
    return Resolved(ref=full, commit=sha, tag_object=None, revision=f"{branch}@sha1:{sha}")


__all__ = ["DEFAULT_BRANCH", "RefSpec", "Resolved", "resolve"]
