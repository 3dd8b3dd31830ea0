"""Real registries started on 127.0.0.1 for the tests.

- the embedded registry (ours; referrers API),
- the Debian ``docker-registry`` (distribution 2.8; no referrers API), plain, with
  htpasswd basic auth, and with TLS,
- olareg (a third-party registry with the referrers API). zot is the peer ``testing.md``
  names, but its module host (zotregistry.dev) is not allowed by the module proxy here,
  so olareg is the third-party referrers implementation we test against,
- go-containerregistry's registry (``crane registry serve``; no referrers API there).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.helpers.tools import debian_registry, tool


@dataclass
class Registry:
    """How to reach a test registry."""

    name: str
    host: str
    insecure: bool = True
    username: str = ""
    password: str = ""
    ca_file: str | None = None
    referrers_api: bool = False
    storage: Path | None = None
    log: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def creds(self) -> str | None:
        """``user:pass`` or None."""
        return f"{self.username}:{self.password}" if self.username else None

    def cli_flags(self) -> list[str]:
        """CLI flags to reach this registry."""
        out: list[str] = []
        if self.insecure:
            out.append("--insecure-registry")
        if self.creds:
            out += ["--creds", self.creds]
        if self.ca_file:
            out += ["--ca-file", self.ca_file]
        return out

    def url(self, repo: str) -> str:
        """``oci://host/repo``."""
        return f"oci://{self.host}/{repo}"

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of the server log, for failure messages."""
        if not self.log or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def loopback_alias() -> str | None:
    """A host name other than ``localhost`` that this machine resolves to 127.0.0.1, or
    None. It reaches a test registry while not being a loopback name as written, so the
    loopback rule (plain HTTP without ``--insecure-registry``) does not apply to it."""
    for name in (socket.gethostname(), "localhost.localdomain"):
        try:
            if name != "localhost" and socket.gethostbyname(name) == "127.0.0.1":
                return name
        except OSError:
            continue
    return None


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes] | None, log: Path | None,
              timeout: float = 20.0, verify: ssl.SSLContext | bool = False,
              status: int | None = None) -> None:
    """Wait until ``url`` answers (with ``status``, or any status when None); fail with the
    log tail otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited early (code {proc.returncode}):\n{tail}")
        try:
            got = httpx.get(url, timeout=1.0, verify=verify).status_code
            if status is None or got == status:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{url} did not answer within {timeout}s:\n{tail}")


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def make_tls(tmp: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1/localhost: (ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ocigitops test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    # A client certificate from the same CA, for mutual TLS.
    ckey = ec.generate_private_key(ec.SECP256R1())
    ccert = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ci-client")]))
             .issuer_name(ca_name).public_key(ckey.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
             .sign(ca_key, hashes.SHA256()))
    (tmp / "client.pem").write_bytes(ccert.public_bytes(serialization.Encoding.PEM))
    (tmp / "client.key").write_bytes(ckey.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    return ca_path, cert_path, key_path


@contextmanager
def debian(tmp: Path, *, auth: bool = False, tls: bool = False,
           mtls: bool = False) -> Iterator[Registry]:
    """The Debian docker-registry (distribution 2.8) with optional htpasswd, TLS, and
    mutual TLS (client certificates ``tmp/client.pem``/``client.key`` required)."""
    tls = tls or mtls
    binary = debian_registry()
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    storage = tmp / "storage"
    lines = ["version: 0.1", "log:", "  level: info", "  accesslog:", "    disabled: true",
             "storage:", "  filesystem:", f"    rootdirectory: {storage}",
             "  delete:", "    enabled: true",
             "http:", f"  addr: 127.0.0.1:{port}", "  secret: ocigitops-test-secret"]
    reg = Registry(name="debian" + ("-auth" if auth else "") + ("-tls" if tls else "")
                   + ("-mtls" if mtls else ""),
                   host=f"127.0.0.1:{port}", storage=storage, log=tmp / "registry.log")
    if tls:
        ca, cert, key = make_tls(tmp)
        lines += ["  tls:", f"    certificate: {cert}", f"    key: {key}"]
        if mtls:
            lines += ["    clientcas:", f"      - {ca}"]
        reg.insecure, reg.ca_file = False, str(ca)
    if auth:
        htpasswd = tmp / "htpasswd"
        # distribution accepts bcrypt entries only: Debian's htpasswd -B makes them.
        line = subprocess.run(["htpasswd", "-Bbn", "tester", "s3cret-pw"], check=True,
                              capture_output=True, text=True).stdout.strip()
        htpasswd.write_text(line + "\n")
        lines += ["auth:", "  htpasswd:", "    realm: ocigitops-test", f"    path: {htpasswd}"]
        reg.username, reg.password = "tester", "s3cret-pw"
    cfg = tmp / "config.yml"
    cfg.write_text("\n".join(lines) + "\n")
    assert reg.log is not None
    with open(reg.log, "wb") as logf:
        proc = subprocess.Popen([binary, "serve", str(cfg)], stdout=logf, stderr=logf,
                                env={**os.environ, "OTEL_TRACES_EXPORTER": "none"})
    reg.proc = proc
    scheme = "https" if tls else "http"
    try:
        ctx = ssl.create_default_context(cafile=reg.ca_file) if tls else None
        if ctx is not None and mtls:
            ctx.load_cert_chain(str(tmp / "client.pem"), str(tmp / "client.key"))
        wait_http(f"{scheme}://{reg.host}/v2/", proc, reg.log, verify=ctx or False)
        yield reg
    finally:
        stop_process(proc)


@contextmanager
def _binary_registry(tmp: Path, name: str, argv: list[str],
                     referrers_api: bool) -> Iterator[Registry]:
    """Run a registry binary (``argv`` may use ``{port}``) with its log in ``tmp``."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = tmp / f"{name}.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([a.format(port=port) for a in argv], stdout=logf,
                                stderr=logf)
    reg = Registry(name=name, host=f"127.0.0.1:{port}", referrers_api=referrers_api,
                   log=log, proc=proc)
    try:
        wait_http(f"http://{reg.host}/v2/", proc, log)
        yield reg
    finally:
        stop_process(proc)


@contextmanager
def crane(tmp: Path) -> Iterator[Registry]:
    """go-containerregistry's registry (``crane registry serve``: no referrers API)."""
    (tmp / "blobs").mkdir(parents=True, exist_ok=True)
    with _binary_registry(tmp, "ggcr", [tool("crane"), "registry", "serve", "--address",
                                        "127.0.0.1:{port}", "--disk", str(tmp / "blobs")],
                          referrers_api=False) as reg:
        yield reg


@contextmanager
def olareg(tmp: Path) -> Iterator[Registry]:
    """olareg with the referrers API, storing OCI layouts on disk."""
    (tmp / "store").mkdir(parents=True, exist_ok=True)
    with _binary_registry(tmp, "olareg", [tool("olareg"), "serve", "--addr", "127.0.0.1",
                                          "--port", "{port}", "--dir", str(tmp / "store"),
                                          "--api-delete"], referrers_api=True) as reg:
        yield reg


@contextmanager
def embedded(tmp: Path) -> Iterator[Registry]:
    """Our embedded registry, in a thread of the test process."""
    from ocigitops.regserver import BackgroundRegistry

    tmp.mkdir(parents=True, exist_ok=True)
    with BackgroundRegistry(tmp / "storage") as srv:
        yield Registry(name="embedded", host=srv.host, referrers_api=True,
                       storage=tmp / "storage")
