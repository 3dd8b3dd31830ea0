"""Async OCI distribution client on httpx.

Written here rather than taken from oras-py (docs/architecture.md decision 3): we need
byte-exact manifest PUTs (the digest is known before sending), image indexes,
``artifactType``, the referrers API with its tag-schema fallback, cross-repository
mounts and an async API that keeps connections alive for the controller.

Layering: ``_send`` does one HTTP exchange with retries for transient failures;
``_request`` adds the authentication dance (bearer challenge, token cached per host and
scope); the public methods speak the distribution API and raise typed errors.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import functools
import json
import logging
import os
import random
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

# Keep httpx's own CLI (~50 ms of imports) out, as ocigitops.cli does: library callers
# that import the registry client first benefit too.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import httpx

from ocigitops import httplog, jsonsafe
from ocigitops.auth import Challenge, CredentialResolver, Credentials, parse_challenge
from ocigitops.digests import check_digest, digest_of, hashed, hasher, is_digest
from ocigitops.errors import (
    AuthenticationError,
    DeadlineExceededError,
    DigestMismatchError,
    NotFoundError,
    OcigitopsError,
    PermissionDeniedError,
    RegistryError,
    RegistryUnreachableError,
    SizeMismatchError,
    UnsupportedError,
)
from ocigitops.mediatypes import INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, OCI_MANIFEST
from ocigitops.reference import Reference, is_loopback
from ocigitops.version import __version__

log = logging.getLogger("ocigitops.registry")

#: Manifests larger than this are refused (containerd uses the same bound).
MAX_MANIFEST_SIZE = 4 * 1024 * 1024
#: Upper bound on referrers collected for one subject (pages are followed until then).
MAX_REFERRERS = 10_000
#: Bounds on what a registry can make us read, whatever it claims (issue 7): a tag-list or
#: token answer, an error body (only its first line is shown), the pages of one listing,
#: the bytes of all pages of one listing, and the tags kept.
MAX_BODY = 4 * 1024 * 1024
MAX_ERROR_BODY = 64 * 1024
MAX_PAGES = 1000
MAX_LISTING_BYTES = 64 * 1024 * 1024
MAX_TAGS = 250_000
#: A descriptor's size must fit in a JSON number Go and JavaScript read exactly.
MAX_DESCRIPTOR_SIZE = 2 ** 53
_READ_CHUNK = 1024 * 1024
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] | None = None
    artifact_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The descriptor as it appears in a manifest (key order as the OCI Go types)."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size}
        if self.annotations:
            out["annotations"] = self.annotations
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    @classmethod
    def from_json(cls, doc: Any) -> Descriptor:
        """Parse a descriptor object, raising ValueError on a malformed one."""
        if not isinstance(doc, dict):
            raise ValueError("descriptor is not an object")
        digest, size = doc.get("digest"), doc.get("size")
        if not is_digest(digest):
            raise ValueError(f"descriptor digest {str(digest)[:100]!r} is not a canonical"
                             " sha256 or sha512 digest")
        # bool is an int in Python but not a JSON number; floats and strings are refused
        # as Go's int64 field refuses them.
        if type(size) is not int or not 0 <= size <= MAX_DESCRIPTOR_SIZE:
            raise ValueError(f"descriptor size {str(size)[:40]!r} is not a non-negative"
                             " integer")
        mt = doc.get("mediaType", "")
        if not isinstance(mt, str):
            raise ValueError("descriptor mediaType is not a string")
        ann = doc.get("annotations")
        return cls(media_type=mt, digest=str(digest), size=size,
                   annotations={str(k): str(v) for k, v in ann.items()}
                   if isinstance(ann, dict) else None,
                   artifact_type=str(doc["artifactType"]) if doc.get("artifactType") else None)


@dataclass(frozen=True)
class Manifest:
    """Raw manifest bytes with the media type and digest the registry gave them."""

    data: bytes
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        """Parse the manifest strictly; raise RegistryError when it is not a JSON object
        (or is ambiguous: duplicate keys, too deep; see :mod:`ocigitops.jsonsafe`)."""
        try:
            return jsonsafe.loads_object(self.data, f"manifest {self.digest}")
        except OcigitopsError as e:
            raise RegistryError(str(e)) from e


@dataclass(frozen=True)
class Referrers:
    """Referrer descriptors of one subject and how they were found."""

    descriptors: list[Descriptor]
    #: ``"api"`` for the referrers API, ``"tag"`` for the tag-schema fallback.
    via: str


@dataclass
class _HostState:
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    failed: dict[str, AuthenticationError] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    basic: bool = False
    referrers_api: bool | None = None

    def cached_token(self, scopes: list[str]) -> str | None:
        """A live token whose scopes cover ``scopes`` (``pull,push`` covers ``pull``)."""
        now = time.monotonic()
        wanted = [_parse_scope(x) for x in scopes]
        for key, (token, expires) in self.tokens.items():
            if expires <= now:
                continue
            have = [_parse_scope(x) for x in key.split(" ") if x]
            if all(any(h[0] == w[0] and w[1] <= h[1] for h in have) for w in wanted):
                return token
        return None


def _parse_scope(scope: str) -> tuple[str, frozenset[str]]:
    resource, _, actions = scope.rpartition(":")
    return resource, frozenset(actions.split(","))


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data`` (:func:`ocigitops.digests.digest_of`)."""
    return digest_of(data)


def fallback_tag(digest: str) -> str:
    """The referrers tag-schema tag of ``digest``: ``sha256-<hex>``."""
    alg, _, hexpart = digest.partition(":")
    return f"{alg}-{hexpart}"


def _error_from_body(body: bytes) -> tuple[str | None, str]:
    try:
        doc = jsonsafe.loads(body, "error body")
        errs = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errs, list) and errs and isinstance(errs[0], dict):
            first = errs[0]
            return (str(first.get("code"))[:100] if first.get("code") else None,
                    " ".join(str(first.get("message") or "").split())[:300])
    except OcigitopsError:
        pass
    text = body.decode(errors="replace").strip().splitlines()
    return None, (text[0][:200] if text else "")


def _decoded(body: bytes, encoding: str, limit: int, what: str) -> bytes:
    """Undo a gzip/deflate Content-Encoding without producing more than ``limit`` bytes.

    We ask for ``identity``; a server that compresses anyway is decoded with a bound, so a
    small compressed answer cannot expand into gigabytes in memory.
    """
    import zlib

    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return body
    if enc not in ("gzip", "x-gzip", "deflate"):
        raise RegistryError(f"{what}: unsupported Content-Encoding {enc[:40]!r}")
    z = zlib.decompressobj(16 + zlib.MAX_WBITS if "gzip" in enc else zlib.MAX_WBITS)
    try:
        out = z.decompress(body, limit + 1)
    except zlib.error as e:
        raise RegistryError(f"{what}: invalid {enc} body: {e}") from e
    if len(out) > limit:
        raise RegistryError(f"{what} is over the {limit}-byte limit once decoded")
    return out


async def _aiter(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    # httpx's async client takes async bodies only; file reads of 1 MiB are short enough
    # to do inline.
    for chunk in chunks:
        yield chunk


def _transient(e: httpx.TransportError) -> bool:
    """Worth retrying? TLS failures and protocol mismatches never heal by retrying, and
    neither does a refused connection or an unknown host name: a registry that is not
    running is reported at once rather than after seconds of silent backoff (issue 9).
    A controller tries again at its next interval anyway."""
    if isinstance(e, httpx.UnsupportedProtocol):
        return False
    import errno
    import socket

    if httplog.cause_errno(e) in (errno.ECONNREFUSED, socket.EAI_NONAME):
        return False
    text = str(e)
    return not any(s in text for s in ("WRONG_VERSION_NUMBER", "CERTIFICATE_VERIFY_FAILED",
                                       "wrong version number", "SSL", "TLSV1_ALERT"))


def _speaks_plain_http(e: BaseException) -> bool:
    """Did a TLS handshake fail because the server answered in plain HTTP?"""
    text = str(e)
    return "WRONG_VERSION_NUMBER" in text or "wrong version number" in text


def _basic(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@functools.cache
def shared_context(*, verify: bool) -> ssl.SSLContext:
    """The process's one TLS context for registries without their own CA or client
    certificate: the system trust store (as docker and containerd use, not certifi's
    bundle, so enterprise CAs installed on the host just work), or, for ``verify=False``,
    none. A context is about a millisecond of OpenSSL work and the controller makes a
    client per reconcile; a context is safe to share between connections. Never change
    the one returned: build your own to add a CA or a client certificate."""
    if verify:
        return ssl.create_default_context()
    # Not create_default_context: it loads the whole trust store (20-40 ms) to trust
    # nothing.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class RegistryClient:
    """One client for any number of registries; use as ``async with RegistryClient() as c``.

    ``insecure`` (True or a set of hosts) selects plain HTTP; everything else is HTTPS
    verified against the system trust store or ``ca_file``, except that a loopback
    registry (``localhost``, ``127.0.0.0/8``, ``::1``) that answers a TLS handshake in
    plain HTTP is then spoken to in plain HTTP, as the Docker engine and
    go-containerregistry (Flux) allow without a flag: traffic that never leaves the
    machine gains nothing from TLS, and a loopback registry with TLS still gets TLS.

    ``timeout`` bounds each connect and each read. ``deadline`` (seconds) bounds the
    whole ``async with`` block: a registry that answers one byte every few seconds gets
    past every per-read timeout, never past the deadline, which ends the block with
    DeadlineExceededError. Synchronous work inside the block (extraction) reads
    :attr:`deadline_at` to stop at the same moment.
    """

    def __init__(
        self,
        credentials: Callable[[str], Credentials | None] | None = None,
        *,
        insecure: bool | Iterable[str] = False,
        ca_file: str | os.PathLike[str] | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff_base: float = 0.25,
        backoff_max: float = 8.0,
        transport: httpx.AsyncBaseTransport | None = None,
        proxy: str | None = None,
        deadline: float | None = None,
        loopback_plain_http: bool = True,
    ) -> None:
        self._deadline = deadline
        #: The Docker rule for loopback registries (class docstring); False holds them to
        #: TLS like any other host.
        self.loopback_plain_http = loopback_plain_http
        self._timeout_cm: asyncio.Timeout | None = None
        #: ``time.monotonic()`` value at which the deadline passes (None: no deadline).
        self.deadline_at: float | None = None
        self._credentials = credentials or CredentialResolver()
        self._insecure_all = insecure is True
        self._insecure_hosts = set() if isinstance(insecure, bool) else set(insecure)
        #: Loopback hosts found to speak plain HTTP (see the class docstring).
        self._plain_loopback: set[str] = set()
        verify: ssl.SSLContext
        if self._insecure_all:
            verify = shared_context(verify=False)  # plain HTTP only: never used for TLS
        elif ca_file or cert_file:
            verify = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            if cert_file:
                verify.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
        else:
            verify = shared_context(verify=True)
        self._http = httpx.AsyncClient(
            verify=verify, timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            # identity: a compressed answer could expand past every bound we set on reads.
            headers={"User-Agent": f"ocigitops/{__version__}", "Accept-Encoding": "identity"},
            transport=transport,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            proxy=proxy,
        )
        httplog.install(self._http)
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._hosts: dict[str, _HostState] = {}
        #: Requests sent, by method (for benchmarks and steady-state accounting).
        self.request_count: dict[str, int] = {}

    async def __aenter__(self) -> RegistryClient:
        if self._deadline is not None:
            self._timeout_cm = asyncio.timeout(self._deadline)
            await self._timeout_cm.__aenter__()
            self.deadline_at = time.monotonic() + self._deadline
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: Any) -> None:
        try:
            if self._timeout_cm is not None:
                await self._timeout_cm.__aexit__(exc_type, exc, tb)
        except TimeoutError as e:
            raise DeadlineExceededError(
                f"registry operations did not finish within {self._deadline:g}s: stopped"
                " (a slow or stalled registry; raise the timeout if it is only slow)") from e
        finally:
            self._timeout_cm = None
            await self.aclose()

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._http.aclose()

    # -- plumbing ---------------------------------------------------------------------

    def base_url(self, host: str) -> str:
        """``scheme://host`` used for the registry ``host``."""
        plain = (self._insecure_all or host in self._insecure_hosts
                 or host in self._plain_loopback)
        return f"{'http' if plain else 'https'}://{host}"

    def _state(self, host: str) -> _HostState:
        return self._hosts.setdefault(host, _HostState())

    async def _read_body(self, resp: httpx.Response, limit: int, what: str, *,
                         truncate: bool = False) -> bytes:
        """Read a streamed body, at most ``limit`` bytes, and close the response.

        Over the limit is an error (with ``truncate``, the rest is dropped: error bodies
        are only shown by their first line). A connection that breaks off is an error too,
        never a short document taken as whole.
        """
        buf = bytearray()
        if resp.is_stream_consumed:  # an in-memory transport (tests) hands bodies read
            chunks: AsyncIterator[bytes] = _aiter(iter([resp.content]))
        else:
            chunks = resp.aiter_raw()
        try:
            async for chunk in chunks:
                buf += chunk
                if len(buf) > limit:
                    if truncate:
                        del buf[limit:]
                        break
                    raise RegistryError(f"{what} is over the {limit}-byte limit")
        except httpx.TransportError as e:
            if not truncate:
                raise RegistryError(f"{what} broke off after {len(buf)} bytes"
                                    f" ({type(e).__name__}): truncated answer") from e
        finally:
            await resp.aclose()
        try:
            return _decoded(bytes(buf), resp.headers.get("Content-Encoding", ""), limit, what)
        except RegistryError:
            if truncate:
                return bytes(buf)
            raise

    @staticmethod
    def _loaded(resp: httpx.Response, body: bytes) -> httpx.Response:
        """A response like ``resp`` whose (already decoded) body is ``body``.

        Content-Length stays as sent (a HEAD answer's is the manifest size) unless the
        body was decoded from a Content-Encoding.
        """
        drop = {"content-encoding", "transfer-encoding"}
        if resp.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
            drop.add("content-length")
        headers = [(k, v) for k, v in resp.headers.multi_items() if k.lower() not in drop]
        return httpx.Response(resp.status_code, headers=headers, content=body,
                              request=resp.request)

    async def _send(self, method: str, url: str, *, headers: dict[str, str],
                    content: bytes | Callable[[], Iterator[bytes]] | None = None,
                    params: dict[str, str] | None = None, stream: bool = False,
                    follow_redirects: bool = True, host: str,
                    max_body: int = MAX_BODY) -> httpx.Response:
        """One exchange, retried on connection errors, 408/429/5xx with bounded backoff.

        The body is always streamed: without ``stream`` it is read here, at most
        ``max_body`` bytes (an error answer's first :data:`MAX_ERROR_BODY` bytes), so
        no answer is ever read whole whatever its size.
        """
        attempt = 0
        if host in self._plain_loopback and url.startswith(f"https://{host}/"):
            url = "http://" + url[len("https://"):]  # found to speak plain HTTP before
        while True:
            body: bytes | AsyncIterator[bytes] | None = (
                _aiter(content()) if callable(content) else content)
            req = self._http.build_request(method, url, headers=headers, content=body,
                                           params=params)
            self.request_count[method] = self.request_count.get(method, 0) + 1
            try:
                resp = await self._http.send(req, stream=True, follow_redirects=follow_redirects)
            except ssl.SSLError as e:
                # TLS 1.3 reports a refused client certificate after the handshake, so it
                # can surface from a read rather than as an httpx ConnectError.
                raise self._unreachable(host, e) from e
            except httpx.TransportError as e:
                if self._fall_back_to_plain(host, url, e):
                    url = "http://" + url[len("https://"):]
                    continue
                if attempt >= self.max_retries or not _transient(e):
                    raise self._unreachable(host, e) from e
                delay = self._backoff(attempt, None)
                log.debug("%s %s: %s (%s), retry %d of %d in %.2fs", method, host,
                          type(e).__name__, str(e).splitlines()[0] if str(e) else "",
                          attempt + 1, self.max_retries, delay)
            else:
                if resp.status_code not in _RETRY_STATUSES or attempt >= self.max_retries:
                    if stream:
                        return resp
                    ok = resp.is_success
                    body = await self._read_body(
                        resp, max_body if ok else MAX_ERROR_BODY,
                        f"answer of {host} to {method} {urlparse(url).path[:200]}",
                        truncate=not ok)
                    return self._loaded(resp, body)
                delay = self._backoff(attempt, _retry_after(resp))
                await resp.aclose()
                log.debug("%s %s: status %d, retry %d of %d in %.2fs", method, host,
                          resp.status_code, attempt + 1, self.max_retries, delay)
            attempt += 1
            await asyncio.sleep(delay)

    def _fall_back_to_plain(self, host: str, url: str, e: BaseException) -> bool:
        """Switch loopback ``host`` to plain HTTP when its TLS handshake got a plain HTTP
        answer (the class docstring says why); True when ``url`` should be resent so."""
        if (not self.loopback_plain_http or not is_loopback(host)
                or not url.startswith(f"https://{host}/") or not _speaks_plain_http(e)):
            return False
        # Concurrent requests may all have tried TLS before the first one found out.
        if host not in self._plain_loopback:
            log.debug("%s is a loopback registry speaking plain HTTP: using http://", host)
            self._plain_loopback.add(host)
        return True

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.backoff_max * 4)
        exp = min(self.backoff_max, self.backoff_base * float(2 ** attempt))
        return exp / 2 + random.uniform(0, exp / 2)

    def _unreachable(self, host: str, e: BaseException) -> RegistryUnreachableError:
        full, text = str(e), httplog.transport_cause(e)
        hint = ""
        if _speaks_plain_http(e):
            hint = " (the registry speaks plain HTTP: pass --insecure-registry)"
        elif "CERTIFICATE_VERIFY_FAILED" in full:
            hint = " (TLS certificate not trusted: pass --ca-file with the registry's CA)"
        elif "BAD_CERTIFICATE" in full or "CERTIFICATE_REQUIRED" in full:
            hint = (" (the registry refused our TLS client certificate, or wants one:"
                    " pass --cert-file and --key-file)")
        elif isinstance(e, httpx.ConnectError):
            hint = " (is it running, and is the address right?)"
        elif isinstance(e, httpx.TimeoutException):
            hint = " (timed out)"
        return RegistryUnreachableError(
            f"cannot reach registry {host}: {text}{hint}",
            url=self.base_url(host))

    async def _token(self, host: str, challenge: Challenge, scopes: list[str],
                     creds: Credentials | None) -> str:
        realm = challenge.params.get("realm")
        if not realm:
            raise AuthenticationError(f"registry {host} sent a bearer challenge without a realm")
        params: list[tuple[str, str | int | float | bool | None]] = []
        if challenge.params.get("service"):
            params.append(("service", challenge.params["service"]))
        for s in scopes:
            params.append(("scope", s))
        auth: tuple[str, str] | None = None
        if creds and creds.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                    "client_id": "ocigitops", "service": challenge.params.get("service", ""),
                    "scope": " ".join(scopes)}
            req = self._http.build_request("POST", realm, data=form)
        else:
            auth = (creds.username, creds.password) if creds and creds.username else None
            req = self._http.build_request("GET", realm, params=params)
        try:
            streamed = await self._http.send(req, stream=True, auth=auth)
            body = await self._read_body(streamed, 1024 * 1024, f"token answer of {host}",
                                         truncate=not streamed.is_success)
        except httpx.TransportError as e:
            raise self._unreachable(urlparse(realm).netloc, e) from e
        resp = self._loaded(streamed, body)
        if resp.status_code in (401, 403):
            raise AuthenticationError(
                f"registry {host} refused the credentials"
                f"{' for ' + creds.username if creds and creds.username else ''}"
                f" (token service answered {resp.status_code}): check --creds or docker login",
                status=resp.status_code, code="UNAUTHORIZED")
        if resp.status_code != 200:
            raise AuthenticationError(
                f"token service of {host} answered {resp.status_code}",
                status=resp.status_code)
        try:
            doc = jsonsafe.loads_object(resp.content, f"token answer of {host}")
            token = str(doc.get("token") or doc.get("access_token") or "")
        except OcigitopsError as e:
            raise AuthenticationError(f"token service of {host} returned invalid JSON") from e
        if not token:
            raise AuthenticationError(f"token service of {host} returned no token")
        return token

    async def _request(self, method: str, host: str, path: str, *, scopes: list[str],
                       headers: dict[str, str] | None = None,
                       content: bytes | Callable[[], Iterator[bytes]] | None = None,
                       params: dict[str, str] | None = None, stream: bool = False,
                       follow_redirects: bool = True, absolute_url: str | None = None,
                       max_body: int = MAX_BODY) -> httpx.Response:
        """Send with authentication: reuse a cached token, answer one challenge, retry once."""
        state = self._state(host)
        url = absolute_url or self.base_url(host) + path
        scope_key = " ".join(sorted(scopes))
        hdrs = dict(headers or {})
        creds: Credentials | None = None
        cached = state.cached_token(scopes)
        if cached:
            hdrs["Authorization"] = f"Bearer {cached}"
        elif state.basic:
            creds = self._credentials(host)
            if creds and creds.username:
                hdrs["Authorization"] = _basic(creds)
        resp = await self._send(method, url, headers=hdrs, content=content, params=params,
                                stream=stream, follow_redirects=follow_redirects, host=host,
                                max_body=max_body)
        if resp.status_code != 401:
            return resp
        header = resp.headers.get("WWW-Authenticate", "")
        await resp.aclose()
        challenge = parse_challenge(header) if header else Challenge("", {})
        if creds is None:
            creds = self._credentials(host)
        if challenge.scheme == "bearer":
            token = await self._token_once(host, state, scope_key, challenge, scopes, creds)
            hdrs["Authorization"] = f"Bearer {token}"
        elif challenge.scheme == "basic" and creds and creds.username:
            state.basic = True
            hdrs["Authorization"] = _basic(creds)
        else:
            raise AuthenticationError(
                f"registry {host} requires authentication: pass --creds user:password or run"
                " docker login", status=401, code="UNAUTHORIZED", url=url)
        resp = await self._send(method, url, headers=hdrs, content=content, params=params,
                                stream=stream, follow_redirects=follow_redirects, host=host,
                                max_body=max_body)
        if resp.status_code == 401:
            await resp.aclose()
            who = f" for user {creds.username!r}" if creds and creds.username else ""
            raise AuthenticationError(
                f"registry {host} refused the credentials{who}: check --creds or docker login",
                status=401, code="UNAUTHORIZED", url=url)
        return resp

    async def _token_once(self, host: str, state: _HostState, scope_key: str,
                          challenge: Challenge, scopes: list[str],
                          creds: Credentials | None) -> str:
        """Fetch a token for ``scopes`` once, however many requests wait for it.

        Concurrent requests share one token request; a refusal is remembered for the
        life of the client so a wrong password costs one round trip, not one per request.
        """
        lock = state.locks.setdefault(scope_key, asyncio.Lock())
        async with lock:
            if scope_key in state.failed:
                raise state.failed[scope_key]
            cached = state.cached_token(scopes)
            if cached:
                return cached
            if creds and creds.registry_token and not creds.username:
                token = creds.registry_token
            else:
                try:
                    token = await self._token(host, challenge, scopes, creds)
                except AuthenticationError as e:
                    state.failed[scope_key] = e
                    raise
            state.tokens[scope_key] = (token, time.monotonic() + 240.0)
            return token

    async def _raise_for(self, resp: httpx.Response, what: str, host: str) -> None:
        if resp.is_success:
            return
        try:
            body = resp.content[:MAX_ERROR_BODY]
        except httpx.ResponseNotRead:
            body = await self._read_body(resp, MAX_ERROR_BODY, what, truncate=True)
        code, message = _error_from_body(body)
        detail = f"{code}: {message}" if code else (message or f"HTTP {resp.status_code}")
        text = f"{what} on {host}: {detail}"
        cls: type[RegistryError] = RegistryError
        if resp.status_code == 404:
            cls = NotFoundError
        elif resp.status_code == 401:
            cls = AuthenticationError
        elif resp.status_code == 403:
            cls = PermissionDeniedError
            text += " (access denied: check the credentials' permissions)"
        elif resp.status_code in (405, 501):
            cls = UnsupportedError
        raise cls(text, status=resp.status_code, code=code, url=str(resp.request.url))

    @staticmethod
    def _scopes(ref: Reference, push: bool = False) -> list[str]:
        return [f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"]

    # -- API --------------------------------------------------------------------------

    async def ping(self, host: str) -> None:
        """Check that ``host`` answers the ``/v2/`` endpoint (authentication included)."""
        resp = await self._request("GET", host, "/v2/", scopes=[])
        await self._raise_for(resp, "ping", host)

    async def head_manifest(self, ref: Reference) -> Descriptor:
        """HEAD the manifest of ``ref`` (falling back to GET when HEAD lacks a digest).

        A digest in ``ref`` is the digest: an answer naming another one raises
        DigestMismatchError, never replaces it. A digest learned from a tag is only a
        claim until the manifest bytes fetched by it hash to it (:meth:`get_manifest`,
        or :meth:`resolve`, which does both).
        """
        resp = await self._request(
            "HEAD", ref.api_host, f"/v2/{ref.repository}/manifests/{ref.identifier}",
            scopes=self._scopes(ref), headers={"Accept": ", ".join(MANIFEST_TYPES)})
        if resp.status_code == 404:
            raise NotFoundError(f"{ref} not found: MANIFEST_UNKNOWN", status=404,
                                code="MANIFEST_UNKNOWN")
        await self._raise_for(resp, f"HEAD {ref}", ref.api_host)
        digest = resp.headers.get("Docker-Content-Digest", "").strip()
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            size = int(resp.headers.get("Content-Length", "0") or 0)
        except ValueError:
            size = -1
        if not digest or not media_type or not 0 <= size <= MAX_MANIFEST_SIZE:
            m = await self.get_manifest(ref)
            return Descriptor(m.media_type, m.digest, len(m.data))
        check_digest(digest, f"digest the registry {ref.api_host} named for {ref}")
        if ref.digest and digest != ref.digest:
            raise DigestMismatchError(
                f"registry {ref.api_host} answered {digest} for {ref}: a pinned digest is"
                " never replaced by the registry's answer")
        return Descriptor(media_type, digest, size)

    async def resolve(self, ref: Reference) -> Manifest:
        """The manifest ``ref`` names, fetched by digest and checked against it.

        With a tag: HEAD gives the digest, then the manifest is fetched by that digest and
        its bytes must hash to it; with a digest: the manifest bytes must hash to that one.
        What callers verify, sign or store is therefore always ``Manifest.digest``, and
        its size and media type come from the bytes, not from headers.
        """
        if ref.digest:
            return await self.get_manifest(ref)
        desc = await self.head_manifest(ref)
        return await self.get_manifest(ref.with_digest(desc.digest))

    async def get_manifest(self, ref: Reference, *,
                           accept: Iterable[str] = MANIFEST_TYPES) -> Manifest:
        """GET a manifest; the digest is computed locally and checked against a pinned ref."""
        resp = await self._request(
            "GET", ref.api_host, f"/v2/{ref.repository}/manifests/{ref.identifier}",
            scopes=self._scopes(ref), headers={"Accept": ", ".join(accept)}, stream=True)
        try:
            if resp.status_code == 404:
                raise NotFoundError(f"{ref} not found: MANIFEST_UNKNOWN (no such tag or"
                                    " digest in the repository)", status=404,
                                    code="MANIFEST_UNKNOWN")
            await self._raise_for(resp, f"GET {ref}", ref.api_host)
            declared = resp.headers.get("Content-Length", "0") or "0"
            if not declared.isdigit() or int(declared) > MAX_MANIFEST_SIZE:
                raise RegistryError(f"manifest {ref} is {declared[:20]} bytes, over the"
                                    f" {MAX_MANIFEST_SIZE}-byte limit")
        except BaseException:
            await resp.aclose()
            raise
        data = await self._read_body(resp, MAX_MANIFEST_SIZE, f"manifest {ref}")
        digest = digest_of(data, ref.digest or "sha256:")
        if ref.digest and ref.digest != digest:
            raise DigestMismatchError(f"manifest {ref} hashes to {digest}: the registry"
                                      " returned different content than requested")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        if not media_type or media_type not in MANIFEST_TYPES:
            try:
                doc = jsonsafe.loads(data, f"manifest {ref}")
            except OcigitopsError:
                doc = None
            if isinstance(doc, dict) and isinstance(doc.get("mediaType"), str):
                media_type = doc["mediaType"] or media_type
        return Manifest(data=data, media_type=media_type, digest=digest)

    async def put_manifest(self, ref: Reference, data: bytes, media_type: str,
                           tag: str | None = None) -> tuple[str, bool]:
        """PUT ``data`` exactly as given under ``tag`` (or its digest).

        Returns the digest and whether the registry acknowledged a ``subject`` with the
        ``OCI-Subject`` header (meaning it maintains the referrers itself).
        """
        digest = sha256_digest(data)
        if len(data) > MAX_MANIFEST_SIZE:
            raise RegistryError(f"manifest is {len(data)} bytes, over the"
                                f" {MAX_MANIFEST_SIZE}-byte limit")
        target = tag or digest
        resp = await self._request(
            "PUT", ref.api_host, f"/v2/{ref.repository}/manifests/{target}",
            scopes=self._scopes(ref, push=True), headers={"Content-Type": media_type},
            content=data)
        await self._raise_for(resp, f"PUT manifest {ref.name}:{target}", ref.api_host)
        returned = resp.headers.get("Docker-Content-Digest")
        if returned and returned != digest:
            raise DigestMismatchError(f"registry stored the manifest as {returned}, expected"
                                      f" {digest}: it rewrote the bytes")
        return digest, bool(resp.headers.get("OCI-Subject"))

    async def delete_manifest(self, ref: Reference) -> None:
        """DELETE a manifest by digest (registries may refuse tags or deletion)."""
        resp = await self._request(
            "DELETE", ref.api_host, f"/v2/{ref.repository}/manifests/{ref.identifier}",
            scopes=[f"repository:{ref.repository}:delete", *self._scopes(ref, push=True)])
        await self._raise_for(resp, f"DELETE {ref}", ref.api_host)

    async def blob_exists(self, ref: Reference, digest: str, *, push: bool = False) -> bool:
        """HEAD a blob (``push`` asks for the push scope, to share the push's token)."""
        resp = await self._request("HEAD", ref.api_host,
                                   f"/v2/{ref.repository}/blobs/{digest}",
                                   scopes=self._scopes(ref, push=push))
        if resp.status_code == 404:
            return False
        await self._raise_for(resp, f"HEAD blob {digest}", ref.api_host)
        return True

    async def push_blob(self, ref: Reference, digest: str, size: int, source: bytes | Path, *,
                        mount_from: str | None = None, chunk_size: int | None = None,
                        progress: ProgressFn | None = None, check_exists: bool = True) -> str:
        """Upload a blob unless present. Returns ``"exists"``, ``"mounted"`` or ``"uploaded"``.

        ``chunk_size`` selects chunked (PATCH) upload; otherwise one monolithic PUT.
        ``mount_from`` asks the registry to mount the blob from another repository.
        """
        host = ref.api_host
        if check_exists and await self.blob_exists(ref, digest, push=True):
            if progress:
                progress(size)
            return "exists"
        scopes = self._scopes(ref, push=True)
        params: dict[str, str] = {}
        if mount_from:
            params = {"mount": digest, "from": mount_from}
            scopes = [*scopes, f"repository:{mount_from}:pull"]
        resp = await self._request("POST", host, f"/v2/{ref.repository}/blobs/uploads/",
                                   scopes=scopes, params=params or None,
                                   headers={"Content-Length": "0"})
        if mount_from and resp.status_code == 201:
            if progress:
                progress(size)
            return "mounted"
        if resp.status_code != 202:
            await self._raise_for(resp, f"start upload of {digest}", host)
            raise RegistryError(f"start upload of {digest} on {host}: unexpected status"
                                f" {resp.status_code}", status=resp.status_code)
        location = self._location(resp, host)

        def chunks(start: int = 0, end: int | None = None) -> Iterator[bytes]:
            stop = size if end is None else end
            if isinstance(source, bytes):
                for off in range(start, stop, _READ_CHUNK):
                    piece = source[off:min(stop, off + _READ_CHUNK)]
                    if progress:
                        progress(len(piece))
                    yield piece
                return
            with open(source, "rb") as fh:
                fh.seek(start)
                remaining = stop - start
                while remaining > 0:
                    piece = fh.read(min(_READ_CHUNK, remaining))
                    if not piece:
                        break
                    remaining -= len(piece)
                    if progress:
                        progress(len(piece))
                    yield piece

        if chunk_size:
            offset = 0
            while offset < size:
                end = min(size, offset + chunk_size)
                resp = await self._request(
                    "PATCH", host, "", scopes=scopes, absolute_url=location,
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Range": f"{offset}-{end - 1}",
                             "Content-Length": str(end - offset)},
                    content=functools.partial(chunks, offset, end))
                if resp.status_code != 202:
                    await self._raise_for(resp, f"upload chunk of {digest}", host)
                location = self._location(resp, host)
                offset = end
            final_body: bytes | Callable[[], Iterator[bytes]] = b""
            final_headers = {"Content-Length": "0"}
        else:
            final_body = chunks
            final_headers = {"Content-Type": "application/octet-stream",
                             "Content-Length": str(size)}
        sep = "&" if "?" in location else "?"
        resp = await self._request("PUT", host, "", scopes=scopes,
                                   absolute_url=f"{location}{sep}digest={digest}",
                                   headers=final_headers, content=final_body)
        if resp.status_code not in (201, 204):
            await self._raise_for(resp, f"finish upload of {digest}", host)
        return "uploaded"

    def _location(self, resp: httpx.Response, host: str) -> str:
        loc = resp.headers.get("Location")
        if not loc:
            raise RegistryError(f"registry {host} started an upload without a Location header")
        return str(urljoin(self.base_url(host) + "/", str(loc)))

    async def stream_blob(self, ref: Reference, desc: Descriptor) -> AsyncIterator[bytes]:
        """Stream a blob, verifying size and digest as the last chunk arrives.

        A short or long body raises SizeMismatchError, a wrong hash DigestMismatchError:
        callers must treat everything received as untrusted until the iterator ends.
        """
        resp = await self._request("GET", ref.api_host,
                                   f"/v2/{ref.repository}/blobs/{desc.digest}",
                                   scopes=self._scopes(ref), stream=True)
        try:
            if resp.status_code == 404:
                raise NotFoundError(f"blob {desc.digest} not found in {ref.name}: BLOB_UNKNOWN",
                                    status=404, code="BLOB_UNKNOWN")
            await self._raise_for(resp, f"GET blob {desc.digest}", ref.api_host)
            h = hasher(check_digest(desc.digest, "layer digest"))
            got = 0
            try:
                async for chunk in resp.aiter_raw():
                    got += len(chunk)
                    if got > desc.size:
                        raise SizeMismatchError(
                            f"blob {desc.digest} is larger than its descriptor's {desc.size}"
                            " bytes")
                    h.update(chunk)
                    yield chunk
            except httpx.TransportError as e:
                raise SizeMismatchError(
                    f"download of blob {desc.digest} broke off after {got} of {desc.size}"
                    f" bytes ({type(e).__name__}): truncated") from e
            if got != desc.size:
                raise SizeMismatchError(f"blob {desc.digest} is truncated: got {got} of"
                                        f" {desc.size} bytes")
            actual = hashed(h, desc.digest)
            if actual != desc.digest:
                raise DigestMismatchError(f"blob {desc.digest} hashes to {actual}: corrupted"
                                          " or tampered layer")
        finally:
            await resp.aclose()

    async def fetch_blob(self, ref: Reference, desc: Descriptor, max_size: int | None = None,
                         ) -> bytes:
        """Download a small blob into memory (config, signature) with verification."""
        if max_size is not None and desc.size > max_size:
            raise RegistryError(f"blob {desc.digest} is {desc.size} bytes, over the"
                                f" {max_size}-byte limit")
        buf = bytearray()
        async for chunk in self.stream_blob(ref, desc):
            buf += chunk
        return bytes(buf)

    async def list_tags(self, ref: Reference, *, page_size: int = 1000,
                        max_pages: int = MAX_PAGES, max_tags: int = MAX_TAGS) -> list[str]:
        """All tags of the repository, following ``Link`` pagination.

        Some registries page by ``n`` but send no ``Link`` header; a full page without
        one is followed with ``last=<last tag>``, the spec's own parameter. Each page is
        read up to :data:`MAX_BODY` bytes; a page URL seen twice (a loop), more than
        ``max_pages`` pages, :data:`MAX_LISTING_BYTES` in all or more than ``max_tags``
        tags is an error, not an endless listing.
        """
        tags: list[str] = []
        seen: set[str] = set()
        urls: set[str] = set()
        total = 0
        url: str | None = None
        params: dict[str, str] | None = {"n": str(page_size)}
        for _ in range(max_pages):
            resp = await self._request("GET", ref.api_host, f"/v2/{ref.repository}/tags/list",
                                       scopes=self._scopes(ref), params=params,
                                       absolute_url=url)
            if resp.status_code == 404:
                raise NotFoundError(f"repository {ref.name} not found: NAME_UNKNOWN",
                                    status=404, code="NAME_UNKNOWN")
            await self._raise_for(resp, f"list tags of {ref.name}", ref.api_host)
            total += len(resp.content)
            if total > MAX_LISTING_BYTES:
                raise RegistryError(f"tag list of {ref.name} is over {MAX_LISTING_BYTES}"
                                    " bytes")
            try:
                doc = jsonsafe.loads_object(resp.content, f"tag list of {ref.name}")
            except OcigitopsError as e:
                raise RegistryError(str(e)) from e
            raw = doc.get("tags") or []
            if not isinstance(raw, list):
                raise RegistryError(f"tag list of {ref.name} has no list of tags")
            page = [t for t in raw if isinstance(t, str)]
            fresh = [t for t in page if t not in seen]
            tags.extend(fresh)
            seen.update(fresh)
            if len(tags) > max_tags:
                raise RegistryError(f"repository {ref.name} lists more than {max_tags} tags")
            nxt = resp.links.get("next", {}).get("url")
            if nxt:
                url, params = urljoin(self.base_url(ref.api_host) + "/", nxt), None
            elif len(page) >= page_size and fresh:
                url, params = None, {"n": str(page_size), "last": page[-1]}
            else:
                return tags
            key = url or f"last={page[-1]}"
            if key in urls:
                raise RegistryError(f"tag list of {ref.name} pages in a loop ({key[:200]})")
            urls.add(key)
        raise RegistryError(f"tag list of {ref.name} has more than {max_pages} pages")

    async def referrers(self, ref: Reference, subject: str, artifact_type: str | None = None,
                        *, limit: int = MAX_REFERRERS,
                        accept: Callable[[Descriptor], bool] | None = None) -> Referrers:
        """Referrers of ``subject``: the referrers API, else the ``sha256-<hex>`` tag index.

        Anything but a 200 image index from ``/referrers/`` means "unsupported"
        (GHCR redirects to an HTML page). Only descriptors ``accept`` keeps count, and at
        most ``limit`` of them are kept: thousands of unrelated referrers (SBOMs, scans)
        can neither exhaust memory nor push the interesting ones out.
        """
        state = self._state(ref.api_host)
        if state.referrers_api is not False:
            found = await self._referrers_api(ref, subject, artifact_type, limit, accept)
            if found is not None:
                state.referrers_api = True
                return Referrers(found, "api")
            state.referrers_api = False
        index = await self._fallback_index(ref, subject)
        descs = [d for d in index if (not artifact_type or d.artifact_type == artifact_type)
                 and (accept is None or accept(d))]
        return Referrers(descs[:limit], "tag")

    async def _referrers_api(self, ref: Reference, subject: str, artifact_type: str | None,
                             limit: int, accept: Callable[[Descriptor], bool] | None = None,
                             ) -> list[Descriptor] | None:
        params = {"artifactType": artifact_type} if artifact_type else None
        url: str | None = None
        out: list[Descriptor] = []
        urls: set[str] = set()
        total = 0
        for _ in range(MAX_PAGES):
            resp = await self._request(
                "GET", ref.api_host, f"/v2/{ref.repository}/referrers/{subject}",
                scopes=self._scopes(ref), params=params, absolute_url=url,
                headers={"Accept": OCI_INDEX}, follow_redirects=False, stream=True)
            try:
                ctype = resp.headers.get("Content-Type", "").split(";")[0].strip()
                if resp.status_code in (401, 403):
                    await self._raise_for(resp, f"referrers of {subject}", ref.api_host)
                if resp.status_code != 200 or (ctype and ctype != OCI_INDEX):
                    return out or None
            except BaseException:
                await resp.aclose()
                raise
            body = await self._read_body(resp, MAX_MANIFEST_SIZE,
                                         f"referrers page for {subject}")
            total += len(body)
            if total > MAX_LISTING_BYTES:
                raise RegistryError(f"referrers of {subject} are over {MAX_LISTING_BYTES}"
                                    " bytes in all")
            try:
                doc = jsonsafe.loads(body, f"referrers page for {subject}")
            except OcigitopsError:
                return out or None
            if not isinstance(doc, dict) or doc.get("mediaType", OCI_INDEX) != OCI_INDEX:
                return out or None
            filtered = "artifactType" in resp.headers.get("OCI-Filters-Applied", "")
            items = doc.get("manifests")
            for item in items if isinstance(items, list) else []:
                try:
                    d = Descriptor.from_json(item)
                except ValueError:
                    continue
                if artifact_type and not filtered and d.artifact_type != artifact_type:
                    continue
                if accept is not None and not accept(d):
                    continue
                out.append(d)
                if len(out) >= limit:
                    return out
            nxt = resp.links.get("next", {}).get("url")
            if not nxt:
                return out
            url, params = urljoin(self.base_url(ref.api_host) + "/", nxt), None
            if url in urls:
                raise RegistryError(f"referrers of {subject} page in a loop ({url[:200]})")
            urls.add(url)
        raise RegistryError(f"referrers of {subject} have more than {MAX_PAGES} pages")

    async def fallback_referrers(self, ref: Reference, subject: str) -> list[Descriptor]:
        """The ``sha256-<hex>`` tag-schema index alone, even where the API exists.

        Some signers (notation by default) always write that tag; a registry may then
        answer its API without those entries.
        """
        return await self._fallback_index(ref, subject)

    async def _fallback_index(self, ref: Reference, subject: str) -> list[Descriptor]:
        try:
            m = await self.get_manifest(ref.with_tag(fallback_tag(subject)),
                                        accept=INDEX_TYPES)
        except NotFoundError:
            return []
        items = m.json().get("manifests")
        out: list[Descriptor] = []
        for item in items if isinstance(items, list) else []:
            try:
                out.append(Descriptor.from_json(item))
            except ValueError:
                continue
        return out

    async def add_referrer_fallback(self, ref: Reference, subject: str,
                                    referrer: Descriptor) -> None:
        """Append ``referrer`` to the ``sha256-<hex>`` tag index of ``subject`` (no duplicates).

        Read-modify-write: two writers at the same moment can lose an entry, the same
        limitation every client of the tag schema has.
        """
        existing = await self._fallback_index(ref, subject)
        if any(d.digest == referrer.digest for d in existing):
            return
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                 "manifests": [d.to_json() for d in [*existing, referrer]]}
        data = json.dumps(index, separators=(",", ":")).encode()
        await self.put_manifest(ref, data, OCI_INDEX, tag=fallback_tag(subject))

    async def push_referrer(self, ref: Reference, data: bytes, subject: str,
                            artifact_type: str | None, annotations: dict[str, str] | None,
                            ) -> str:
        """PUT a manifest that has a ``subject`` and make it discoverable either way."""
        digest, acknowledged = await self.put_manifest(ref, data, OCI_MANIFEST)
        if not acknowledged:
            await self.add_referrer_fallback(
                ref, subject, Descriptor(OCI_MANIFEST, digest, len(data),
                                         annotations=annotations, artifact_type=artifact_type))
        return digest


def client_from_flags(*, creds: str | None = None, insecure: bool = False,
                      docker_config: Path | None = None, ca_file: str | None = None,
                      cert_file: str | None = None, key_file: str | None = None,
                      timeout: float = 300.0) -> RegistryClient:
    """A client as the registry flags of every command describe it (``--creds``,
    ``--docker-config``, TLS files, ``--timeout``): ``timeout`` is the deadline of the
    whole operation, each read gets at most 60 s of it."""
    from ocigitops.auth import DockerConfig, parse_creds

    configs = [DockerConfig.from_file(docker_config)] if docker_config else []
    resolver = CredentialResolver(creds=parse_creds(creds) if creds else None, configs=configs)
    return RegistryClient(resolver, insecure=insecure, ca_file=ca_file, cert_file=cert_file,
                          key_file=key_file, timeout=min(timeout, 60.0), deadline=timeout)

