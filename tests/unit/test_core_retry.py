"""RegistryClient's retry and failure policy against a fault-injecting HTTP server.

The faults here (503/429 on demand, a token service that refuses, a body cut off
after 100 of 1000 bytes, a connection dropped before the answer) cannot be produced
on purpose by a real registry, so each test scripts a tiny ``http.server`` running on
127.0.0.1 in a thread. Everything else (the client, httpx, sockets, TLS) is real.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ocigitops.auth import Credentials
from ocigitops.errors import (
    AuthenticationError,
    DigestMismatchError,
    NotFoundError,
    RegistryError,
    RegistryUnreachableError,
    SizeMismatchError,
)
from ocigitops.reference import Reference, parse_reference
from ocigitops.registry import Descriptor, RegistryClient
from tests.helpers.registries import free_port

pytestmark = pytest.mark.unit

MANIFEST = json.dumps({"schemaVersion": 2,
                       "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.cncf.flux.config.v1+json",
                                  "digest": "sha256:" + "1" * 64, "size": 2},
                       "layers": []}).encode()
BLOB = (bytes(range(256)) * 4)[:1000]
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


@dataclass
class Req:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Responder = Callable[["Handler", Req, int], None]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fault: FaultServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Req(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                  body)
        with self.fault.lock:
            self.fault.requests.append(req)
            n = len(self.fault.requests)
        self.fault.responder(self, req, n)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

    def reply(self, status: int, body: bytes = b"",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def drop(self) -> None:
        """Close the connection without answering."""
        self.close_connection = True


class FaultServer:
    """A scripted HTTP server on 127.0.0.1; ``responder`` decides each answer."""

    def __init__(self) -> None:
        self.requests: list[Req] = []
        self.lock = threading.Lock()
        self.responder: Responder = lambda h, r, n: h.reply(200)
        handler = type("BoundHandler", (Handler,), {"fault": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def count(self, path_part: str = "") -> int:
        with self.lock:
            return sum(1 for r in self.requests if path_part in r.path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fault() -> Iterator[FaultServer]:
    srv = FaultServer()
    try:
        yield srv
    finally:
        srv.close()


def ref_on(host: str) -> Reference:
    return parse_reference(f"oci://{host}/test/repo:v1")


def client(*, creds: Credentials | None = None, insecure: bool = True, max_retries: int = 4,
           backoff_base: float = 0.01, backoff_max: float = 0.05,
           timeout: float = 10.0, loopback_plain_http: bool = True) -> RegistryClient:
    return RegistryClient(lambda host: creds, insecure=insecure, max_retries=max_retries,
                          backoff_base=backoff_base, backoff_max=backoff_max, timeout=timeout,
                          loopback_plain_http=loopback_plain_http)


def run(coro_fn: Callable[[RegistryClient], Any], **kw: Any) -> Any:
    async def go() -> Any:
        async with client(**kw) as c:
            return await coro_fn(c)
    return asyncio.run(go())


def manifest_ok(h: Handler) -> None:
    h.reply(200, MANIFEST, {"Content-Type": "application/vnd.oci.image.manifest.v1+json",
                            "Docker-Content-Digest": "sha256:"
                            + hashlib.sha256(MANIFEST).hexdigest()})


ERROR_BODY = json.dumps({"errors": [{"code": "UNAVAILABLE",
                                     "message": "registry is overloaded"}]}).encode()


# ------------------------------------------------------------------ transient statuses


def test_503_twice_then_success(fault: FaultServer) -> None:
    def responder(h: Handler, r: Req, n: int) -> None:
        if n <= 2:
            h.reply(503, ERROR_BODY, {"Content-Type": "application/json"})
        else:
            manifest_ok(h)
    fault.responder = responder
    m = run(lambda c: c.get_manifest(ref_on(fault.host)))
    assert m.data == MANIFEST
    assert fault.count("/manifests/v1") == 3


@pytest.mark.parametrize("status", [408, 429, 500, 502, 504])
def test_other_transient_statuses_are_retried(fault: FaultServer, status: int) -> None:
    fault.responder = lambda h, r, n: h.reply(status) if n == 1 else manifest_ok(h)
    run(lambda c: c.get_manifest(ref_on(fault.host)))
    assert fault.count() == 2


@pytest.mark.parametrize("status", [400, 403, 404, 405])
def test_client_errors_are_not_retried(fault: FaultServer, status: int) -> None:
    fault.responder = lambda h, r, n: h.reply(status, ERROR_BODY)
    with pytest.raises(RegistryError) as e:
        run(lambda c: c.get_manifest(ref_on(fault.host)))
    assert e.value.status == status
    assert fault.count() == 1


def test_retry_after_is_honoured(fault: FaultServer) -> None:
    fault.responder = lambda h, r, n: (h.reply(429, headers={"Retry-After": "1"}) if n == 1
                                       else manifest_ok(h))
    start = time.monotonic()
    run(lambda c: c.get_manifest(ref_on(fault.host)), backoff_max=2.0)
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed < 3.0
    assert fault.count() == 2


def test_retry_after_http_date_is_honoured(fault: FaultServer) -> None:
    def responder(h: Handler, r: Req, n: int) -> None:
        if n == 1:
            when = email.utils.formatdate(time.time() + 2, usegmt=True)
            h.reply(503, headers={"Retry-After": when})
        else:
            manifest_ok(h)
    fault.responder = responder
    start = time.monotonic()
    run(lambda c: c.get_manifest(ref_on(fault.host)), backoff_max=2.0)
    # second resolution of the date: at least ~1 s, bounded by backoff_max * 4
    assert 0.9 <= time.monotonic() - start < 4.0


def test_retry_after_is_bounded(fault: FaultServer) -> None:
    fault.responder = lambda h, r, n: (h.reply(429, headers={"Retry-After": "3600"}) if n <= 2
                                       else manifest_ok(h))
    start = time.monotonic()
    run(lambda c: c.get_manifest(ref_on(fault.host)), backoff_max=0.05)
    # an hour was asked for twice; the client waits at most 4 * backoff_max each time
    assert time.monotonic() - start < 1.5
    assert fault.count() == 3


def test_5xx_forever_gives_up_after_max_retries(fault: FaultServer) -> None:
    fault.responder = lambda h, r, n: h.reply(503, ERROR_BODY,
                                              {"Content-Type": "application/json"})
    start = time.monotonic()
    with pytest.raises(RegistryError) as e:
        run(lambda c: c.get_manifest(ref_on(fault.host)), max_retries=3)
    assert time.monotonic() - start < 3.0
    assert fault.count() == 4  # max_retries + 1 attempts
    assert e.value.status == 503
    assert e.value.code == "UNAVAILABLE"
    assert "registry is overloaded" in str(e.value)
    assert fault.host in str(e.value)
    assert not isinstance(e.value, RegistryUnreachableError)


def test_no_retries_when_disabled(fault: FaultServer) -> None:
    fault.responder = lambda h, r, n: h.reply(500)
    with pytest.raises(RegistryError, match="HTTP 500"):
        run(lambda c: c.get_manifest(ref_on(fault.host)), max_retries=0)
    assert fault.count() == 1


def test_dropped_connections_are_retried(fault: FaultServer) -> None:
    fault.responder = lambda h, r, n: h.drop() if n <= 2 else manifest_ok(h)
    m = run(lambda c: c.get_manifest(ref_on(fault.host)))
    assert m.data == MANIFEST
    assert fault.count() == 3


def test_retried_upload_resends_the_whole_body(fault: FaultServer) -> None:
    puts: list[int] = []

    def responder(h: Handler, r: Req, n: int) -> None:
        if r.method == "HEAD":
            h.reply(404)
        elif r.method == "POST":
            h.reply(202, headers={"Location": "/v2/test/repo/blobs/uploads/u1"})
        elif r.method == "PUT":
            puts.append(len(r.body))
            if len(puts) == 1:
                h.reply(503)
            else:
                assert r.body == BLOB
                h.reply(201, headers={"Docker-Content-Digest": BLOB_DIGEST})
        else:
            h.reply(400)
    fault.responder = responder
    result = run(lambda c: c.push_blob(ref_on(fault.host), BLOB_DIGEST, len(BLOB), BLOB))
    assert result == "uploaded"
    assert puts == [1000, 1000]


# ------------------------------------------------------------------ authentication


def bearer_challenge(host: str) -> dict[str, str]:
    return {"WWW-Authenticate": f'Bearer realm="http://{host}/token",service="fault-test"'}


def test_token_service_refusal_is_one_error_without_storm(fault: FaultServer) -> None:
    def responder(h: Handler, r: Req, n: int) -> None:
        if r.path.startswith("/token"):
            h.reply(401, b'{"details":"bad credentials"}')
        else:
            h.reply(401, ERROR_BODY, bearer_challenge(fault.host))
    fault.responder = responder
    creds = Credentials(username="alice", password="wrong-SECRET")
    with pytest.raises(AuthenticationError) as e:
        run(lambda c: c.get_manifest(ref_on(fault.host)), creds=creds)
    message = str(e.value)
    assert "refused the credentials for alice" in message
    assert "token service answered 401" in message
    assert "SECRET" not in message
    # one registry request, one token request: no retry storm
    assert fault.count("/v2/") == 1
    assert fault.count("/token") == 1
    token_req = next(r for r in fault.requests if r.path.startswith("/token"))
    assert token_req.headers["authorization"].startswith("Basic ")
    assert "service=fault-test" in token_req.path
    assert "scope=repository%3Atest%2Frepo%3Apull" in token_req.path


def test_bearer_token_is_fetched_once_and_reused(fault: FaultServer) -> None:
    def responder(h: Handler, r: Req, n: int) -> None:
        if r.path.startswith("/token"):
            h.reply(200, b'{"token":"tok-123"}', {"Content-Type": "application/json"})
        elif r.headers.get("authorization") == "Bearer tok-123":
            manifest_ok(h)
        else:
            h.reply(401, headers=bearer_challenge(fault.host))
    fault.responder = responder

    async def twice(c: RegistryClient) -> None:
        await c.get_manifest(ref_on(fault.host))
        await c.get_manifest(ref_on(fault.host))
    run(twice, creds=Credentials(username="alice", password="pw"))
    assert fault.count("/token") == 1
    assert fault.count("/manifests/") == 3  # challenge, answer, then cached token


def test_wrong_basic_credentials_fail_after_one_retry(fault: FaultServer) -> None:
    fault.responder = lambda h, r, n: h.reply(
        401, ERROR_BODY, {"WWW-Authenticate": 'Basic realm="fault"'})
    with pytest.raises(AuthenticationError, match="refused the credentials for user 'bob'"):
        run(lambda c: c.get_manifest(ref_on(fault.host)),
            creds=Credentials(username="bob", password="nope"))
    assert fault.count() == 2
    assert fault.requests[1].headers["authorization"].startswith("Basic ")


def test_anonymous_basic_challenge_asks_for_credentials(fault: FaultServer) -> None:
    fault.responder = lambda h, r, n: h.reply(401, headers={"WWW-Authenticate":
                                                            'Basic realm="fault"'})
    with pytest.raises(AuthenticationError, match="requires authentication: pass --creds"):
        run(lambda c: c.get_manifest(ref_on(fault.host)))
    assert fault.count() == 1


# ------------------------------------------------------------------ unreachable


def test_connection_refused_names_the_host() -> None:
    port = free_port()  # bound and released: nothing listens there
    host = f"127.0.0.1:{port}"

    async def go() -> None:
        async with client(max_retries=2) as c:
            try:
                await c.get_manifest(ref_on(host))
            finally:
                # A refused connection is not retried (issue 9): nothing listens, and
                # backing off would only make a dead registry cost seconds of silence.
                assert c.request_count == {"GET": 1}
    start = time.monotonic()
    with pytest.raises(RegistryUnreachableError) as e:
        asyncio.run(go())
    assert time.monotonic() - start < 1.0
    assert f"cannot reach registry {host}: connection refused" in str(e.value)
    assert "is it running" in str(e.value)
    assert "\n" not in str(e.value)


def test_plain_http_over_https_suggests_insecure_flag(fault: FaultServer) -> None:
    # The fault server is on 127.0.0.1, which speaks plain HTTP without the flag (the
    # loopback rule, issue 9); the rule is turned off to stand for a host elsewhere.
    fault.responder = manifest_ok  # never reached: the TLS handshake fails first
    with pytest.raises(RegistryUnreachableError) as e:
        run(lambda c: c.get_manifest(ref_on(fault.host)), insecure=False, max_retries=1,
            loopback_plain_http=False)
    assert f"cannot reach registry {fault.host}" in str(e.value)
    assert "--insecure-registry" in str(e.value)
    assert e.value.url == f"https://{fault.host}"


def test_loopback_registry_speaks_plain_http_without_the_flag(fault: FaultServer) -> None:
    """As the Docker engine: TLS is tried first, and a loopback registry answering it in
    plain HTTP is then spoken to in plain HTTP (one failed handshake, not one per call)."""
    fault.responder = lambda h, r, n: manifest_ok(h)

    async def go() -> tuple[str, str]:
        async with client(insecure=False, max_retries=0) as c:
            first = await c.get_manifest(ref_on(fault.host))
            again = await c.get_manifest(ref_on(fault.host))
            return first.digest, again.digest
    first, again = asyncio.run(go())
    assert first == again and fault.count() == 2
    assert all(r.path == "/v2/test/repo/manifests/v1" for r in fault.requests)


# ------------------------------------------------------------------ blob bodies


def blob_desc() -> Descriptor:
    return Descriptor("application/octet-stream", BLOB_DIGEST, len(BLOB))


async def read_blob(c: RegistryClient, host: str) -> bytes:
    out = bytearray()
    async for chunk in c.stream_blob(ref_on(host), blob_desc()):
        out += chunk
    return bytes(out)


def test_blob_cut_off_mid_stream(fault: FaultServer) -> None:
    # Content-Length 1000, 100 bytes sent, then the connection is closed
    fault.responder = cut_after_100
    with pytest.raises(SizeMismatchError) as e:
        run(lambda c: read_blob(c, fault.host))
    assert "truncated" in str(e.value)
    assert "of 1000 bytes" in str(e.value)
    assert BLOB_DIGEST in str(e.value)
    assert fault.count() == 1  # a broken body is not retried blindly


def cut_after_100(h: Handler, r: Req, n: int) -> None:
    h.send_response(200)
    h.send_header("Content-Length", "1000")
    h.end_headers()
    h.wfile.write(BLOB[:100])
    h.wfile.flush()
    h.close_connection = True


def test_blob_cut_off_reports_bytes_received(fault: FaultServer) -> None:
    fault.responder = cut_after_100
    with pytest.raises(SizeMismatchError, match="after 100 of 1000 bytes"):
        run(lambda c: read_blob(c, fault.host))


def test_blob_shorter_than_descriptor(fault: FaultServer) -> None:
    fault.responder = lambda h, r, n: h.reply(200, BLOB[:600])
    with pytest.raises(SizeMismatchError, match="is truncated: got 600 of 1000 bytes"):
        run(lambda c: read_blob(c, fault.host))


def test_blob_longer_than_descriptor(fault: FaultServer) -> None:
    fault.responder = lambda h, r, n: h.reply(200, BLOB + b"extra")
    with pytest.raises(SizeMismatchError, match="larger than its descriptor's 1000 bytes"):
        run(lambda c: read_blob(c, fault.host))


def test_blob_with_wrong_content(fault: FaultServer) -> None:
    fault.responder = lambda h, r, n: h.reply(200, bytes(reversed(BLOB)))
    with pytest.raises(DigestMismatchError, match="corrupted or tampered layer"):
        run(lambda c: read_blob(c, fault.host))


def test_blob_404(fault: FaultServer) -> None:
    fault.responder = lambda h, r, n: h.reply(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
    with pytest.raises(NotFoundError, match="BLOB_UNKNOWN"):
        run(lambda c: read_blob(c, fault.host))
    assert fault.count() == 1


def test_tls_handshake_failure_is_not_retried(fault: FaultServer) -> None:
    async def go() -> dict[str, int]:
        async with client(insecure=False, max_retries=4, loopback_plain_http=False) as c:
            with pytest.raises(RegistryUnreachableError):
                await c.get_manifest(ref_on(fault.host))
            return c.request_count
    assert asyncio.run(go()) == {"GET": 1}
