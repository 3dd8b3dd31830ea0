"""The SSH transport: a small dulwich ``SSHVendor`` on paramiko, with the host key pinned.

Why paramiko and not the system ``ssh``: the controller runs no Git or SSH binaries, the
private key stays in memory (never written to a file another process could read), and the
pinned ``known_hosts`` belongs to this one connection (pygit2 and libssh2 pin host keys
process-wide; the ``ssh`` binary needs files and a config per tenant). dulwich stopped
shipping its paramiko vendor in the wheel, so this is the part of it we need.

A host key that is not in the Secret's ``known_hosts`` (unknown host, or a different key for
a known one) is refused: :class:`~ocigitops.puller.git.errors.HostKeyError`.
"""

from __future__ import annotations

import base64
import binascii
import io
import socket
import time
from typing import Any

import paramiko

from ocigitops.puller.git.auth import GitAuth, Proxy
from ocigitops.puller.git.errors import (
    GitAuthError,
    GitTimeoutError,
    GitUnreachableError,
    HostKeyError,
)

#: The largest remote stderr kept (for error messages).
_MAX_STDERR = 64 * 1024


def load_private_key(identity: bytes, password: str | None) -> paramiko.PKey:
    """The private key of an ``identity`` entry (OpenSSH or PEM; Ed25519, ECDSA, RSA)."""
    text = identity.decode("utf-8", errors="replace")
    errors: list[str] = []
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            key: paramiko.PKey = cls.from_private_key(io.StringIO(text), password=password)
            return key
        except paramiko.PasswordRequiredException:
            raise GitAuthError("the SSH identity is encrypted: put its passphrase in the"
                               " Secret's 'password'") from None
        except (paramiko.SSHException, ValueError, TypeError) as e:
            errors.append(type(e).__name__)
    raise GitAuthError("the Secret's 'identity' is not a usable SSH private key (Ed25519,"
                       " ECDSA or RSA, OpenSSH or PEM format)")


def host_keys(known_hosts: str) -> paramiko.HostKeys:
    """The pinned host keys of a ``known_hosts`` text (hashed names supported)."""
    keys = paramiko.HostKeys()
    for line in known_hosts.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("@"):
            continue  # markers (@cert-authority, @revoked) are not supported: skip them
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
        except (paramiko.SSHException, ValueError, binascii.Error):
            entry = None
        if entry is None:
            continue
        for name in entry.hostnames:
            keys.add(name, entry.key.get_name(), entry.key)
    if not keys.keys():
        raise GitAuthError("the Secret's 'known_hosts' holds no valid host key line")
    return keys


def _fingerprint(key: paramiko.PKey) -> str:
    import hashlib

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _Pinned(paramiko.MissingHostKeyPolicy):
    """Refuse every host key that is not pinned (paramiko calls this for unknown hosts;
    a known host with another key raises BadHostKeyException before)."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        raise HostKeyError(f"SSH host key of {hostname} ({key.get_name()}"
                           f" {_fingerprint(key)}) is not in the Secret's known_hosts")


def _http_connect(proxy: Proxy, host: str, port: int, timeout: float) -> socket.socket:
    """A socket tunnelled to ``host:port`` through an HTTP proxy (CONNECT)."""
    from urllib.parse import urlsplit

    p = urlsplit(proxy.address)
    sock = socket.create_connection((p.hostname or "", p.port or 80), timeout=timeout)
    req = f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if proxy.username:
        cred = base64.b64encode(f"{proxy.username}:{proxy.password or ''}".encode()).decode()
        req += f"Proxy-Authorization: Basic {cred}\r\n"
    sock.sendall((req + "\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk or len(head) > 16384:
            sock.close()
            raise GitUnreachableError(f"proxy {p.hostname} closed the CONNECT to {host}")
        head += chunk
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        sock.close()
        raise GitUnreachableError(f"proxy {p.hostname} refused CONNECT to {host}:{port}:"
                                  f" {b' '.join(status[1:]).decode(errors='replace')[:80]}")
    return sock


class _Channel:
    """What dulwich reads and writes: a paramiko channel with a deadline and a byte cap."""

    def __init__(self, client: paramiko.SSHClient, channel: paramiko.Channel,
                 deadline: float, max_bytes: int) -> None:
        self.client = client
        self.channel = channel
        self.deadline = deadline
        self.max_bytes = max_bytes
        self.received = 0
        self._stderr = b""

    def _check(self) -> None:
        if time.monotonic() > self.deadline:
            raise GitTimeoutError("the SSH transfer did not finish within the timeout")

    def read(self, n: int | None = None) -> bytes:
        """Read up to ``n`` bytes (all of them unless the channel closes)."""
        want = n if n is not None and n >= 0 else 1 << 20
        out = b""
        while len(out) < want:
            self._check()
            try:
                data = self.channel.recv(want - len(out))
            except TimeoutError:
                raise GitTimeoutError("the SSH server stopped sending") from None
            if not data:
                break
            out += data
            self.received += len(data)
            if self.received > self.max_bytes:
                raise GitTimeoutError(f"the SSH server sent more than {self.max_bytes}"
                                      " bytes") from None
            if n is None:
                break
        return out

    def write(self, data: bytes) -> int:
        """Send ``data``."""
        self._check()
        self.channel.sendall(data)
        return len(data)

    def can_read(self) -> bool:
        """Whether data is waiting."""
        return bool(self.channel.recv_ready())

    @property
    def stderr(self) -> io.BytesIO:
        """What the remote command wrote on stderr (bounded)."""
        while self.channel.recv_stderr_ready() and len(self._stderr) < _MAX_STDERR:
            self._stderr += self.channel.recv_stderr(4096)
        return io.BytesIO(self._stderr)

    def close(self, timeout: int | None = None) -> None:
        """Close the channel and the connection."""
        self.channel.close()
        self.client.close()


class PinnedParamikoVendor:
    """A dulwich SSH vendor: key auth with the Secret's identity, host key pinned."""

    def __init__(self, auth: GitAuth, *, timeout: float, deadline: float,
                 max_bytes: int, proxy: Proxy | None = None) -> None:
        if auth.identity is None or auth.known_hosts is None:
            raise GitAuthError("SSH needs 'identity' and 'known_hosts' in the Secret")
        self.key = load_private_key(auth.identity, auth.identity_password)
        self.host_keys = host_keys(auth.known_hosts)
        self.username = auth.username or "git"
        self.timeout = timeout
        self.deadline = deadline
        self.max_bytes = max_bytes
        self.proxy = proxy

    def run_command(self, host: str, command: Any, username: str | None = None,
                    port: int | None = None, password: str | None = None,
                    key_filename: str | None = None, ssh_command: str | None = None,
                    protocol_version: int | None = None) -> _Channel:
        """Connect, authenticate and start ``command`` (``git-upload-pack 'path'``)."""
        port = port or 22
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_Pinned())
        client.get_host_keys().update(self.host_keys)
        sock = None
        timeout = max(0.1, min(self.timeout, self.deadline - time.monotonic()))
        try:
            if self.proxy is not None:
                sock = _http_connect(self.proxy, host, port, timeout)
            client.connect(host, port=port, username=self.username, pkey=self.key,
                           timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                           channel_timeout=timeout, allow_agent=False, look_for_keys=False,
                           sock=sock)
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as e:
            client.close()
            raise HostKeyError(f"SSH host key of {host}:{port} ({e.key.get_name()}"
                               f" {_fingerprint(e.key)}) does not match the Secret's"
                               " known_hosts") from None
        except paramiko.AuthenticationException:
            client.close()
            raise GitAuthError(f"SSH server {host}:{port} refused the key of user"
                               f" {self.username!r}") from None
        except TimeoutError:
            client.close()
            raise GitTimeoutError(f"SSH connection to {host}:{port} timed out") from None
        except (OSError, paramiko.SSHException) as e:
            client.close()
            raise GitUnreachableError(f"SSH connection to {host}:{port} failed:"
                                      f" {type(e).__name__}: {str(e)[:200]}") from None
        transport = client.get_transport()
        if transport is None:
            client.close()
            raise GitUnreachableError(f"SSH connection to {host}:{port} closed")
        channel = transport.open_session(timeout=timeout)
        channel.settimeout(timeout)
        if protocol_version is not None and protocol_version > 0:
            channel.set_environment_variable("GIT_PROTOCOL", f"version={protocol_version}")
        cmd = command if isinstance(command, str) else (
            b" ".join(command).decode() if isinstance(command, list) else command.decode())
        channel.exec_command(cmd)
        return _Channel(client, channel, self.deadline, self.max_bytes)


__all__ = ["PinnedParamikoVendor", "host_keys", "load_private_key"]
