"""A registry an attacker controls, for security tests.

The attacker of issue 7 can push anything to the registry and can lie in any HTTP
answer, but holds none of the trusted keys, roots or trust stores. This server is that
registry: a real HTTP server on 127.0.0.1 that forwards every request to a real backend
registry (the embedded one, which holds what the attacker pushed) and lets a test
rewrite any answer on the way back: another ``Docker-Content-Digest``, a slow-drip body,
an endless error body, a self-linking page. Nothing is mocked below HTTP: the client
under test talks to a socket exactly as it would to a hostile registry on the Internet.

Rules are plain callables ``(Request) -> Reply | None``; the first that returns a reply
answers, otherwise the backend does. A reply body may be bytes or an iterator of bytes
(sent as it is produced, so a rule can drip a byte every few seconds or stream gigabytes
without holding them).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass
class Request:
    """What the client sent."""

    method: str
    path: str          # without the query
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    """What the hostile registry answers. ``body`` may be produced lazily."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""
    #: Send Content-Length (only for bytes bodies); iterables are sent close-delimited.
    length: bool = True


Rule = Callable[[Request], "Reply | None"]


@dataclass
class Upstream:
    """A backend answer, read whole (the backend is our own, trusted test registry)."""

    status: int
    headers: dict[str, str]
    body: bytes


class HostileRegistry:
    """A lying proxy in front of ``backend`` (``host:port``, plain HTTP).

    Use as a context manager; ``host`` is what clients connect to. ``rules`` may be
    changed at any time; ``requests`` records every request (method and path with query).
    """

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.rules: list[Rule] = []
        self.requests: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT`` of the hostile registry."""
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    def forward(self, req: Request) -> Upstream:
        """Send ``req`` to the backend and return its answer (for rules that edit it)."""
        conn = http.client.HTTPConnection(self.backend, timeout=30)
        try:
            target = req.path + (f"?{req.query}" if req.query else "")
            headers = {k: v for k, v in req.headers.items()
                       if k.lower() not in ("host", "connection", "accept-encoding")}
            conn.request(req.method, target, body=req.body or None, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            hdrs = {k: v for k, v in resp.getheaders()
                    if k.lower() not in ("transfer-encoding", "connection", "content-length")}
            loc = hdrs.get("Location")
            if loc and loc.startswith(f"http://{self.backend}"):
                hdrs["Location"] = loc.replace(f"http://{self.backend}", "", 1)
            return Upstream(resp.status, hdrs, body)
        finally:
            conn.close()

    def __enter__(self) -> HostileRegistry:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Request(self.command, parts.path, parts.query,
                              {k: v for k, v in self.headers.items()}, body)
                owner.requests.append((self.command, self.path))
                reply: Reply | None = None
                for rule in list(owner.rules):
                    reply = rule(req)
                    if reply is not None:
                        break
                if reply is None:
                    up = owner.forward(req)
                    reply = Reply(up.status, up.headers, up.body)
                self._send(reply)

            def _send(self, reply: Reply) -> None:
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    if isinstance(reply.body, bytes | bytearray):
                        if reply.length and "Content-Length" not in reply.headers:
                            self.send_header("Content-Length", str(len(reply.body)))
                        self.end_headers()
                        if self.command != "HEAD":
                            self.wfile.write(reply.body)
                        return
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    for chunk in reply.body:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


def drip(data: bytes, every: float, stop: threading.Event | None = None) -> Iterator[bytes]:
    """Yield ``data`` one byte at a time, ``every`` seconds apart (a slow-loris body)."""
    for i in range(len(data)):
        if stop is not None and stop.is_set():
            return
        yield data[i:i + 1]
        time.sleep(every)


def endless(chunk: bytes = b"x" * 65536, total: int = 1 << 40) -> Iterator[bytes]:
    """Yield up to ``total`` bytes of ``chunk`` repeated (a body that never ends)."""
    sent = 0
    while sent < total:
        yield chunk
        sent += len(chunk)


def manifest_path(repo: str, ident: str) -> str:
    """``/v2/<repo>/manifests/<ident>``."""
    return f"/v2/{repo}/manifests/{ident}"
