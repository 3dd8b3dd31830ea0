"""Registry credentials and the authentication challenge.

Sources, in the order the CLI consults them: ``--creds user:pass`` (a value without a
colon is a registry bearer token, as in Flux), a Kubernetes ``dockerconfigjson``
document, then the docker ``config.json`` (``credHelpers``, ``auths``, ``credsStore``).
Secrets never appear in ``repr``/``str`` so they cannot leak into logs or errors.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocigitops.errors import CredentialsError, UsageError

_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io",
             "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    """Username/password, a refresh (identity) token, or a bearer registry token."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)

    def __str__(self) -> str:
        return f"Credentials(username={self.username!r})"

    @property
    def empty(self) -> bool:
        """True when nothing would be sent."""
        return not (self.username or self.password or self.identity_token or self.registry_token)


def parse_creds(value: str) -> Credentials:
    """Parse ``--creds``: ``user:password``, or a lone token sent as a bearer token."""
    if not value:
        raise UsageError("--creds is empty: use <username>:<password>")
    if ":" not in value:
        return Credentials(registry_token=value)
    user, password = value.split(":", 1)
    if not user:
        raise UsageError("--creds has an empty username: use <username>:<password>")
    return Credentials(username=user, password=password)


def _decode_auth_entry(host: str, entry: Mapping[str, Any]) -> Credentials | None:
    if not isinstance(entry, Mapping):
        raise CredentialsError(f"docker config entry for {host} is not an object")
    if entry.get("identitytoken"):
        return Credentials(username=str(entry.get("username", "")),
                           identity_token=str(entry["identitytoken"]))
    if entry.get("registrytoken"):
        return Credentials(registry_token=str(entry["registrytoken"]))
    auth = entry.get("auth")
    if auth:
        try:
            decoded = base64.b64decode(str(auth), validate=False).decode()
        except (ValueError, UnicodeDecodeError) as e:
            raise CredentialsError(f"docker config entry for {host}: 'auth' is not base64"
                                   f" of user:password") from e
        user, sep, password = decoded.partition(":")
        if not sep:
            raise CredentialsError(f"docker config entry for {host}: 'auth' is not user:password")
        return Credentials(username=user, password=password)
    if entry.get("username") or entry.get("password"):
        return Credentials(username=str(entry.get("username", "")),
                           password=str(entry.get("password", "")))
    return None


def _host_candidates(host: str) -> list[str]:
    if host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        return list(_HUB_KEYS)
    return [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/",
            f"https://{host}/v2/"]


def _normalise_key(key: str) -> str:
    k = re.sub(r"^https?://", "", key).rstrip("/")
    k = re.sub(r"/v[12]$", "", k)
    return "docker.io" if k in ("index.docker.io", "registry-1.docker.io") else k


def _match_auths(host: str, auths: Mapping[str, Any]) -> Credentials | None:
    wanted = _normalise_key(host)
    for key, entry in auths.items():
        if _normalise_key(key) == wanted:
            return _decode_auth_entry(key, entry)
    return None


def run_credential_helper(helper: str, host: str, timeout: float = 20.0) -> Credentials | None:
    """Ask ``docker-credential-<helper> get`` for ``host``; None when it has nothing."""
    exe = f"docker-credential-{helper}"
    server = "https://index.docker.io/v1/" if _normalise_key(host) == "docker.io" else host
    try:
        proc = subprocess.run([exe, "get"], input=server.encode(), capture_output=True,
                              timeout=timeout, check=False)
    except FileNotFoundError as e:
        raise CredentialsError(f"credential helper {exe} named in the docker config is not"
                               " installed or not on PATH") from e
    except subprocess.TimeoutExpired as e:
        raise CredentialsError(f"credential helper {exe} did not answer in {timeout:.0f}s") from e
    if proc.returncode != 0:
        out = (proc.stdout or proc.stderr).decode(errors="replace").strip()
        if "credentials not found" in out.lower():
            return None
        raise CredentialsError(f"credential helper {exe} failed for {host}: "
                               f"{out.splitlines()[-1] if out else 'exit ' + str(proc.returncode)}")
    try:
        doc = json.loads(proc.stdout)
    except ValueError as e:
        raise CredentialsError(f"credential helper {exe} returned invalid JSON") from e
    user, secret = str(doc.get("Username", "")), str(doc.get("Secret", ""))
    if user == "<token>":
        return Credentials(identity_token=secret)
    return Credentials(username=user, password=secret)


@dataclass
class DockerConfig:
    """A parsed docker ``config.json`` (or the ``.dockerconfigjson`` of a Secret)."""

    auths: dict[str, Any] = field(default_factory=dict, repr=False)
    creds_store: str = ""
    cred_helpers: dict[str, str] = field(default_factory=dict)
    source: str = "docker config"

    @classmethod
    def from_secret_data(cls, data: Mapping[str, bytes], source: str) -> DockerConfig:
        """The config held by a Kubernetes Secret's (decoded) data: ``.dockerconfigjson``,
        or the older ``.dockercfg``. The controller and ``--docker-config`` both use it."""
        raw = data.get(".dockerconfigjson") or data.get(".dockercfg")
        if raw is None:
            raise CredentialsError(f"{source} has no .dockerconfigjson")
        return cls.from_bytes(raw, source=source)

    @classmethod
    def from_file(cls, path: Path) -> DockerConfig:
        """A ``config.json``, a dockerconfigjson document, or a Kubernetes Secret manifest
        (YAML or JSON) holding one, as ``--docker-config`` takes them."""
        import binascii

        import yaml

        data = path.read_bytes()
        if data.lstrip()[:1] == b"{":
            return cls.from_bytes(data, source=str(path))
        try:
            doc = yaml.safe_load(data)
            encoded = (doc.get("data") or {}) if isinstance(doc, dict) else {}
            decoded = {k: base64.b64decode(v, validate=True) for k, v in encoded.items()
                       if k in (".dockerconfigjson", ".dockercfg")}
        except (yaml.YAMLError, AttributeError, binascii.Error, ValueError, TypeError) as e:
            raise CredentialsError(f"{path}: not a docker config or a Secret holding"
                                   f" .dockerconfigjson ({type(e).__name__})") from e
        if not decoded:
            raise CredentialsError(f"{path}: neither JSON nor a Secret with .dockerconfigjson")
        return cls.from_secret_data(decoded, source=str(path))

    @classmethod
    def from_bytes(cls, data: bytes | str, source: str = "docker config") -> DockerConfig:
        """Parse a config document; a Kubernetes dockerconfigjson has the same shape."""
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise CredentialsError(f"{source} is not valid JSON: {e}") from e
        if not isinstance(doc, dict):
            raise CredentialsError(f"{source} is not a JSON object")
        auths = doc.get("auths", {})
        if not isinstance(auths, dict):
            raise CredentialsError(f"{source}: 'auths' is not an object")
        helpers = doc.get("credHelpers", {})
        if not isinstance(helpers, dict):
            raise CredentialsError(f"{source}: 'credHelpers' is not an object")
        return cls(auths=auths, creds_store=str(doc.get("credsStore", "") or ""),
                   cred_helpers={str(k): str(v) for k, v in helpers.items()}, source=source)

    @classmethod
    def load(cls, path: Path | None = None) -> DockerConfig:
        """Load ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json`` (empty if absent)."""
        if path is None:
            base = os.environ.get("DOCKER_CONFIG")
            path = Path(base) / "config.json" if base else Path.home() / ".docker/config.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls(source=str(path))
        except OSError as e:
            raise CredentialsError(f"cannot read docker config {path}: {e.strerror}") from e
        return cls.from_bytes(data, source=str(path))

    def lookup(self, host: str) -> Credentials | None:
        """Credentials for ``host``: credHelpers, then auths, then credsStore."""
        for key in _host_candidates(host):
            if key in self.cred_helpers:
                return run_credential_helper(self.cred_helpers[key], host)
        found = _match_auths(host, self.auths)
        if found is not None and not found.empty:
            return found
        if self.creds_store:
            return run_credential_helper(self.creds_store, host)
        return None


class CredentialResolver:
    """Chooses credentials per registry host from the configured sources."""

    def __init__(self, *, creds: Credentials | None = None,
                 configs: list[DockerConfig] | None = None,
                 use_docker_config: bool = True) -> None:
        self._creds = creds
        self._configs = list(configs or [])
        self._use_docker_config = use_docker_config
        self._docker: DockerConfig | None = None
        self._cache: dict[str, Credentials | None] = {}

    def __call__(self, host: str) -> Credentials | None:
        """Return credentials for ``host`` or None for anonymous access."""
        if self._creds is not None:
            return self._creds
        if host in self._cache:
            return self._cache[host]
        found: Credentials | None = None
        for cfg in self._configs:
            found = cfg.lookup(host)
            if found:
                break
        if found is None and self._use_docker_config:
            if self._docker is None:
                self._docker = DockerConfig.load()
            found = self._docker.lookup(host)
        self._cache[host] = found
        return found


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header."""

    scheme: str
    params: dict[str, str]


_PARAM_RE = re.compile(r'([A-Za-z0-9_-]+)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')
_QUOTED_PAIR = re.compile(r"\\(.)")


def parse_challenge(header: str) -> Challenge:
    """Parse ``Bearer realm="...",service="...",scope="..."`` (or ``Basic realm=...``)."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (_QUOTED_PAIR.sub(r"\1", m.group(2))
                                   if m.group(2) is not None else m.group(3) or "")
              for m in _PARAM_RE.finditer(rest)}
    return Challenge(scheme=scheme.lower(), params=params)
