"""A Python callable as Helm 4's post-renderer, through a ``postrenderer/v1`` plugin.

Helm 4 dropped Helm 3's ``--post-renderer <executable>``: ``--post-renderer`` (and the SDK's
``post_renderer`` option) now names a *plugin* of type ``postrenderer/v1``, found in the
plugins directory (``$HELM_PLUGINS``), which Helm runs as a subprocess with the rendered
manifests on stdin and reads the result from stdout (``helm.sh/helm/v4/pkg/postrenderer``,
``internal/plugin/runtime_subprocess.go``). Rendering with Helm, post-processing in Python
and installing the result through a synthetic chart would store a release whose chart is
not the user's, and ``helm upgrade``/``rollback`` by a person would then act on that fake
chart; so we use Helm's own extension point instead:

- :func:`ensure_plugin` writes one static plugin, ``ocigitops-postrender``, whose command is
  a tiny bridge (:data:`BRIDGE`, run by this interpreter, ``-I``) that sends its stdin to a
  Unix socket given as the plugin's argument and prints what comes back;
- :class:`PostRenderServer` listens on that socket, in a private 0700 directory, and runs
  the callable in a thread of this process for each request, bounded in size and time.

So the callable stays a callable (kustomize patches applied in Python, closures, no
serialization), Helm stores the post-rendered manifest as its own, and both engines share
the mechanism: the binary engine points ``HELM_PLUGINS`` at a private directory; the SDK
reads ``HELM_PLUGINS`` from the environment the process *started* with (Go copies it at
load time), so :func:`sdk_plugins_dir` resolves that directory the way Helm does.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from ocigitops.puller.helm.engine import PostRenderer, PostRenderError, one_line

PLUGIN_NAME = "ocigitops-postrender"
MAX_MANIFESTS = 64 * 1024 * 1024
"""Bytes of manifests accepted in either direction (Helm's releases are capped near 1 MiB
compressed per Secret; 64 MiB uncompressed is far above any real chart)."""
IO_TIMEOUT = 300.0
"""Seconds the bridge and the server wait on the socket."""

_HEADER = struct.Struct(">BQ")  # status (0 ok, 1 error), payload length

BRIDGE = r'''"""ocigitops post-render bridge: Helm's stdin -> Unix socket -> stdout (see
ocigitops.puller.helm.postrender). Exit 1 with one line on stderr on failure."""
import socket, struct, sys
MAX = %(max)d
def main():
    if len(sys.argv) != 2:
        sys.exit("ocigitops-postrender: no socket given (only ocigitops runs this plugin)")
    data = sys.stdin.buffer.read(MAX + 1)
    if len(data) > MAX:
        sys.exit("ocigitops-postrender: manifests larger than %%d bytes" %% MAX)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(%(timeout)f)
    s.connect(sys.argv[1])
    s.sendall(struct.pack(">Q", len(data)) + data)
    head = b""
    while len(head) < 9:
        chunk = s.recv(9 - len(head))
        if not chunk:
            sys.exit("ocigitops-postrender: the post-renderer closed the connection")
        head += chunk
    status, size = struct.unpack(">BQ", head)
    if size > MAX:
        sys.exit("ocigitops-postrender: answer too large")
    body = bytearray()
    while len(body) < size:
        chunk = s.recv(min(1 << 20, size - len(body)))
        if not chunk:
            sys.exit("ocigitops-postrender: truncated answer")
        body += chunk
    if status != 0:
        sys.exit("post-renderer: " + body.decode("utf-8", "replace"))
    sys.stdout.buffer.write(bytes(body))
main()
'''


def plugin_files(python: str = sys.executable) -> dict[str, str]:
    """The plugin's files (name -> text): ``plugin.yaml`` and the ``bridge`` script."""
    manifest = (
        "apiVersion: v1\n"
        f"name: {PLUGIN_NAME}\n"
        "version: 0.1.0\n"
        "type: postrenderer/v1\n"
        "runtime: subprocess\n"
        "runtimeConfig:\n"
        "  platformCommand:\n"
        "    - command: \"${HELM_PLUGIN_DIR}/bridge\"\n"
    )
    bridge = f"#!{python} -I\n" + BRIDGE % {"max": MAX_MANIFESTS, "timeout": IO_TIMEOUT}
    return {"plugin.yaml": manifest, "bridge": bridge}


def ensure_plugin(plugins_dir: Path, python: str = sys.executable) -> Path:
    """Write the bridge plugin into ``plugins_dir`` (idempotent, atomic per file); its dir."""
    pdir = plugins_dir / PLUGIN_NAME
    try:
        pdir.mkdir(parents=True, exist_ok=True)
        for name, text in plugin_files(python).items():
            target = pdir / name
            if target.is_file() and target.read_text() == text:
                continue
            fd, tmp = tempfile.mkstemp(dir=pdir, prefix=f".{name}.")
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o755 if name == "bridge" else 0o644)
            os.replace(tmp, target)
    except OSError as e:
        raise PostRenderError(f"cannot write the post-render plugin into {plugins_dir}: "
                              f"{e.strerror or e}; set HELM_PLUGINS to a writable directory "
                              "before the controller starts") from None
    return pdir


def _initial_environ() -> dict[str, str]:
    """The environment this process started with (what Go's runtime copied at load)."""
    try:
        raw = Path("/proc/self/environ").read_bytes()
    except OSError:
        return dict(os.environ)
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def sdk_plugins_dir(env: dict[str, str] | None = None) -> Path:
    """The first plugins directory Helm's SDK searches in this process, resolved as
    ``helm.sh/helm/v4/pkg/helmpath`` does: ``$HELM_PLUGINS``, else
    ``$HELM_DATA_HOME/plugins``, else ``$XDG_DATA_HOME/helm/plugins``, else
    ``~/.local/share/helm/plugins``, from the environment the process started with."""
    env = _initial_environ() if env is None else env
    if env.get("HELM_PLUGINS"):
        return Path(env["HELM_PLUGINS"].split(os.pathsep)[0])
    if env.get("HELM_DATA_HOME"):
        return Path(env["HELM_DATA_HOME"]) / "plugins"
    if env.get("XDG_DATA_HOME"):
        return Path(env["XDG_DATA_HOME"]) / "helm" / "plugins"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "share" / "helm" / "plugins"


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise ConnectionError("the bridge closed the connection")
        buf += chunk
    return bytes(buf)


class PostRenderServer:
    """Serves one post-render callable on a private Unix socket while an operation runs.

    ``with PostRenderServer(fn) as srv:`` then pass ``srv.socket_path`` as the plugin's
    argument. Requests are handled one at a time, each bounded in size and time; the
    first failure of the callable is kept in :attr:`error` (its first line) so the engine
    can raise :class:`PostRenderError` with it.
    """

    def __init__(self, fn: PostRenderer) -> None:
        self._fn = fn
        self._dir = Path(tempfile.mkdtemp(prefix="ocigitops-pr-"))  # 0700
        self.socket_path = str(self._dir / "s")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.socket_path)
        self._sock.listen(4)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="helm-postrender",
                                        daemon=True)
        self.error: str | None = None
        self.calls = 0

    def __enter__(self) -> PostRenderServer:
        self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and remove the socket directory."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.socket_path)
        with contextlib.suppress(OSError):
            self._dir.rmdir()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(IO_TIMEOUT)
        try:
            (size,) = struct.unpack(">Q", _recv_exact(conn, 8))
            if size > MAX_MANIFESTS:
                raise PostRenderError(f"manifests larger than {MAX_MANIFESTS} bytes")
            text = _recv_exact(conn, size).decode()
            self.calls += 1
            out = self._fn(text)
            if not isinstance(out, str):
                raise PostRenderError("the post-renderer returned "
                                      f"{type(out).__name__}, not text")
            body = out.encode()
            if len(body) > MAX_MANIFESTS:
                raise PostRenderError(f"post-rendered manifests larger than {MAX_MANIFESTS} "
                                      "bytes")
            conn.sendall(_HEADER.pack(0, len(body)) + body)
        except Exception as e:  # the callable is user code: any failure is reported
            msg = one_line(f"{type(e).__name__}: {e}" if not isinstance(e, PostRenderError)
                           else str(e))
            if self.error is None:
                self.error = msg
            with contextlib.suppress(OSError):
                data = msg.encode()
                conn.sendall(_HEADER.pack(1, len(data)) + data)


@contextlib.contextmanager
def serving(fn: PostRenderer | None) -> Iterator[PostRenderServer | None]:
    """A :class:`PostRenderServer` for ``fn`` for the duration of the block (None: none)."""
    if fn is None:
        yield None
        return
    with PostRenderServer(fn) as srv:
        yield srv
