"""The Docker backend of ``scan`` (:class:`ocigitops.publisher.trivy.DockerTrivy`) against a
recording Docker Engine API server on a Unix socket.

Why a fake: no Docker engine can run on this machine or in CI (no daemon, no privileges to
start one), so the real engine's side cannot be produced here. The fake speaks just enough
of the Engine API, over a real Unix socket and real HTTP, for the real ``docker`` SDK
(``docker.APIClient``) to drive it: ``/version``, ``/_ping``, image inspect and pull,
container create, start, wait, inspect, logs (the multiplexed stream format) and remove. It
records every request, so the tests assert the request sequence and the create body (the
read-only bind, ``NetworkDisabled``, a read-only root file system, not privileged,
``no-new-privileges``, the caller's uid). What the container prints is a real trivy 0.76
report captured from the real binary (``tests/unit/data/scan``).
"""

from __future__ import annotations

import json
import os
import socketserver
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ocigitops.publisher.trivy import (
    DEFAULT_IMAGE,
    DockerTrivy,
    TrivyError,
    TrivyJob,
    docker_reachable,
    select_backend,
)

DATA = Path(__file__).parent / "data" / "scan"
REPORT = (DATA / "privileged-pod-high-critical.json").read_bytes()
STDERR = (DATA / "trivy-config.stderr").read_bytes()
API = "1.44"
CID = "c0ffee" * 10


@dataclass
class Engine:
    """What the fake engine answers, and what it was asked."""

    image_present: bool = False
    status_code: int = 0
    wait_seconds: float = 0.0
    stdout: bytes = REPORT
    stderr: bytes = STDERR
    requests: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)
    create_body: dict[str, Any] = field(default_factory=dict)
    removed: bool = False


def _frames(stream: int, data: bytes, size: int = 4096) -> bytes:
    """Docker's multiplexed log format: 8-byte header (stream, 0, 0, 0, length) + data."""
    out = b""
    for i in range(0, len(data), size):
        part = data[i:i + size]
        out += struct.pack(">BxxxL", stream, len(part)) + part
    return out


def _handler(engine: Engine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes = b"", ctype: str = "application/json",
                  ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Api-Version", API)
            self.end_headers()
            self.wfile.write(body)

        def _chunked(self, parts: list[bytes]) -> None:
            # The engine streams pull progress as chunked JSON messages.
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in [*parts, b""]:
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")

        def _json(self, status: int, doc: Any) -> None:
            self._send(status, json.dumps(doc).encode())

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            path = url.path.removeprefix(f"/v{API}")
            query = parse_qs(url.query)
            engine.requests.append((method, path, query))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if path == "/version":
                self._json(200, {"ApiVersion": API, "Version": "fake-engine"})
            elif path == "/_ping":
                self._send(200, b"OK", "text/plain")
            elif path == f"/images/{DEFAULT_IMAGE}/json":
                if engine.image_present:
                    self._json(200, {"Id": "sha256:" + "1" * 64})
                else:
                    self._json(404, {"message": f"No such image: {DEFAULT_IMAGE}"})
            elif path == "/images/create":
                engine.image_present = True
                lines = [{"status": "Pulling from aquasec/trivy"}, {"status": "Downloaded"}]
                self._chunked([json.dumps(x).encode() + b"\r\n" for x in lines])
            elif path == "/containers/create":
                engine.create_body = json.loads(body)
                self._json(201, {"Id": CID, "Warnings": []})
            elif path == f"/containers/{CID}/start":
                self._send(204)
            elif path == f"/containers/{CID}/wait":
                time.sleep(engine.wait_seconds)
                self._json(200, {"StatusCode": engine.status_code})
            elif path == f"/containers/{CID}/json":
                self._json(200, {"Id": CID, "Config": {"Tty": False}})
            elif path == f"/containers/{CID}/logs":
                out = query.get("stdout") == ["1"]
                data = _frames(1, engine.stdout) if out else _frames(2, engine.stderr)
                self._send(200, data, "application/vnd.docker.raw-stream")
            elif path == f"/containers/{CID}" and method == "DELETE":
                engine.removed = True
                self._send(204)
            else:
                self._json(404, {"message": f"fake engine: no route {method} {path}"})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_DELETE(self) -> None:
            self._route("DELETE")

    return Handler


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (the bounded wait) resets its connection: expected.
        pass


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[tuple[Engine, str]]:
    """The fake engine on a Unix socket in tmp_path; (its state, its base URL)."""
    state = Engine()
    sock = tmp_path / "docker.sock"
    server = _Server(str(sock), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"unix://{sock}"
    finally:
        server.shutdown()
        server.server_close()


def _tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "pod.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")
    return tree


def _calls(engine: Engine) -> list[tuple[str, str]]:
    return [(m, p) for m, p, _ in engine.requests]


def test_docker_backend_request_sequence_and_create_body(
        engine: tuple[Engine, str], tmp_path: Path) -> None:
    state, url = engine
    tree = _tree(tmp_path)
    out = DockerTrivy(base_url=url).run(TrivyJob("config", tree, "json", ("HIGH", "CRITICAL"),
                                                  timeout=60))
    assert out.stdout == REPORT
    # trivy's harmless offline line is dropped; its INFO lines are kept for --debug.
    assert not any("Falling back" in x for x in out.stderr)
    assert any("Detected config files" in x for x in out.stderr)
    assert _calls(state) == [
        ("GET", "/version"),
        ("GET", f"/images/{DEFAULT_IMAGE}/json"),          # not there: pulled
        ("POST", "/images/create"),
        ("GET", f"/images/{DEFAULT_IMAGE}/json"),
        ("POST", "/containers/create"),
        ("POST", f"/containers/{CID}/start"),
        ("POST", f"/containers/{CID}/wait"),
        ("GET", f"/containers/{CID}/logs"),                # stderr tail
        ("GET", f"/containers/{CID}/json"),                # the SDK's tty check
        ("GET", f"/containers/{CID}/logs"),                # stdout: the report
        ("GET", f"/containers/{CID}/json"),
        ("DELETE", f"/containers/{CID}"),
    ]
    pull = state.requests[2][2]
    assert pull["fromImage"] == ["aquasec/trivy"] and pull["tag"] == ["0.76.0"]
    logs = [q for m, p, q in state.requests if p.endswith("/logs")]
    assert logs[0]["stdout"] == ["0"] and logs[0]["stderr"] == ["1"]
    assert logs[1]["stdout"] == ["1"] and logs[1]["stderr"] == ["0"]
    assert state.requests[-1][2]["force"] == ["True"]

    body = state.create_body
    host = body["HostConfig"]
    assert body["Image"] == DEFAULT_IMAGE
    assert body["NetworkDisabled"] is True
    assert body["User"] == f"{os.getuid()}:{os.getgid()}"
    assert body["Cmd"][0] == "config" and body["Cmd"][-1] == "/scan"
    for flag in ("--skip-check-update", "--skip-version-check", "--disable-telemetry"):
        assert flag in body["Cmd"]
    assert body["Cmd"][body["Cmd"].index("--severity") + 1] == "HIGH,CRITICAL"
    assert host["Binds"] == [f"{tree}:/scan:ro"]
    assert host["ReadonlyRootfs"] is True
    assert host["NetworkMode"] == "none"
    assert not host.get("Privileged")
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["CapDrop"] == ["ALL"]
    assert set(host["Tmpfs"]) == {"/tmp"}
    assert host["Memory"] > 0 and host["PidsLimit"] > 0


def test_docker_backend_convert_mounts_the_report_file(engine: tuple[Engine, str],
                                                       tmp_path: Path) -> None:
    state, url = engine
    state.image_present = True
    report = tmp_path / "report.json"
    report.write_bytes(REPORT)
    state.stdout = (DATA / "privileged-pod-high-critical.sarif").read_bytes()
    out = DockerTrivy(base_url=url).run(TrivyJob("convert", report, "sarif", timeout=60))
    assert out.stdout == state.stdout
    assert ("POST", "/images/create") not in _calls(state)   # present: no pull
    body = state.create_body
    assert body["Cmd"][0] == "convert" and body["Cmd"][-1] == "/scan/report.json"
    assert body["HostConfig"]["Binds"] == [f"{report}:/scan/report.json:ro"]


def test_docker_backend_failure_names_trivys_error_and_removes(
        engine: tuple[Engine, str], tmp_path: Path) -> None:
    state, url = engine
    state.image_present = True
    state.status_code = 1
    state.stderr = (DATA / "trivy-config-missing-target.stderr").read_bytes()
    with pytest.raises(TrivyError) as e:
        DockerTrivy(base_url=url).run(TrivyJob("config", _tree(tmp_path), timeout=60))
    msg = str(e.value)
    assert "exited with status 1" in msg and "no such file or directory" in msg
    assert "Falling back" not in msg and "\n" not in msg
    assert state.removed


def test_docker_backend_wait_is_bounded(engine: tuple[Engine, str], tmp_path: Path) -> None:
    state, url = engine
    state.image_present = True
    state.wait_seconds = 3.0
    t0 = time.monotonic()
    with pytest.raises(TrivyError, match="did not finish within"):
        DockerTrivy(base_url=url, grace=0.0).run(TrivyJob("config", _tree(tmp_path),
                                                         timeout=1))
    assert time.monotonic() - t0 < 3.0
    assert state.removed


def test_docker_backend_output_is_bounded(engine: tuple[Engine, str], tmp_path: Path) -> None:
    state, url = engine
    state.image_present = True
    with pytest.raises(TrivyError, match="more than 1000 bytes"):
        DockerTrivy(base_url=url, max_output=1000).run(TrivyJob("config", _tree(tmp_path),
                                                                timeout=60))
    assert state.removed


def test_unreachable_engine_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(TrivyError, match="not reachable"):
        DockerTrivy(base_url=f"unix://{tmp_path}/nothing.sock").run(
            TrivyJob("config", _tree(tmp_path), timeout=5))


def test_auto_selects_the_engine_when_no_binary(engine: tuple[Engine, str],
                                                tmp_path: Path) -> None:
    state, url = engine
    assert docker_reachable(url)
    assert not docker_reachable(f"unix://{tmp_path}/nothing.sock")
    backend = select_backend("auto", docker_host=url, binary=lambda _: None)
    assert isinstance(backend, DockerTrivy) and backend.base_url == url
    assert ("GET", "/_ping") in _calls(state)
