"""A real, local Kubernetes control plane for the e2e tests and ``ocigitops dev cluster``.

``cluster_up`` starts, on 127.0.0.1 and random free ports, the real binaries built by
``scripts/install-tools kubernetes etcd kwok``:

- **etcd**, with its data in the state directory;
- **kube-apiserver**, serving TLS from a test CA made here, authenticating clients by
  certificate (the admin's carries ``O=system:masters``) and ServiceAccount tokens, and
  authorizing with ``Node,RBAC``;
- **kube-controller-manager** (ServiceAccounts, tokens' root CA, Deployments, ReplicaSets,
  garbage collection...) and **kube-scheduler**;
- **kwok**, which simulates the kubelet of a few fake Nodes created here, so Pods are
  scheduled, become Running and Ready, and Deployments become Available.

Everything lives in one state directory: ``pki/`` (CA, serving and client certificates,
the ServiceAccount signing key pair), ``etcd/`` (data), ``logs/<component>.log``,
``pids/<component>.pid``, ``cluster.json`` and ``admin.kubeconfig``. The processes are
detached (their own session), so the cluster outlives the command that started it;
``cluster_down`` stops them (SIGTERM, then SIGKILL after a bound) and removes the data.

Every wait is bounded. A failure raises :class:`DevClusterError` whose message ends
with the log tail of the component that failed.
"""

from __future__ import annotations

import base64
import datetime
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocigitops.errors import OcigitopsError, ToolNotFoundError

DEFAULT_STATE_DIR = Path.home() / ".cache" / "ocigitops" / "devcluster"
"""Where ``ocigitops dev cluster up`` keeps its cluster unless told otherwise."""

INSTALL_HINT = "scripts/install-tools kubernetes etcd kwok"
"""The command that builds every binary this module runs."""

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
"""The processes of a dev cluster, in start order."""

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
FAKE_NODES = ("kwok-node-0", "kwok-node-1")
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

# kwok's upstream "fast" pod stages complete only Pods owned by a Job, so a bare Pod stays
# Running forever. `helm test` runs its test hooks as bare Pods (restartPolicy Never) and
# waits for them to finish: these two stages finish them, and no other Pod (a Deployment's
# stay Running and Ready). A test hook Pod completes with exit code 0 (Succeeded) unless it
# carries HELM_TEST_FAIL_ANNOTATION="true", which makes it fail (exit code 1), so a failing
# `helm test` can be exercised. Written beside the cluster's kubeconfigs and passed to kwok
# as a second --config.
HELM_TEST_FAIL_ANNOTATION = "kwok.ocigitops.dev/test-fail"
_HELM_TEST_STAGE = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: helm-test-pod-{name}
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Running']
    - key: '.metadata.annotations["helm.sh/hook"]'
      operator: 'In'
      values: ['test', 'test-success']
    - key: '.metadata.annotations["{fail}"]'
      operator: '{fail_op}'
      {fail_values}
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      containerStatuses:
      {{{{ range $index, $item := .spec.containers }}}}
      - image: {{{{ $item.image | Quote }}}}
        name: {{{{ $item.name | Quote }}}}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: {code}
            finishedAt: {{{{ $now | Quote }}}}
            reason: {reason}
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      phase: {phase}
"""
KWOK_HELM_TEST_STAGES = "---\n".join([
    _HELM_TEST_STAGE.format(name="succeed", fail=HELM_TEST_FAIL_ANNOTATION,
                            fail_op="DoesNotExist", fail_values="",
                            code=0, reason="Completed", phase="Succeeded"),
    _HELM_TEST_STAGE.format(name="fail", fail=HELM_TEST_FAIL_ANNOTATION, fail_op="In",
                            fail_values="values: ['true']",
                            code=1, reason="Error", phase="Failed"),
])
"""kwok Stages that complete `helm test` hook Pods (see the comment above)."""

# Controllers that only make sense with a cloud provider (none here).
_CLOUD_CONTROLLERS = ("cloud-node-lifecycle-controller", "service-lb-controller",
                      "node-route-controller")
_STOP_GRACE = 10.0
_KILL_GRACE = 5.0
_HTTP_TIMEOUT = 5.0


class DevClusterError(OcigitopsError):
    """The local control plane could not be started, reached or stopped."""


@dataclass(frozen=True)
class Tools:
    """Paths of the binaries a dev cluster runs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path
    kwok_stages: Path


@dataclass
class Cluster:
    """A running dev cluster, as described by its state directory."""

    state_dir: Path
    server: str
    """The API server's URL, ``https://127.0.0.1:PORT``."""
    kubeconfig: Path
    """The admin kubeconfig (certificates embedded, so it can be copied elsewhere)."""
    pids: dict[str, int] = field(default_factory=dict)
    """Process id of each component (see :data:`COMPONENTS`)."""
    ports: dict[str, int] = field(default_factory=dict)
    started_seconds: float = 0.0
    """How long ``cluster_up`` took to start it (0 when it was already running)."""

    @property
    def ca_file(self) -> Path:
        """The CA certificate that signed the API server's serving certificate."""
        return self.state_dir / "pki" / "ca.crt"

    @property
    def client_cert(self) -> tuple[str, str]:
        """The admin client certificate and key files (``O=system:masters``)."""
        pki = self.state_dir / "pki"
        return str(pki / "admin.crt"), str(pki / "admin.key")

    def ssl_context(self, *, admin: bool = True) -> ssl.SSLContext:
        """A TLS context for the API server (see :func:`ssl_context`), e.g. for httpx's
        ``verify=``."""
        return ssl_context(self.state_dir, admin=admin)

    def log_path(self, component: str) -> Path:
        """The log file of ``component``."""
        return _log_path(self.state_dir, component)

    def log_tail(self, component: str, lines: int = 40) -> str:
        """The last ``lines`` lines of ``component``'s log ('' when it has none)."""
        return _tail(_log_path(self.state_dir, component), lines)

    def log_tails(self, lines: int = 20) -> str:
        """The log tail of every component, each under a header."""
        return "\n".join(f"--- {c} (last {lines} lines) ---\n{self.log_tail(c, lines)}"
                         for c in COMPONENTS)


# ---------------------------------------------------------------------------------------
# Tools


def tools_dir() -> Path:
    """The directory ``scripts/install-tools`` builds into (``$OCIGITOPS_TOOLS``)."""
    env = os.environ.get("OCIGITOPS_TOOLS")
    return Path(env) if env else Path.home() / ".cache" / "ocigitops" / "tools"


def _find_tool(name: str, binary: str) -> Path:
    candidates = sorted(tools_dir().glob(f"{name}-*/bin/{binary}"))
    for c in reversed(candidates):
        if os.access(c, os.X_OK):
            return c
    raise ToolNotFoundError(
        f"{binary} is not installed in {tools_dir()}: run `{INSTALL_HINT}` "
        "(it builds the dev cluster's binaries from source, once)")


def find_tools() -> Tools:
    """Locate every binary of the dev cluster, or raise naming the install command."""
    kwok = _find_tool("kwok", "kwok")
    stages = kwok.parent.parent / "stages.yaml"
    if not stages.is_file():
        raise ToolNotFoundError(f"kwok's stage definitions ({stages}) are missing: run "
                                f"`{INSTALL_HINT}`")
    return Tools(
        etcd=_find_tool("etcd", "etcd"),
        kube_apiserver=_find_tool("kubernetes", "kube-apiserver"),
        kube_controller_manager=_find_tool("kubernetes", "kube-controller-manager"),
        kube_scheduler=_find_tool("kubernetes", "kube-scheduler"),
        kwok=kwok,
        kwok_stages=stages,
    )


# ---------------------------------------------------------------------------------------
# Certificates and kubeconfigs


def _new_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _write_cert(path: Path, cert: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_pki(pki: Path) -> None:
    """Write a test CA, the API server's serving certificate, client certificates and
    the ServiceAccount signing key pair into ``pki``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(minutes=5)
    not_after = now + datetime.timedelta(days=365)

    ca_key = _new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ocigitops-devcluster-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki / "ca.key", ca_key)
    _write_cert(pki / "ca.crt", ca_cert)

    def issue(stem: str, cn: str, *, orgs: tuple[str, ...] = (), server: bool = False) -> None:
        key = _new_key()
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs)).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=True, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
        )
        if server:
            service_ip = ipaddress.IPv4Network(SERVICE_CIDR)[1]
            names: list[x509.GeneralName] = [
                x509.DNSName("localhost"), x509.DNSName("kubernetes"),
                x509.DNSName("kubernetes.default"), x509.DNSName("kubernetes.default.svc"),
                x509.DNSName("kubernetes.default.svc.cluster.local"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(service_ip),
            ]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_key(pki / f"{stem}.key", key)
        _write_cert(pki / f"{stem}.crt", cert)

    issue("apiserver", "kube-apiserver", server=True)
    issue("admin", "ocigitops-admin", orgs=("system:masters",))
    issue("kube-controller-manager", "system:kube-controller-manager")
    issue("kube-scheduler", "system:kube-scheduler")
    issue("kwok", "kwok", orgs=("system:masters",))

    sa_key = _new_key()
    _write_key(pki / "sa.key", sa_key)
    (pki / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def write_kubeconfig(path: Path, server: str, pki: Path, user: str) -> None:
    """Write a kubeconfig for ``server`` with ``pki/<user>.crt`` embedded."""
    import yaml

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "ocigitops-dev", "cluster": {
            "server": server, "certificate-authority-data": b64(pki / "ca.crt")}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(pki / f"{user}.crt"),
            "client-key-data": b64(pki / f"{user}.key")}}],
        "contexts": [{"name": "ocigitops-dev", "context": {
            "cluster": "ocigitops-dev", "user": user, "namespace": "default"}}],
        "current-context": "ocigitops-dev",
        "preferences": {},
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)


# ---------------------------------------------------------------------------------------
# Processes


def _log_path(state_dir: Path, component: str) -> Path:
    return state_dir / "logs" / f"{component}.log"


def _pid_path(state_dir: Path, component: str) -> Path:
    return state_dir / "pids" / f"{component}.pid"


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our own exited child (so it is not left a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    except OSError:
        pass


def _alive(pid: int, binary: str | None = None) -> bool:
    """Whether ``pid`` runs (and, when ``binary`` is given and /proc exists, runs it)."""
    if pid <= 0:
        return False
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
            if binary is not None:
                # argv[0], or argv[1] when an interpreter runs it (a script).
                argv = (proc / "cmdline").read_bytes().split(b"\0")[:2]
                names = {Path(a.decode(errors="replace")).name for a in argv}
                return Path(binary).name in names
        except (OSError, IndexError):
            return False
    return True


def _spawn(state_dir: Path, component: str, argv: list[str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached, its output in the component's log; write its pid file."""
    log = _log_path(state_dir, component)
    log.parent.mkdir(parents=True, exist_ok=True)
    _pid_path(state_dir, component).parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        out.write(f"=== {datetime.datetime.now(datetime.UTC).isoformat()} "
                  f"{' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=state_dir,
                                start_new_session=True, close_fds=True)
    _pid_path(state_dir, component).write_text(f"{proc.pid} {argv[0]}\n")
    return proc


def _read_pids(state_dir: Path) -> dict[str, tuple[int, str]]:
    pids: dict[str, tuple[int, str]] = {}
    for component in COMPONENTS:
        try:
            pid_s, _, binary = _pid_path(state_dir, component).read_text().strip().partition(" ")
            pids[component] = (int(pid_s), binary)
        except (OSError, ValueError):
            continue
    return pids


def _stop_all(state_dir: Path) -> bool:
    """Stop every recorded process: the API server and its clients first, etcd last (an
    API server whose etcd is gone hangs in its graceful shutdown). Each is sent SIGTERM
    (its whole session), then SIGKILL when it is still there after a bound."""
    recorded = _read_pids(state_dir)
    running = {c: p for c, p in recorded.items() if _alive(p[0], p[1] or None)}
    phases = ([c for c in reversed(COMPONENTS) if c != "etcd"], ["etcd"])
    for phase in phases:
        _stop_group(state_dir, {c: running[c] for c in phase if c in running})
    for component in COMPONENTS:
        _pid_path(state_dir, component).unlink(missing_ok=True)
    return bool(running)


def _stop_group(state_dir: Path, pids: dict[str, tuple[int, str]]) -> None:
    def alive(p: tuple[int, str]) -> bool:
        return _alive(p[0], p[1] or None)

    for pid, _ in pids.values():
        _signal_session(pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE
    while time.monotonic() < deadline and any(alive(p) for p in pids.values()):
        time.sleep(0.05)
    left = {c: p for c, p in pids.items() if alive(p)}
    for pid, _ in left.values():
        _signal_session(pid, signal.SIGKILL)
    deadline = time.monotonic() + _KILL_GRACE
    while time.monotonic() < deadline and any(alive(p) for p in left.values()):
        time.sleep(0.05)
    still = [c for c, p in left.items() if alive(p)]
    if still:
        raise DevClusterError(f"could not stop {', '.join(still)} of the dev cluster in "
                              f"{state_dir} (pids {', '.join(str(left[c][0]) for c in still)})")


def _signal_session(pid: int, sig: signal.Signals) -> None:
    try:
        if os.getpgid(pid) == pid:  # started with start_new_session: leader of its group
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------
# HTTP


def ssl_context(state_dir: Path, *, admin: bool = True) -> ssl.SSLContext:
    """A TLS context trusting the cluster's CA, presenting the admin certificate if
    ``admin`` (``O=system:masters``)."""
    pki = state_dir / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if admin:
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return ctx


def _admin_client(state_dir: Path, server: str) -> Any:
    import httpx

    return httpx.Client(base_url=server, verify=ssl_context(state_dir),
                        timeout=_HTTP_TIMEOUT)


def _get_ok(client: Any, path: str) -> bool:
    import httpx

    try:
        r = client.get(path)
    except httpx.HTTPError:
        return False
    return bool(r.status_code == 200)


def _http_ok(url: str) -> bool:
    """GET ``url`` (no TLS verification: a component's self-signed health endpoint)."""
    import httpx

    try:
        r = httpx.get(url, verify=False, timeout=_HTTP_TIMEOUT)
    except httpx.HTTPError:
        return False
    return bool(r.status_code == 200)


def _fake_node(name: str) -> dict[str, Any]:
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "type": "kwok",
                       "node-role.kubernetes.io/agent": ""},
        },
        "status": {"allocatable": resources, "capacity": resources,
                   "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux",
                                "kubeletVersion": "fake", "kubeProxyVersion": "fake",
                                "bootID": "", "containerRuntimeVersion": "",
                                "kernelVersion": "", "machineID": "", "osImage": "",
                                "systemUUID": ""},
                   "phase": "Running"},
    }


def _node_ready(node: dict[str, Any]) -> bool:
    for cond in node.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


# ---------------------------------------------------------------------------------------
# Up and down


def _load(state_dir: Path) -> Cluster | None:
    try:
        doc = json.loads((state_dir / "cluster.json").read_text())
        return Cluster(state_dir=state_dir, server=str(doc["server"]),
                       kubeconfig=state_dir / "admin.kubeconfig",
                       pids={str(k): int(v) for k, v in doc["pids"].items()},
                       ports={str(k): int(v) for k, v in doc["ports"].items()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _healthy(cluster: Cluster) -> bool:
    recorded = _read_pids(cluster.state_dir)
    if set(recorded) != set(COMPONENTS):
        return False
    if not all(_alive(pid, binary or None) for pid, binary in recorded.values()):
        return False
    if not cluster.kubeconfig.is_file():
        return False
    try:
        with _admin_client(cluster.state_dir, cluster.server) as client:
            return _get_ok(client, "/readyz")
    except OSError:
        return False


def _clean(state_dir: Path) -> None:
    """Remove everything but the logs from ``state_dir``."""
    for name in ("etcd", "pki", "pids", "kcm", "scheduler"):
        shutil.rmtree(state_dir / name, ignore_errors=True)
    for name in ("cluster.json", "admin.kubeconfig", "kube-controller-manager.kubeconfig",
                 "kube-scheduler.kubeconfig", "kwok.kubeconfig"):
        (state_dir / name).unlink(missing_ok=True)


class _Starter:
    """Starts the components one after the other and waits, bounded, for each."""

    def __init__(self, state_dir: Path, tools: Tools, deadline: float) -> None:
        self.state_dir = state_dir
        self.tools = tools
        self.deadline = deadline
        self.pids: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        names = ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler")
        self.ports = dict(zip(names, _free_ports(len(names)), strict=True))
        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"

    def fail(self, component: str, what: str) -> DevClusterError:
        tail = _tail(_log_path(self.state_dir, component), 40)
        return DevClusterError(
            f"dev cluster: {component} {what} (log {_log_path(self.state_dir, component)}); "
            f"last lines:\n{tail}")

    def start(self, component: str, argv: list[str]) -> None:
        proc = _spawn(self.state_dir, component, argv)
        self.procs[component] = proc
        self.pids[component] = proc.pid

    def check_alive(self) -> None:
        # Our own children: ask the kernel through waitpid (Popen.poll), not /proc. A
        # /proc look-up once took a running etcd for a dead one on a busy machine.
        for component, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                how = f"signal {-code}" if code < 0 else f"code {code}"
                raise self.fail(component, f"exited during start-up ({how})")

    def kill_started(self) -> None:
        """SIGKILL every process this start spawned (their sessions), and reap them."""
        for proc in self.procs.values():
            if proc.poll() is None:
                _signal_session(proc.pid, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(_KILL_GRACE)

    def wait(self, component: str, what: str, probe: Any, interval: float = 0.2) -> None:
        """Poll ``probe()`` until it is true; fail on a dead process or the deadline."""
        while True:
            self.check_alive()
            if probe():
                return
            if time.monotonic() > self.deadline:
                raise self.fail(component, f"did not become ready in time ({what})")
            time.sleep(interval)

    def run(self) -> None:
        sd, t, p = self.state_dir, self.tools, self.ports
        pki = sd / "pki"
        make_pki(pki)
        for user in ("admin", "kube-controller-manager", "kube-scheduler", "kwok"):
            write_kubeconfig(sd / f"{user}.kubeconfig", self.server, pki, user)

        etcd_url = f"http://127.0.0.1:{p['etcd']}"
        peer_url = f"http://127.0.0.1:{p['etcd-peer']}"
        self.start("etcd", [
            str(t.etcd), "--name=devcluster", f"--data-dir={sd / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=devcluster={peer_url}", "--initial-cluster-state=new",
            "--unsafe-no-fsync", "--log-level=warn",
        ])
        self.wait("etcd", "GET /health", lambda: _http_ok(f"{etcd_url}/health"), 0.1)

        self.start("kube-apiserver", [
            str(t.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={p['apiserver']}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ])
        # The others need the API server's bootstrap RBAC roles: the controller manager
        # exits when it cannot read the extension-apiserver-authentication ConfigMap.
        with _admin_client(sd, self.server) as client:
            self.wait("kube-apiserver", "GET /readyz", lambda: _get_ok(client, "/readyz"))

        kcm_kubeconfig = sd / "kube-controller-manager.kubeconfig"
        controllers = ",".join(["*", *(f"-{c}" for c in _CLOUD_CONTROLLERS)])
        self.start("kube-controller-manager", [
            str(t.kube_controller_manager),
            f"--kubeconfig={kcm_kubeconfig}",
            f"--authentication-kubeconfig={kcm_kubeconfig}",
            f"--authorization-kubeconfig={kcm_kubeconfig}",
            # Client certificates are checked by the API server; the ConfigMap lookup only
            # finds no front-proxy CA (none is configured) and logs about it forever.
            "--authentication-skip-lookup=true",
            "--bind-address=127.0.0.1", f"--secure-port={p['kcm']}",
            f"--cert-dir={sd / 'kcm'}",
            f"--controllers={controllers}",
            "--use-service-account-credentials=true",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Each controller has its own client (service account credentials), throttled
            # at 20 requests/s by default: hundreds of Deployments created at once then
            # wait on the Deployment and ReplicaSet controllers' throttles (three writes
            # per Deployment each, 75 s for 500), whichever controller applied them. The
            # dev cluster serves tests and benchmarks of our controller, not of these.
            "--kube-api-qps=200", "--kube-api-burst=400",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ])
        sched_kubeconfig = sd / "kube-scheduler.kubeconfig"
        self.start("kube-scheduler", [
            str(t.kube_scheduler),
            f"--kubeconfig={sched_kubeconfig}",
            f"--authentication-kubeconfig={sched_kubeconfig}",
            f"--authorization-kubeconfig={sched_kubeconfig}",
            # Client certificates are checked by the API server; the ConfigMap lookup only
            # finds no front-proxy CA (none is configured) and logs about it forever.
            "--authentication-skip-lookup=true",
            "--bind-address=127.0.0.1", f"--secure-port={p['scheduler']}",
            f"--cert-dir={sd / 'scheduler'}",
            "--leader-elect=false",
            "--v=1",
        ])
        helm_test_stages = sd / "kwok-helm-test-stages.yaml"
        helm_test_stages.write_text(KWOK_HELM_TEST_STAGES)
        self.start("kwok", [
            str(t.kwok),
            f"--kubeconfig={sd / 'kwok.kubeconfig'}",
            f"--config={t.kwok_stages}",
            f"--config={helm_test_stages}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
            "--manage-nodes-with-label-selector=",
            "--manage-single-node=",
            f"--cidr={POD_CIDR}",
            "--node-ip=10.0.0.1",
            "--node-lease-duration-seconds=40",
        ])

        with _admin_client(sd, self.server) as client:
            for name in FAKE_NODES:
                r = client.post("/api/v1/nodes", json=_fake_node(name))
                if r.status_code not in (201, 409):
                    raise self.fail("kube-apiserver",
                                    f"refused fake Node {name}: {r.status_code} {r.text[:300]}")
            self.wait("kube-controller-manager", "the default ServiceAccount",
                      lambda: _get_ok(client, "/api/v1/namespaces/default/serviceaccounts/default"))
            self.wait("kube-scheduler", "GET /healthz",
                      lambda: _http_ok(f"https://127.0.0.1:{p['scheduler']}/healthz"))
            self.wait("kwok", "fake Nodes Ready", lambda: self._nodes_ready(client))

    @staticmethod
    def _nodes_ready(client: Any) -> bool:
        import httpx

        try:
            r = client.get("/api/v1/nodes", params={"labelSelector": "type=kwok"})
        except httpx.HTTPError:
            return False
        if r.status_code != 200:
            return False
        nodes = r.json().get("items", [])
        return len(nodes) >= len(FAKE_NODES) and all(_node_ready(n) for n in nodes)


#: Starts tried when a component lost its port to another process.
START_ATTEMPTS = 3


def _port_race(message: str) -> bool:
    return "address already in use" in message or "bind:" in message


def cluster_up(state_dir: Path, *, timeout: float = 120) -> Cluster:
    """Start a dev cluster in ``state_dir`` and return once it is usable.

    Usable means: ``/readyz`` answers ok, the ``default`` ServiceAccount exists (so the
    controller manager runs), the scheduler is healthy and kwok's fake Nodes are Ready.
    When a healthy cluster from ``state_dir`` is already running, it is returned as is;
    the leftovers of a dead one are stopped and removed first.

    Raises :class:`ToolNotFoundError` when a binary is missing and
    :class:`DevClusterError` (with the failing component's log tail) when start-up fails
    or exceeds ``timeout`` seconds; the processes it started are stopped then.
    """
    state_dir = state_dir.expanduser().resolve()
    with _locked(state_dir):
        existing = _load(state_dir)
        if existing is not None and _healthy(existing):
            return existing
        tools = find_tools()
        _stop_all(state_dir)
        _clean(state_dir)
        started = time.monotonic()
        for attempt in range(1, START_ATTEMPTS + 1):
            starter = _Starter(state_dir, tools, started + timeout)
            try:
                starter.run()
                break
            except BaseException as e:
                with suppress(DevClusterError):
                    _stop_all(state_dir)
                starter.kill_started()
                with suppress(DevClusterError):
                    _clean(state_dir)
                # A free port can be taken between choosing it and binding it (a port
                # race on a busy machine): start again on new ports, within the deadline.
                if not (isinstance(e, DevClusterError) and _port_race(str(e))
                        and attempt < START_ATTEMPTS and time.monotonic() < started + timeout):
                    raise
        cluster = Cluster(state_dir=state_dir, server=starter.server,
                          kubeconfig=state_dir / "admin.kubeconfig", pids=dict(starter.pids),
                          ports=dict(starter.ports),
                          started_seconds=round(time.monotonic() - started, 2))
        (state_dir / "cluster.json").write_text(json.dumps(
            {"server": cluster.server, "pids": cluster.pids, "ports": cluster.ports}, indent=2))
        return cluster


def cluster_down(state_dir: Path) -> bool:
    """Stop the dev cluster of ``state_dir`` and remove its data (its logs stay).

    Returns whether anything was running. Raises :class:`DevClusterError` when a process
    survives SIGKILL.
    """
    state_dir = state_dir.expanduser().resolve()
    if not state_dir.is_dir():
        return False
    with _locked(state_dir):
        stopped = _stop_all(state_dir)
        _clean(state_dir)
        return stopped


def main_up(state_dir: Path | None = None, kubeconfig_out: Path | None = None) -> None:
    """``ocigitops dev cluster up``: start (or reuse) the dev cluster and print where its
    admin kubeconfig is, on the last line (``kubeconfig_out`` when given: it is copied
    there)."""
    state_dir = state_dir or DEFAULT_STATE_DIR
    cluster = cluster_up(state_dir)
    how = (f"started in {cluster.started_seconds:.1f}s" if cluster.started_seconds
           else "already running")
    down = "ocigitops dev cluster down"
    if state_dir.expanduser().resolve() != DEFAULT_STATE_DIR.resolve():
        down += f" --state-dir {state_dir}"
    print(f"dev cluster {how}: {cluster.server} (nodes: {', '.join(FAKE_NODES)}; logs in "
          f"{state_dir / 'logs'}; stop it with `{down}`)", flush=True)
    kubeconfig = cluster.kubeconfig
    if kubeconfig_out is not None:
        kubeconfig_out = kubeconfig_out.expanduser()
        kubeconfig_out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kubeconfig, kubeconfig_out)
        kubeconfig_out.chmod(0o600)
        kubeconfig = kubeconfig_out.resolve()
    print(kubeconfig, flush=True)


def main_down(state_dir: Path | None = None) -> None:
    """``ocigitops dev cluster down``: stop the dev cluster and remove its data."""
    state_dir = state_dir or DEFAULT_STATE_DIR
    if cluster_down(state_dir):
        print(f"dev cluster in {state_dir} stopped", flush=True)
    else:
        print(f"no dev cluster is running in {state_dir}", flush=True)
