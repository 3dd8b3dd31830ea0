"""Bearer-token authentication against a real distribution registry.

The registry (Debian's docker-registry 2.8) runs with ``auth: token`` and verifies real
ES256 JWTs against a root certificate. The token service is a minimal implementation of
the Docker token protocol written for this test (no off-the-shelf token server is
packaged here); it issues exactly the access the request's scopes ask for to the one
valid user, and counts requests so token caching per scope can be checked.
"""

from __future__ import annotations

import base64
import datetime
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from tests.helpers.cli import ocigitops
from tests.helpers.registries import free_port, wait_http
from tests.helpers.tools import debian_registry
from tests.helpers.trees import tree_files
from tests.helpers.vectors import b64url

pytestmark = pytest.mark.integration

USER, PASSWORD = "alice", "wonderland"
SERVICE, ISSUER = "ocigitops-test-registry", "ocigitops-test-token-issuer"


class TokenService:
    """Issues ES256 JWTs with the requested repository access to USER only."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key, self.cert = key, cert
        self.requests: list[dict[str, list[str]]] = []

    def token(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256",
                  "x5c": [base64.b64encode(self.cert.public_bytes(
                      serialization.Encoding.DER)).decode()]}
        claims = {"iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{b64url(json.dumps(header).encode())}." \
                        f"{b64url(json.dumps(claims).encode())}"
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TokenService]]:
    tmp = tmp_path_factory.mktemp("token-registry")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token signer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (tmp / "root.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    service = TokenService(key, cert)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            q = parse_qs(urlparse(self.path).query)
            service.requests.append(q)
            auth = self.headers.get("Authorization", "")
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if auth != expected:
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = json.dumps({"token": service.token(q.get("scope", []))}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    token_port = free_port()
    token_server = ThreadingHTTPServer(("127.0.0.1", token_port), Handler)
    threading.Thread(target=token_server.serve_forever, daemon=True).start()

    port = free_port()
    (tmp / "config.yml").write_text("\n".join([
        "version: 0.1", "log:", "  level: info",
        "storage:", "  filesystem:", f"    rootdirectory: {tmp / 'storage'}",
        "http:", f"  addr: 127.0.0.1:{port}", "  secret: s",
        "auth:", "  token:", f"    realm: http://127.0.0.1:{token_port}/token",
        f"    service: {SERVICE}", f"    issuer: {ISSUER}",
        f"    rootcertbundle: {tmp / 'root.pem'}", ""]))
    log = tmp / "registry.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([debian_registry(), "serve", str(tmp / "config.yml")],
                                stdout=logf, stderr=logf)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/", proc, log)
        yield f"127.0.0.1:{port}", service
    finally:
        proc.terminate()
        proc.wait(10)
        token_server.shutdown()


def _tree(tmp: Path) -> Path:
    root = tmp / "tree"
    root.mkdir()
    (root / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: t\n")
    return root


def test_bearer_push_pull_with_cached_tokens(token_registry: tuple[str, TokenService],
                                             tmp_path: Path) -> None:
    host, service = token_registry
    before = len(service.requests)
    ref = f"oci://{host}/team/app:v1"
    tree = _tree(tmp_path)
    ocigitops("push", "artifact", ref, "--path", str(tree), "--source", "s", "--revision",
              "r", "--insecure-registry", "--creds", f"{USER}:{PASSWORD}")
    push_tokens = service.requests[before:]
    # One push sends many requests (blob HEADs, uploads, manifest PUT) but asks the token
    # service once per scope: the token is cached.
    assert len(push_tokens) == 1, push_tokens
    assert push_tokens[0]["scope"] == ["repository:team/app:pull,push"]
    assert push_tokens[0]["service"] == [SERVICE]

    out = tmp_path / "out"
    ocigitops("pull", "artifact", ref, "--output", str(out), "--insecure-registry",
              "--creds", f"{USER}:{PASSWORD}")
    assert tree_files(out) == tree_files(tree)


def test_bearer_wrong_password(token_registry: tuple[str, TokenService],
                               tmp_path: Path) -> None:
    host, service = token_registry
    before = len(service.requests)
    res = ocigitops("push", "artifact", f"oci://{host}/team/app:v2", "--path",
                    str(_tree(tmp_path)), "--source", "s", "--revision", "r",
                    "--insecure-registry", "--creds", f"{USER}:nope", check=False)
    assert res.returncode != 0
    assert res.stderr.startswith("error: ") and "refused the credentials" in res.stderr
    assert "nope" not in res.stderr  # the password never appears in messages
    assert len(service.requests) - before == 1  # no retry storm on 401


def test_bearer_anonymous_is_refused(token_registry: tuple[str, TokenService],
                                     tmp_path: Path) -> None:
    host, _ = token_registry
    res = ocigitops("pull", "artifact", f"oci://{host}/team/app:v1", "--output",
                    str(tmp_path / "o"), "--insecure-registry",
                    env={"DOCKER_CONFIG": str(tmp_path)}, check=False)
    assert res.returncode != 0 and res.stderr.count("\n") == 1
    assert "refused the credentials" in res.stderr or "requires authentication" in res.stderr
    assert not (tmp_path / "o").exists()
