"""HTTP(S) access to a Helm repository: the index (conditional requests) and chart archives.

What is held to, whatever the server answers:

- **credentials** (basic auth from the HelmRepository's Secret) go only to the scheme,
  host and port of the repository URL, on every request and every redirect hop, unless
  ``passCredentials`` is set (Flux's rule, made strict: a redirect to another host, or
  from https to http, does not get them either);
- **bounded reads**: an answer over its limit is refused (by ``Content-Length`` before a
  byte is read, else while reading, after decoding, so a compressed bomb stops at the
  limit), at most :data:`MAX_REDIRECTS` hops;
- **no ambient configuration**: no proxy variables, no ``.netrc`` (the controller's own
  files must never authenticate a tenant's repository);
- **conditional index requests**: with the ``ETag`` and ``Last-Modified`` of the last
  fetch, an unchanged index costs one request answered ``304 Not Modified``.

The caller bounds the whole operation (``spec.timeout``) with ``asyncio.timeout``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import urljoin, urlsplit

import httpx

from ocigitops import httplog
from ocigitops.chart import CHART_ARCHIVE_MAX
from ocigitops.errors import (
    AuthenticationError,
    CredentialsError,
    NotFoundError,
    OcigitopsError,
    PermissionDeniedError,
    RegistryUnreachableError,
    SizeLimitError,
)
from ocigitops.registry import shared_context

MAX_REDIRECTS = 10
#: Flux's default ``--helm-chart-max-size`` (a chart archive, compressed).
CHART_DOWNLOAD_MAX = CHART_ARCHIVE_MAX
_CHUNK = 256 * 1024


class HelmRepositoryError(OcigitopsError):
    """A Helm repository answered with an error."""


@dataclass(frozen=True)
class BasicAuth:
    """HTTP basic credentials; never shown in ``repr``/``str``."""

    username: str
    password: str = field(repr=False)

    def __str__(self) -> str:
        return f"BasicAuth(username={self.username!r})"


@dataclass(frozen=True)
class TLSMaterial:
    """PEM bytes from ``certSecretRef`` (``ca.crt``, ``tls.crt``, ``tls.key``)."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = field(default=None, repr=False)


def basic_auth_from_secret(data: Mapping[str, bytes], where: str) -> BasicAuth | None:
    """``username``/``password`` of a Secret (both, or neither: Flux's rule)."""
    user, password = data.get("username"), data.get("password")
    if user is None and password is None:
        return None
    if not user or password is None:
        raise CredentialsError(f"{where} must hold both username and password")
    try:
        return BasicAuth(user.decode(), password.decode())
    except UnicodeDecodeError:
        raise CredentialsError(f"{where}: username and password must be UTF-8") from None


def tls_from_secret(data: Mapping[str, bytes], where: str) -> TLSMaterial:
    """``ca.crt``, ``tls.crt`` and ``tls.key`` of a Secret (the last two together)."""
    cert, key = data.get("tls.crt"), data.get("tls.key")
    if (cert is None) != (key is None):
        raise CredentialsError(f"{where} must hold both tls.crt and tls.key, or neither")
    return TLSMaterial(ca=data.get("ca.crt"), cert=cert, key=key)


def ssl_context(tls: TLSMaterial | None) -> ssl.SSLContext:
    """The TLS context: the system's roots plus ``ca.crt``, and the client certificate
    (without either, the process's shared one)."""
    if tls is None or not (tls.ca or tls.cert):
        return shared_context(verify=True)
    ctx = ssl.create_default_context()
    try:
        if tls.ca:
            ctx.load_verify_locations(cadata=tls.ca.decode("ascii", "replace"))
        if tls.cert and tls.key:
            # load_cert_chain reads files only: a private directory, removed at once.
            with tempfile.TemporaryDirectory(prefix="ocigitops-tls-") as tmp:
                cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
                for p, data in ((cert, tls.cert), (key, tls.key)):
                    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as e:
        raise CredentialsError(f"TLS material in the certificate Secret is invalid:"
                               f" {e.__class__.__name__}") from None
    return ctx


def _basic(auth: BasicAuth) -> str:
    token = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()
    return f"Basic {token}"


def _origin(url: str) -> tuple[str, str, int | None]:
    p = urlsplit(url)
    port = p.port or (443 if p.scheme == "https" else 80 if p.scheme == "http" else None)
    return p.scheme, (p.hostname or "").lower(), port


@dataclass(frozen=True)
class Fetched:
    """An answer: the body (empty when not modified) and the validators to send next."""

    modified: bool
    body: bytes = b""
    etag: str | None = None
    last_modified: str | None = None
    #: The URL that answered, after redirects.
    url: str = ""


class HelmHTTP:
    """An HTTP client for one Helm repository (``async with``)."""

    def __init__(self, repository_url: str, *, auth: BasicAuth | None = None,
                 tls: TLSMaterial | None = None, pass_credentials: bool = False,
                 timeout: float = 60.0) -> None:
        self.repository_url = repository_url
        self.auth = auth
        self.pass_credentials = pass_credentials
        self.requests = 0
        self._client = httpx.AsyncClient(verify=ssl_context(tls), follow_redirects=False,
                                         trust_env=False, timeout=timeout)
        httplog.install(self._client)

    async def __aenter__(self) -> HelmHTTP:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._client.aclose()

    def sends_credentials_to(self, url: str) -> bool:
        """Whether a request to ``url`` carries the credentials (same origin as the
        repository, or ``passCredentials``)."""
        if self.auth is None:
            return False
        return self.pass_credentials or _origin(url) == _origin(self.repository_url)

    async def fetch(self, url: str, *, max_bytes: int, what: str, etag: str | None = None,
                    last_modified: str | None = None) -> Fetched:
        """GET ``url`` (following up to :data:`MAX_REDIRECTS` redirects), at most
        ``max_bytes`` of body. With ``etag``/``last_modified``, a ``304`` answer is
        :attr:`Fetched.modified` False. Raises typed errors naming ``what``."""
        headers: dict[str, str] = {"Accept": "*/*", "User-Agent": "ocigitops"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            scheme = urlsplit(current).scheme
            if scheme not in ("http", "https"):
                raise HelmRepositoryError(f"{what}: {scheme or 'no'} scheme in"
                                          f" {httplog.redact_url(current)[:200]}")
            request = self._client.build_request("GET", current, headers=headers)
            if self.auth is not None and self.sends_credentials_to(current):
                request.headers["Authorization"] = _basic(self.auth)
            self.requests += 1
            try:
                resp = await self._client.send(request, stream=True)
            except httpx.TransportError as e:
                host = urlsplit(current).netloc.rpartition("@")[2]
                raise RegistryUnreachableError(
                    f"{what}: cannot reach {host}: {httplog.transport_cause(e)}") from None
            try:
                if resp.status_code in (301, 302, 303, 307, 308):
                    location = resp.headers.get("location")
                    if not location:
                        raise HelmRepositoryError(f"{what}: redirect without a Location")
                    current = urljoin(current, location)
                    continue
                if resp.status_code == 304 and (etag or last_modified):
                    return Fetched(False, etag=resp.headers.get("etag") or etag,
                                   last_modified=resp.headers.get("last-modified")
                                   or last_modified, url=current)
                self._raise_for(resp, what, current)
                body = await self._read(resp, max_bytes, what)
                return Fetched(True, body, etag=resp.headers.get("etag"),
                               last_modified=resp.headers.get("last-modified"), url=current)
            finally:
                await resp.aclose()
        raise HelmRepositoryError(f"{what}: more than {MAX_REDIRECTS} redirects")

    @staticmethod
    def _raise_for(resp: httpx.Response, what: str, url: str) -> None:
        code = resp.status_code
        if code < 300:
            return
        shown = httplog.redact_url(url)[:300]
        if code == 401:
            raise AuthenticationError(f"{what}: {shown} answered 401 Unauthorized (check the"
                                      " credentials in secretRef)", status=code)
        if code == 403:
            raise PermissionDeniedError(f"{what}: {shown} answered 403 Forbidden",
                                        status=code)
        if code == 404:
            raise NotFoundError(f"{what}: {shown} answered 404 Not Found", status=code)
        raise HelmRepositoryError(f"{what}: {shown} answered {code}"
                                  f" {resp.reason_phrase[:60]}")

    @staticmethod
    async def _read(resp: httpx.Response, max_bytes: int, what: str) -> bytes:
        length = resp.headers.get("content-length")
        with contextlib.suppress(ValueError):
            if length is not None and int(length) > max_bytes:
                raise SizeLimitError(f"{what} is {int(length)} bytes, over the"
                                     f" {max_bytes}-byte limit")
        chunks: list[bytes] = []
        total = 0
        async for chunk in resp.aiter_bytes(_CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise SizeLimitError(f"{what} is over the {max_bytes}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)


__all__ = ["CHART_DOWNLOAD_MAX", "MAX_REDIRECTS", "BasicAuth", "Fetched", "HelmHTTP",
           "HelmRepositoryError", "TLSMaterial", "basic_auth_from_secret", "ssl_context",
           "tls_from_secret"]
