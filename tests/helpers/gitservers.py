"""Real Git servers on 127.0.0.1 for the GitRepository tests, and repositories to serve.

- :func:`http_server`: Git's own ``git http-backend`` (CGI) behind a small threaded Python
  HTTP server, with basic auth, bearer-token auth or none, optionally TLS (a private CA
  from :func:`tests.helpers.registries.make_tls`) and mutual TLS. It counts the requests
  it serves, per repository, so tests can assert "one request per lookup".
- :func:`ssh_server`: Debian's OpenSSH ``sshd`` on a loopback port, key auth only, its own
  host key, running as the current user.
- :class:`GitRepo`: a repository made with the ``git`` binary (fine in tests, never in the
  controller), with commits and tags signed by SSH keys (``gpg.format=ssh``) or by OpenPGP
  keys in a temporary ``GNUPGHOME``.
"""

from __future__ import annotations

import base64
import getpass
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.helpers.registries import free_port, make_tls, stop_process

GIT = shutil.which("git") or "/usr/bin/git"
SSHD = "/usr/sbin/sshd"  # sshd refuses to start unless run by its absolute path

_ENV = {"GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com",
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0"}


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        input: bytes | None = None) -> str:
    """Run the git binary (tests only); its stdout, stripped."""
    full = {**os.environ, **_ENV, **(env or {})}
    out = subprocess.run([GIT, *args], cwd=cwd, env=full, input=input, capture_output=True,
                         timeout=60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {out.stderr.decode(errors='replace')}")
    return out.stdout.decode().strip()


# -- signing keys --------------------------------------------------------------------------

@dataclass
class SSHKey:
    """An SSH key pair in files (``path`` private, ``path.pub`` public)."""

    path: Path

    @property
    def public(self) -> str:
        """The ``authorized_keys`` line."""
        return self.path.with_suffix(".pub").read_text().strip()


def ssh_key(tmp: Path, name: str = "id", kind: str = "ed25519") -> SSHKey:
    """A new SSH key pair without passphrase."""
    path = tmp / name
    extra = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", name, "-f",
                    str(path)], check=True, timeout=60)
    return SSHKey(path)


@dataclass
class GPGKey:
    """An OpenPGP key in its own GNUPGHOME."""

    home: Path
    fingerprint: str

    @property
    def env(self) -> dict[str, str]:
        """The environment that makes git and gpg use this key's home."""
        return {"GNUPGHOME": str(self.home)}

    def armored_public(self) -> bytes:
        """The armored public key (what ``gpg --export --armor`` prints)."""
        return subprocess.run(["gpg", "--batch", "--export", "--armor", self.fingerprint],
                              env={**os.environ, **self.env}, capture_output=True,
                              check=True, timeout=60).stdout


def gpg_key(tmp: Path, name: str = "Signer", algo: str = "ed25519") -> GPGKey:
    """A new OpenPGP signing key without passphrase, in a new GNUPGHOME under ``tmp``."""
    # gpg-agent's socket path must stay short: keep the home directly under /tmp.
    home = Path(subprocess.run(["mktemp", "-d", "/tmp/gpgXXXXXX"], capture_output=True,
                               check=True).stdout.decode().strip())
    home.chmod(0o700)
    (tmp / f"gnupghome-{name}").write_text(str(home))
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                    "--quick-gen-key", f"{name} <{name.lower()}@example.com>", algo, "sign",
                    "never"], env=env, capture_output=True, check=True, timeout=120)
    out = subprocess.run(["gpg", "--batch", "--with-colons", "--list-secret-keys"], env=env,
                         capture_output=True, check=True, timeout=60).stdout.decode()
    fpr = next(ln.split(":")[9] for ln in out.splitlines() if ln.startswith("fpr:"))
    return GPGKey(home, fpr)


def stop_gpg_agent(key: GPGKey) -> None:
    """Stop the gpg-agent a key's home started, and remove the home."""
    subprocess.run(["gpgconf", "--kill", "all"], env={**os.environ, **key.env},
                   capture_output=True, check=False, timeout=30)
    shutil.rmtree(key.home, ignore_errors=True)


# -- repositories --------------------------------------------------------------------------

@dataclass
class GitRepo:
    """A bare repository (what servers serve) and a work tree that pushes into it."""

    bare: Path
    work: Path

    @classmethod
    def create(cls, root: Path, name: str = "repo", branch: str = "main") -> GitRepo:
        """An empty bare repository ``root/name.git`` and a clone of it."""
        bare = root / f"{name}.git"
        git("init", "-q", "--bare", "-b", branch, str(bare))
        # Served over HTTP: the repository must allow upload-pack (it does by default)
        # and be exportable (GIT_HTTP_EXPORT_ALL in the server).
        work = root / f"{name}-work"
        git("init", "-q", "-b", branch, str(work))
        git("remote", "add", "origin", str(bare), cwd=work)
        return cls(bare, work)

    def write(self, files: dict[str, str | bytes]) -> None:
        """Write files into the work tree (parents created)."""
        for rel, content in files.items():
            p = self.work / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content.encode() if isinstance(content, str) else content)

    def commit(self, message: str = "change", files: dict[str, str | bytes] | None = None, *,
               ssh: SSHKey | None = None, gpg: GPGKey | None = None, branch: str = "main",
               push: bool = True) -> str:
        """Commit everything in the work tree (signed with ``ssh`` or ``gpg`` when given),
        push ``branch``; the commit's hex SHA-1."""
        if files:
            self.write(files)
        git("checkout", "-q", "-B", branch, cwd=self.work)
        git("add", "-A", cwd=self.work)
        git(*_sign_args(ssh, gpg), "commit", "-q", "--allow-empty",
            *(["-S"] if ssh or gpg else []), "-m", message, cwd=self.work,
            env=gpg.env if gpg else None)
        sha = git("rev-parse", "HEAD", cwd=self.work)
        if push:
            git("push", "-q", "-f", "origin", f"{branch}:refs/heads/{branch}", cwd=self.work)
        return sha

    def tag(self, name: str, *, annotated: bool = True, ssh: SSHKey | None = None,
            gpg: GPGKey | None = None, target: str = "HEAD") -> str:
        """Create and push a tag (signed with ``ssh``/``gpg``); the tag ref's object SHA."""
        if ssh or gpg:
            git(*_sign_args(ssh, gpg), "tag", "-f", "-s", name, "-m", f"tag {name}", target,
                cwd=self.work, env=gpg.env if gpg else None)
        elif annotated:
            git("tag", "-f", "-a", name, "-m", f"tag {name}", target, cwd=self.work)
        else:
            git("tag", "-f", name, target, cwd=self.work)
        git("push", "-q", "-f", "origin", f"refs/tags/{name}", cwd=self.work)
        return git("rev-parse", f"refs/tags/{name}", cwd=self.work)

    def push_ref(self, ref: str, target: str = "HEAD") -> None:
        """Push ``target`` to an arbitrary ref (``refs/pull/1/head``)."""
        git("push", "-q", "-f", "origin", f"{target}:{ref}", cwd=self.work)

    def force_branch(self, branch: str, sha: str) -> None:
        """Force-push ``branch`` to an older commit."""
        git("push", "-q", "-f", "origin", f"{sha}:refs/heads/{branch}", cwd=self.work)


def _sign_args(ssh: SSHKey | None, gpg: GPGKey | None) -> list[str]:
    if ssh is not None:
        return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={ssh.path}"]
    if gpg is not None:
        return ["-c", "gpg.format=openpgp", "-c", f"user.signingkey={gpg.fingerprint}"]
    return []


# -- HTTP: git http-backend ----------------------------------------------------------------

@dataclass
class GitHTTPServer:
    """A running ``git http-backend`` server."""

    base: str
    root: Path
    username: str = ""
    password: str = ""
    bearer: str = ""
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    #: Every request served: (method, path with query).
    requests: list[tuple[str, str]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    def url(self, repo: str = "repo") -> str:
        """The clone URL of ``root/<repo>.git``."""
        return f"{self.base}/{repo}.git"

    def count(self, repo: str = "repo") -> int:
        """Requests served for ``repo`` so far."""
        return sum(1 for _, p in self.requests if p.startswith(f"/{repo}.git/"))

    def reset(self) -> None:
        """Forget the requests counted so far."""
        self.requests.clear()


class _Handler(BaseHTTPRequestHandler):
    server_version = "git-http-test/1"
    protocol_version = "HTTP/1.1"
    owner: GitHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _authorized(self) -> bool:
        o = self.owner
        got = self.headers.get("Authorization", "")
        if o.bearer:
            return got == f"Bearer {o.bearer}"
        if o.username:
            want = base64.b64encode(f"{o.username}:{o.password}".encode()).decode()
            return got == f"Basic {want}"
        return True

    def _serve(self) -> None:
        self.owner.requests.append((self.command, self.path))
        if not self._authorized():
            scheme = "Bearer" if self.owner.bearer else 'Basic realm="git"'
            body = b"unauthorized\n"
            self.send_response(401)
            self.send_header("WWW-Authenticate", scheme)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            body = self.rfile.read(length) if length else b""
        env = {**os.environ, "GIT_PROJECT_ROOT": str(self.owner.root),
               "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path, "QUERY_STRING": query,
               "REQUEST_METHOD": self.command, "CONTENT_TYPE":
                   self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
               "REMOTE_ADDR": "127.0.0.1", "REMOTE_USER": self.owner.username or "anon",
               "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        out = subprocess.run([GIT, "http-backend"], input=body, env=env, capture_output=True,
                             timeout=120, check=False).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = out.partition(b"\n\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").splitlines():
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = int(v.strip().split()[0])
            elif k:
                headers.append((k.strip(), v.strip()))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _read_chunked(self) -> bytes:
        out = b""
        while True:
            size = int(self.rfile.readline().strip().split(b";")[0], 16)
            if size == 0:
                self.rfile.readline()
                return out
            out += self.rfile.read(size)
            self.rfile.readline()

    do_GET = _serve
    do_POST = _serve


@contextmanager
def http_server(root: Path, *, username: str = "", password: str = "", bearer: str = "",
                tls: bool = False, mtls: bool = False, port: int = 0,
                ) -> Iterator[GitHTTPServer]:
    """Serve the bare repositories under ``root`` with ``git http-backend``."""
    owner = GitHTTPServer(base="", root=root, username=username, password=password,
                          bearer=bearer)
    handler = type("Handler", (_Handler,), {"owner": owner})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    scheme = "http"
    if tls or mtls:
        # A directory of its own: two servers over one root (tls and mtls) must not
        # overwrite each other's CA.
        certs = Path(tempfile.mkdtemp(prefix=f"tls-{root.name}-", dir=root.parent))
        ca, cert, key = make_tls(certs)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        if mtls:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(str(ca))
            owner.client_cert, owner.client_key = certs / "client.pem", certs / "client.key"
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        owner.ca_file = ca
        scheme = "https"
    owner.base = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    owner._server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield owner
    finally:
        server.shutdown()
        server.server_close()


# -- SSH: sshd ------------------------------------------------------------------------------

@dataclass
class SSHServer:
    """A running sshd that serves ``git-upload-pack`` for the current user."""

    host: str
    port: int
    user: str
    host_key: SSHKey
    client_key: SSHKey
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log: Path | None = None

    def url(self, bare: Path) -> str:
        """``ssh://user@127.0.0.1:port/abs/path.git``."""
        return f"ssh://{self.user}@{self.host}:{self.port}{bare}"

    @property
    def known_hosts(self) -> str:
        """A known_hosts line pinning this server's host key."""
        kind, blob = self.host_key.public.split()[:2]
        return f"[{self.host}]:{self.port} {kind} {blob}\n"


@contextmanager
def ssh_server(tmp: Path) -> Iterator[SSHServer]:
    """Start sshd on 127.0.0.1 (a free port), key auth for a new client key only."""
    tmp.mkdir(parents=True, exist_ok=True)
    tmp.chmod(0o700)
    host_key = ssh_key(tmp, "host_ed25519")
    client = ssh_key(tmp, "client_ed25519")
    auth = tmp / "authorized_keys"
    auth.write_text(client.public + "\n")
    auth.chmod(0o600)
    if os.geteuid() == 0:
        # Privilege separation needs this directory when sshd runs as root.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = free_port()
    config = tmp / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key.path}",
        f"PidFile {tmp / 'sshd.pid'}", f"AuthorizedKeysFile {auth}",
        "UsePAM no", "StrictModes no", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password", "AllowTcpForwarding no", "X11Forwarding no",
        "PrintMotd no", "LogLevel ERROR", "",
    ]))
    log = tmp / "sshd.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=logf,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(4).startswith(b"SSH-"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"sshd did not start: {log.read_text(errors='replace')}")
        time.sleep(0.1)
    try:
        yield SSHServer("127.0.0.1", port, getpass.getuser(), host_key, client, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# -- HTTP proxy: tinyproxy -----------------------------------------------------------------

@dataclass
class ProxyServer:
    """A running tinyproxy (Debian's) with basic auth: forward proxy for http://, CONNECT
    for https:// and ssh://. ``log()`` is what it printed (one line per request)."""

    address: str
    username: str
    password: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def proxy_server(tmp: Path, *, username: str = "proxyuser",
                 password: str = "proxy-pw") -> Iterator[ProxyServer]:
    """Start tinyproxy on a free loopback port, in the foreground, logging to a file."""
    binary = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
    if not os.path.exists(binary):
        raise RuntimeError("tinyproxy is not installed: run scripts/install-tools debian")
    port = free_port()
    conf = tmp / "tinyproxy.conf"
    conf.write_text(f"Port {port}\nListen 127.0.0.1\nTimeout 30\nLogLevel Info\n"
                    "MaxClients 20\nAllow 127.0.0.1\nDisableViaHeader Yes\n"
                    f"BasicAuth {username} {password}\n")
    log_path = tmp / "tinyproxy.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"tinyproxy did not start: {log_path.read_text()}") from None
                time.sleep(0.05)
        yield ProxyServer(f"http://127.0.0.1:{port}", username, password, log_path)
    finally:
        stop_process(proc, grace=5)
