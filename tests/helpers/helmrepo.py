"""A real HTTP(S) Helm repository on 127.0.0.1 for the tests: a threaded ``http.server``
serving a folder (an ``index.yaml`` built by the real ``helm repo index``, chart archives
built by ``helm package``), with optional basic auth and TLS from a private CA.

It answers as a static web server does: ``ETag`` (the file's sha256) and
``Last-Modified`` on every file, ``304`` to a matching ``If-None-Match`` or
``If-Modified-Since``, ``401`` without the right credentials. Every request is recorded
(path, whether it carried credentials, the conditional headers, the status), so tests
count them. ``redirects`` maps a path to a URL answered with ``302``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.helpers.tools import tool


@dataclass
class Seen:
    """One request the server answered."""

    path: str
    authorization: str | None
    if_none_match: str | None
    if_modified_since: str | None
    status: int = 0


@dataclass
class HelmRepoServer:
    """How to reach the server, and what it saw."""

    root: Path
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None
    seen: list[Seen] = field(default_factory=list)
    redirects: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """The repository URL (its folder)."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def requests(self, path: str | None = None) -> list[Seen]:
        """The requests seen (for ``path`` only, when given)."""
        with self.lock:
            return [s for s in self.seen if path is None or s.path == path]

    def clear(self) -> None:
        """Forget the requests seen so far."""
        with self.lock:
            self.seen.clear()


def _handler(server: HelmRepoServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # http.server's name for it
            path = self.path.split("?", 1)[0]
            seen = Seen(path, self.headers.get("Authorization"),
                        self.headers.get("If-None-Match"),
                        self.headers.get("If-Modified-Since"))
            with server.lock:
                server.seen.append(seen)
            seen.status = self._answer(path)

        def _answer(self, path: str) -> int:
            if path in server.redirects:
                self.send_response(302)
                self.send_header("Location", server.redirects[path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return 302
            if server.username is not None:
                want = "Basic " + base64.b64encode(
                    f"{server.username}:{server.password}".encode()).decode()
                if self.headers.get("Authorization") != want:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="charts"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return 401
            target = (server.root / path.lstrip("/")).resolve()
            if not target.is_relative_to(server.root.resolve()) or not target.is_file():
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return 404
            data = target.read_bytes()
            etag = '"' + hashlib.sha256(data).hexdigest() + '"'
            mtime = int(target.stat().st_mtime)
            since = self.headers.get("If-Modified-Since")
            inm = self.headers.get("If-None-Match")
            not_modified = inm == etag if inm is not None else bool(
                since and parsedate_to_datetime(since).timestamp() >= mtime)
            if not_modified:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return 304
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", formatdate(mtime, usegmt=True))
            self.end_headers()
            # The client may stop reading (a refused body): expected.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)
            return 200

    return Handler


@contextmanager
def helm_repo_server(root: Path, *, host: str = "127.0.0.1", username: str | None = None,
                     password: str | None = None,
                     tls: tuple[Path, Path] | None = None) -> Iterator[HelmRepoServer]:
    """Serve ``root``; ``tls`` is (certificate, key) for HTTPS."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = int(httpd.server_address[1])
    srv = HelmRepoServer(root=root, host=host, port=port, tls=tls is not None,
                         username=username, password=password)
    httpd.RequestHandlerClass = _handler(srv)
    if tls is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tls[0]), str(tls[1]))
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def helm_env(home: Path) -> dict[str, str]:
    """An environment running helm with private, empty homes."""
    return {**os.environ, "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}


def helm(*args: str, home: Path, cwd: Path | None = None) -> str:
    """Run the real helm; its stdout (fails the test with stderr on error)."""
    proc = subprocess.run([tool("helm"), *args], cwd=cwd, env=helm_env(home),
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def make_chart(root: Path, name: str, version: str, *, values: str = "replicas: 1\n",
               extra: dict[str, str] | None = None) -> Path:
    """A small chart folder ``root/name`` (a ConfigMap template reading the values)."""
    d = root / name
    (d / "templates").mkdir(parents=True, exist_ok=True)
    (d / "Chart.yaml").write_text(f"apiVersion: v2\nname: {name}\nversion: {version}\n"
                                  "appVersion: \"1.0\"\ndescription: a test chart\n")
    (d / "values.yaml").write_text(values)
    (d / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  replicas: {{ .Values.replicas | quote }}\n"
        "  chartVersion: {{ .Chart.Version | quote }}\n")
    for rel, text in (extra or {}).items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return d
