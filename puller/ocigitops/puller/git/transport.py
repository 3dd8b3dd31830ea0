"""Talking to a Git server: one ref listing (``ls-remote``) and a shallow fetch of one
object, over HTTPS/HTTP (dulwich's urllib3 client) or SSH (:mod:`.ssh`).

Bounds, because the server may be hostile: every operation has a deadline (``timeout``
seconds for the whole operation, checked on every read, not per read), the ref listing is
at most :data:`MAX_REFS_BYTES`, a pack at most ``max_pack_bytes`` and ``max_objects``
objects (its header says how many, and it is refused before it is indexed). The protocol
is pinned to v0/v1 so that a lookup is exactly one request (``GET info/refs``): protocol
v2 would need a second one (``ls-refs``).

Credentials: basic auth is attached only to requests for the URL's own origin (dulwich
drops it on a cross-origin redirect); a bearer token travels in a pool header, which
urllib3 strips on a cross-host redirect. Nothing here puts a credential in a message.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from dulwich.client import (
    GitClient,
    HTTPProxyUnauthorized,
    HTTPUnauthorized,
    SSHGitClient,
    Urllib3HttpGitClient,
)
from dulwich.errors import GitProtocolError, HangupException, NotGitRepository
from dulwich.object_store import ObjectStoreGraphWalker
from dulwich.objects import ObjectID
from dulwich.refs import Ref
from dulwich.repo import Repo

from ocigitops.errors import OcigitopsError
from ocigitops.puller.git.auth import GitAuth, Proxy
from ocigitops.puller.git.errors import (
    GitAuthError,
    GitError,
    GitLimitError,
    GitTimeoutError,
    GitUnreachableError,
    RefNotFoundError,
)
from ocigitops.puller.git.pack import check_pack
from ocigitops.puller.git.ssh import PinnedParamikoVendor
from ocigitops.puller.git.url import GitURL
from ocigitops.registry import shared_context

#: The largest ref advertisement read (a repository with 100,000 refs is ~6 MB).
MAX_REFS_BYTES = 32 * 1024 * 1024
#: Default bounds of one fetch.
MAX_PACK_BYTES = 1024 * 1024 * 1024
MAX_OBJECTS = 400_000


@dataclass(frozen=True)
class Remote:
    """Where a repository is and how to reach it."""

    url: GitURL
    auth: GitAuth = field(default_factory=GitAuth)
    proxy: Proxy | None = None
    #: Seconds for one whole operation (lookup or fetch), as ``spec.timeout``.
    timeout: float = 60.0


@dataclass(frozen=True)
class RemoteRefs:
    """The server's ref advertisement: ``refs`` (name -> object id, peeled ``^{}`` entries
    included) and ``symrefs`` (``HEAD`` -> ``refs/heads/main``)."""

    refs: Mapping[str, str]
    symrefs: Mapping[str, str]


class _Budget:
    """A deadline and a byte cap shared by every read of one operation."""

    def __init__(self, timeout: float, max_bytes: int, what: str) -> None:
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.read = 0
        self.what = what

    def remaining(self) -> float:
        return max(0.05, self.deadline - time.monotonic())

    def check(self, more: int = 0) -> None:
        if time.monotonic() > self.deadline:
            raise GitTimeoutError(f"{self.what} did not finish within {self.timeout:g}s"
                                  " (spec.timeout)")
        self.read += more
        if self.read > self.max_bytes:
            raise GitLimitError(f"{self.what}: the server sent more than {self.max_bytes}"
                                " bytes")


class _BoundedHttpClient(Urllib3HttpGitClient):
    """dulwich's urllib3 client, every response read through the operation's budget."""

    budget: _Budget

    def _http_request(self, url: str, headers: dict[str, str] | None = None,
                      data: Any = None, raise_for_status: bool = True) -> Any:
        self.budget.check()
        self._timeout = self.budget.remaining()  # connect and each read, never past it
        resp, read = super()._http_request(url, headers, data, raise_for_status)
        budget = self.budget

        def bounded(n: int = -1) -> bytes:
            budget.check()
            chunk: bytes = read(n)
            budget.check(len(chunk))
            return chunk

        return resp, bounded


def _tls_context(auth: GitAuth) -> ssl.SSLContext:
    """The system's roots plus the Secret's ``ca.crt`` and client certificate (without
    either, the process's shared context)."""
    if not auth.ca and not (auth.cert and auth.key):
        return shared_context(verify=True)
    ctx = ssl.create_default_context()
    if auth.ca:
        try:
            ctx.load_verify_locations(cadata=auth.ca.decode("ascii", errors="replace"))
        except (ssl.SSLError, ValueError):
            raise GitAuthError("the Secret's ca.crt is not a PEM certificate bundle") from None
    if auth.cert and auth.key:
        # load_cert_chain reads files only: a private folder, removed at once.
        with tempfile.TemporaryDirectory(prefix="ocigitops-git-tls-") as tmp:
            cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(auth.key)
            cert.write_bytes(auth.cert)
            try:
                ctx.load_cert_chain(str(cert), str(key))
            except (ssl.SSLError, ValueError):
                raise GitAuthError("the Secret's tls.crt/tls.key are not a matching PEM"
                                   " certificate and key") from None
    return ctx


def _pool(remote: Remote) -> urllib3.PoolManager:
    headers: dict[str, str] = {"User-Agent": "git/ocigitops"}
    if remote.auth.bearer_token:
        headers["Authorization"] = f"Bearer {remote.auth.bearer_token}"
    kwargs: dict[str, Any] = {"headers": headers,
                              "retries": urllib3.Retry(total=3, connect=0, read=0,
                                                       redirect=3, status=0)}
    if remote.url.scheme == "https":
        kwargs["ssl_context"] = _tls_context(remote.auth)
    if remote.proxy is not None:
        proxy_headers = None
        if remote.proxy.username:
            proxy_headers = urllib3.make_headers(
                proxy_basic_auth=f"{remote.proxy.username}:{remote.proxy.password or ''}")
        return urllib3.ProxyManager(remote.proxy.address, proxy_headers=proxy_headers,
                                    **kwargs)
    return urllib3.PoolManager(**kwargs)


@contextmanager
def _client(remote: Remote, budget: _Budget) -> Iterator[tuple[GitClient, str]]:
    """A dulwich client for ``remote`` and the path to ask it for."""
    if remote.url.scheme == "ssh":
        vendor = PinnedParamikoVendor(remote.auth, timeout=remote.timeout,
                                      deadline=budget.deadline, max_bytes=budget.max_bytes,
                                      proxy=remote.proxy)
        ssh = SSHGitClient(remote.url.host, port=remote.url.port,
                           username=remote.auth.username or remote.url.user or "git",
                           vendor=vendor, thin_packs=False)  # type: ignore[arg-type]
        yield ssh, remote.url.path
        return
    pool = _pool(remote)
    client = _BoundedHttpClient(remote.url.base + "/", pool_manager=pool,
                                username=remote.auth.username,
                                password=remote.auth.password, thin_packs=False)
    client.budget = budget
    try:
        yield client, remote.url.path
    finally:
        pool.clear()


def _translate(e: BaseException, remote: Remote, what: str) -> OcigitopsError | None:
    """A typed, secret-free error for what dulwich, urllib3 or the socket raised."""
    where = str(remote.url)
    if isinstance(e, HTTPUnauthorized):
        if remote.proxy is not None and remote.url.scheme == "http":
            # A forward proxy answers for the server: tinyproxy, for one, sends 401 (not
            # 407) for wrong proxy credentials, so a 401 here may be either's.
            return GitAuthError(f"{what}: {where} or the proxy refused the credentials"
                                " (HTTP 401): check secretRef and proxySecretRef")
        return GitAuthError(f"{what}: {where} refused the credentials (HTTP 401)")
    if isinstance(e, HTTPProxyUnauthorized):
        return GitAuthError(f"{what}: the proxy refused the credentials (HTTP 407)")
    if isinstance(e, NotGitRepository):
        return RefNotFoundError(f"{what}: {where} is not a Git repository (not found)")
    if isinstance(e, HangupException):
        return GitError(f"{what}: {where} hung up: {str(e)[:300]}")
    if isinstance(e, GitProtocolError):
        text = str(e)
        low = text.lower()
        if "403" in low:
            return GitAuthError(f"{what}: {where} denied access (HTTP 403)")
        if any(w in low for w in ("certificate", "ssl", "tls")):
            return GitUnreachableError(f"{what}: TLS to {remote.url.base} failed: the"
                                       " server certificate is not trusted (ca.crt in the"
                                       " Secret?) or the handshake failed")
        if any(w in low for w in ("connection refused", "max retries", "failed to"
                                  " establish", "name or service", "timed out",
                                  "remote end closed", "connection reset")):
            return GitUnreachableError(f"{what}: cannot reach {remote.url.base}:"
                                       f" {text[:300]}")
        return GitError(f"{what}: {where}: {text[:300]}")
    if isinstance(e, urllib3.exceptions.HTTPError):
        return GitUnreachableError(f"{what}: cannot reach {remote.url.base}:"
                                   f" {type(e).__name__}")
    if isinstance(e, TimeoutError):
        return GitTimeoutError(f"{what}: {where} did not answer within {remote.timeout:g}s")
    if isinstance(e, OSError):
        return GitUnreachableError(f"{what}: cannot reach {remote.url.base}:"
                                   f" {e.strerror or type(e).__name__}")
    return None


@contextmanager
def _errors(remote: Remote, what: str) -> Iterator[None]:
    try:
        yield
    except OcigitopsError:
        raise
    except Exception as e:
        typed = _translate(e, remote, what)
        if typed is None:
            raise GitError(f"{what}: {remote.url}: {type(e).__name__}: {str(e)[:300]}"
                           ) from None
        raise typed from None


def ls_remote(remote: Remote) -> RemoteRefs:
    """The refs of ``remote``: one request over HTTP(S), one session over SSH."""
    budget = _Budget(remote.timeout, MAX_REFS_BYTES, f"listing the refs of {remote.url}")
    with _errors(remote, "ls-remote"), _client(remote, budget) as (client, path):
        result = client.get_refs(path.encode(), protocol_version=0)
    refs = {k.decode("utf-8", "replace"): v.decode("ascii", "replace")
            for k, v in result.refs.items() if v is not None}
    symrefs = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
               for k, v in (result.symrefs or {}).items()}
    return RemoteRefs(refs=refs, symrefs=symrefs)


class _PackWriter:
    """Receives the pack: checks its header's object count, its size and the deadline."""

    def __init__(self, out: Any, budget: _Budget, max_objects: int) -> None:
        self.out = out
        self.budget = budget
        self.max_objects = max_objects
        self.head = b""
        self.size = 0

    def __call__(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.budget.max_bytes:
            raise GitLimitError(f"the pack is larger than {self.budget.max_bytes} bytes")
        self.budget.check()
        if len(self.head) < 12:
            self.head += data[:12 - len(self.head)]
            if len(self.head) == 12:
                if self.head[:4] != b"PACK":
                    raise GitError("the server sent something that is not a Git pack")
                count = int.from_bytes(self.head[8:12], "big")
                if count > self.max_objects:
                    raise GitLimitError(f"the pack holds {count} objects, over the limit of"
                                        f" {self.max_objects}")
        self.out.write(data)
        return len(data)


def fetch_object(remote: Remote, want: str, repo: Repo, *, depth: int | None = 1,
                 max_pack_bytes: int = MAX_PACK_BYTES, max_objects: int = MAX_OBJECTS,
                 max_object: int = MAX_PACK_BYTES, max_total: int = MAX_PACK_BYTES,
                 ) -> int:
    """Fetch ``want`` (a commit or tag object id that the server advertises or allows) and
    what it needs, ``depth`` commits deep (None: full history), into ``repo``'s object
    store; returns the pack's size in bytes.

    The pack is received into a private file, checked by :func:`.pack.check_pack` (object
    count, each object's inflated size against ``max_object``, all of them against
    ``max_total``) and only then indexed.
    """
    budget = _Budget(remote.timeout, max_pack_bytes + MAX_REFS_BYTES,
                     f"fetching {want[:12]} from {remote.url}")
    walker = ObjectStoreGraphWalker([], lambda sha: [], shallow=set())
    wanted = want.encode("ascii")

    def determine_wants(refs: Mapping[Ref, ObjectID], depth: int | None = None,
                        ) -> list[ObjectID]:
        return [ObjectID(wanted)]

    def progress(_: bytes) -> None:
        budget.check()

    with tempfile.TemporaryFile(prefix="ocigitops-pack-") as raw:
        writer = _PackWriter(raw, budget, max_objects)
        with _errors(remote, "fetch"), _client(remote, budget) as (client, path):
            client.fetch_pack(path, determine_wants, walker, writer, progress=progress,
                              depth=depth, protocol_version=0)
        if not writer.size:
            raise GitError(f"fetch: {remote.url} sent no pack for {want[:12]}")
        raw.seek(0)
        check_pack(raw, max_object=max_object, max_total=max_total,
                   max_objects=max_objects, deadline=budget.deadline)
        raw.seek(0)
        f, commit, abort = repo.object_store.add_pack()
        try:
            while chunk := raw.read(1024 * 1024):
                f.write(chunk)
            with _errors(remote, "fetch"):
                commit()
        except BaseException:
            with suppress(Exception):
                abort()
            raise
    return writer.size


#: Shared with tests: what a :class:`Repo` needs to be closed cleanly.
def open_scratch_repo(path: Path) -> Repo:
    """A new bare repository at ``path`` to fetch into (deleted by the caller)."""
    return Repo.init_bare(str(path), mkdir=True)


__all__ = ["MAX_OBJECTS", "MAX_PACK_BYTES", "Remote", "RemoteRefs", "fetch_object",
           "ls_remote", "open_scratch_repo"]

