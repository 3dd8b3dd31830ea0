"""The two operations a GitRepository reconcile needs, on top of the transport:

- :func:`lookup`: one ref listing, resolved to a commit and Flux's revision string;
- :func:`fetch_artifact`: a shallow fetch (depth 1, one object) of that commit (or of the
  annotated tag pointing to it), verification of the signatures ``verify`` asks for, and
  the artifact written to a file.

Both are blocking (dulwich and paramiko are); the reconciler runs them in a thread, under
the same ``timeout`` that bounds every read here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from dulwich.objects import Commit, ObjectID, Tag

from ocigitops.extract import DEFAULT_LIMITS, Limits
from ocigitops.puller.git.archive import ArchiveResult, write_artifact
from ocigitops.puller.git.errors import GitError, RefNotFoundError, SignatureError
from ocigitops.puller.git.include import IncludeDir, graft
from ocigitops.puller.git.refs import RefSpec, Resolved, resolve
from ocigitops.puller.git.signatures import TrustedKeys, verify_commit, verify_tag
from ocigitops.puller.git.transport import (
    Remote,
    RemoteRefs,
    fetch_object,
    ls_remote,
    open_scratch_repo,
)

VerifyMode = Literal["HEAD", "head", "Tag", "TagAndHEAD"]


class InvalidVerificationModeError(SignatureError):
    """``verify.mode`` asks for a tag's signature but the ref is not an annotated tag
    (only an edit of the spec can fix it)."""


@dataclass(frozen=True)
class FetchResult:
    """A fetched, verified and archived commit."""

    resolved: Resolved
    archive: ArchiveResult
    #: Signers verified, as Flux words it: ``tag 'v1' with key 'X'``, ``commit ... with
    #: key 'Y'``; empty without verification.
    verified: tuple[str, ...]
    #: The commit message's first line (Flux's NewArtifact event names it).
    subject: str


def lookup(remote: Remote, ref: RefSpec) -> tuple[RemoteRefs, Resolved]:
    """One ref listing of ``remote`` and ``ref`` resolved against it."""
    refs = ls_remote(remote)
    return refs, resolve(refs, ref)


def _verify(repo_store: object, resolved: Resolved, commit: Commit, mode: VerifyMode,
            keys: TrustedKeys) -> tuple[str, ...]:
    store = repo_store
    out: list[str] = []
    if mode in ("Tag", "TagAndHEAD"):
        if resolved.tag is None:
            raise InvalidVerificationModeError(
                "cannot verify a tag object's signature: the ref is not a tag (use"
                " ref.tag, ref.semver or a refs/tags/ ref.name, or verify.mode HEAD)")
        if resolved.tag_object is None:
            raise InvalidVerificationModeError(
                f"cannot verify the signature of tag '{resolved.tag}': it is a lightweight"
                " tag (no tag object to sign)")
        tag = store[resolved.tag_object.encode()]  # type: ignore[index]
        if not isinstance(tag, Tag):
            raise GitError(f"tag '{resolved.tag}' does not name a tag object")
        signer = verify_tag(tag, keys)
        out.append(f"tag '{resolved.tag}' with key '{signer}'")
    if mode in ("HEAD", "head", "TagAndHEAD"):
        signer = verify_commit(commit, keys)
        out.append(f"commit '{resolved.commit}' with key '{signer}'")
    return tuple(out)


def fetch_artifact(remote: Remote, resolved: Resolved, out: BinaryIO, *,
                   verify: VerifyMode | None = None, keys: TrustedKeys | None = None,
                   ignore: str | None = None, sparse: Sequence[str] = (),
                   includes: Sequence[IncludeDir] = (),
                   limits: Limits = DEFAULT_LIMITS) -> FetchResult:
    """Fetch ``resolved`` shallowly, verify it when ``verify`` is set (with ``keys``), and
    write its artifact to ``out``, with ``includes`` grafted into its tree
    (:mod:`.include`).

    A ``commit`` ref the server does not let us ask for directly (servers without
    ``allowReachableSHA1InWant``) is looked for in its branch (or ``HEAD``), fetched with
    history, within the same bounds.
    """
    bounds: dict[str, int] = {
        "max_object": limits.max_file, "max_total": limits.max_total + limits.max_file,
        "max_objects": 2 * limits.max_entries + 16, "max_pack_bytes": limits.max_stream}
    with tempfile.TemporaryDirectory(prefix="ocigitops-git-") as tmp:
        repo = open_scratch_repo(Path(tmp) / "objects.git")
        try:
            try:
                fetch_object(remote, resolved.want, repo, depth=1, **bounds)
            except GitError:
                if resolved.ref is not None and resolved.ref.startswith("refs/heads/") \
                        and resolved.revision.endswith(resolved.commit) \
                        and resolved.tag_object is None and _pinned(resolved):
                    fetch_object(remote, _tip(remote, resolved.ref), repo, depth=None,
                                 **bounds)
                elif resolved.ref is None:
                    fetch_object(remote, _tip(remote, "HEAD"), repo, depth=None,
                                 **bounds)
                else:
                    raise
            store = repo.object_store
            try:
                commit = store[ObjectID(resolved.commit.encode())]
            except KeyError:
                raise RefNotFoundError(f"commit {resolved.commit} is not in the"
                                       " repository") from None
            if not isinstance(commit, Commit):
                raise GitError(f"{resolved.commit} is not a commit")
            if resolved.tag_object is not None:
                tag = store[ObjectID(resolved.tag_object.encode())]
                if not isinstance(tag, Tag) or tag.object[1] != commit.id:
                    raise GitError(f"tag object {resolved.tag_object} does not point to"
                                   f" commit {resolved.commit}")
            verified: tuple[str, ...] = ()
            if verify is not None:
                if keys is None:
                    raise SignatureError("verification asked for but no trusted keys given")
                verified = _verify(store, resolved, commit, verify, keys)
            tree = graft(store, commit.tree, includes, limits) if includes else commit.tree
            archive = write_artifact(store, tree, out, spec_ignore=ignore,
                                     sparse=sparse, limits=limits)
            subject = commit.message.decode("utf-8", "replace").strip().split("\n")[0][:200]
            return FetchResult(resolved=resolved, archive=archive, verified=verified,
                               subject=subject)
        finally:
            repo.close()


def _pinned(resolved: Resolved) -> bool:
    """A ``commit`` + ``branch`` resolution (the commit is not the branch's tip)."""
    return resolved.revision.split("@", 1)[-1] == f"sha1:{resolved.commit}"


def _tip(remote: Remote, ref: str) -> str:
    refs = ls_remote(remote)
    sha = refs.refs.get(ref)
    if sha is None:
        raise RefNotFoundError(f"{ref} not found in the repository")
    return sha


__all__ = ["FetchResult", "InvalidVerificationModeError", "VerifyMode", "fetch_artifact",
           "lookup"]
