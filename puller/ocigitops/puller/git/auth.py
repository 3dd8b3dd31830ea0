"""Credentials of a GitRepository, read from its Secrets as source-controller reads them.

``spec.secretRef`` (one Secret, Flux's keys):

- HTTPS: ``username`` + ``password`` (basic auth), or ``bearerToken`` (an
  ``Authorization: Bearer`` header); ``ca.crt`` (or ``caFile``) for a private CA;
  ``tls.crt`` + ``tls.key`` for mutual TLS.
- SSH: ``identity`` (a private key, OpenSSH or PEM; ``password`` decrypts it),
  ``known_hosts`` (required: the server's host key is pinned, never learned), optional
  ``identity.pub`` (ignored: the public key is derived from ``identity``) and ``username``.

``spec.proxySecretRef``: ``address`` (``http://`` or ``https://``), optional ``username``
and ``password``.

The values are held in fields that are left out of ``repr``, and no message here ever
contains one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ocigitops.puller.git.errors import GitAuthError, UnsupportedGitFeatureError
from ocigitops.puller.git.url import GitURL

#: The largest Secret value read (a key ring or a CA bundle is far smaller).
MAX_VALUE = 1024 * 1024


@dataclass(frozen=True)
class GitAuth:
    """What authenticates us to a Git server, and how we authenticate it."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)
    identity: bytes | None = field(default=None, repr=False)
    identity_password: str | None = field(default=None, repr=False)
    known_hosts: str | None = None
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Proxy:
    """An HTTP(S) proxy (``proxySecretRef``)."""

    address: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def _text(data: Mapping[str, bytes], key: str, what: str) -> str | None:
    raw = data.get(key)
    if raw is None:
        return None
    if len(raw) > MAX_VALUE:
        raise GitAuthError(f"{what}: key {key!r} is larger than {MAX_VALUE} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise GitAuthError(f"{what}: key {key!r} is not UTF-8 text") from None


def _bytes(data: Mapping[str, bytes], key: str, what: str) -> bytes | None:
    raw = data.get(key)
    if raw is not None and len(raw) > MAX_VALUE:
        raise GitAuthError(f"{what}: key {key!r} is larger than {MAX_VALUE} bytes")
    return raw


def auth_from_secret(data: Mapping[str, bytes] | None, url: GitURL,
                     what: str = "Secret") -> GitAuth:
    """The :class:`GitAuth` for ``url`` from a Secret's decoded data (None: no Secret).

    Raises :class:`GitAuthError` when the Secret is inconsistent (a username without a
    password, basic auth and a bearer token together, ``tls.crt`` without ``tls.key``, an
    SSH URL without ``identity`` or ``known_hosts``). ``what`` names the Secret in
    messages.
    """
    if data is None:
        if url.scheme == "ssh":
            raise GitAuthError(f"an SSH URL needs spec.secretRef with 'identity' and"
                               f" 'known_hosts' ({url})")
        return GitAuth()
    if url.scheme == "ssh":
        identity = _bytes(data, "identity", what)
        known = _text(data, "known_hosts", what)
        if not identity:
            raise GitAuthError(f"{what} has no 'identity' (the SSH private key)")
        if not known or not known.strip():
            raise GitAuthError(f"{what} has no 'known_hosts': the server's host key must be"
                               " pinned (ssh-keyscan HOST, checked out of band)")
        return GitAuth(username=_text(data, "username", what) or url.user or "git",
                       identity=identity, identity_password=_text(data, "password", what),
                       known_hosts=known)
    user = _text(data, "username", what)
    password = _text(data, "password", what)
    token = _text(data, "bearerToken", what)
    if (user is None) != (password is None) and token is None:
        missing = "password" if password is None else "username"
        raise GitAuthError(f"{what} has a {'username' if user else 'password'} but no"
                           f" {missing}")
    if token is not None and (user is not None or password is not None):
        raise GitAuthError(f"{what} has both basic auth (username/password) and a"
                           " bearerToken: keep one")
    cert, key = _bytes(data, "tls.crt", what), _bytes(data, "tls.key", what)
    if (cert is None) != (key is None):
        raise GitAuthError(f"{what} has {'tls.crt' if cert else 'tls.key'} without"
                           f" {'tls.key' if cert else 'tls.crt'}: mutual TLS needs both")
    ca = _bytes(data, "ca.crt", what) or _bytes(data, "caFile", what)
    if url.scheme == "http" and (cert or ca):
        raise GitAuthError(f"{what} has TLS settings but the URL is plain http://")
    return GitAuth(username=user, password=password, bearer_token=token, ca=ca, cert=cert,
                   key=key)


def proxy_from_secret(data: Mapping[str, bytes], what: str = "proxy Secret") -> Proxy:
    """The :class:`Proxy` of a ``proxySecretRef`` Secret.

    SOCKS5 proxies (which Flux also accepts) are refused with a clear message: neither the
    HTTP transport nor the SSH one here speaks SOCKS yet.
    """
    address = (_text(data, "address", what) or "").strip()
    if not address:
        raise GitAuthError(f"{what} has no 'address'")
    parts = urlsplit(address)
    if parts.scheme.lower().startswith("socks"):
        raise UnsupportedGitFeatureError(f"{what}: SOCKS proxies are not supported yet; use"
                                         " an http:// or https:// proxy")
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise GitAuthError(f"{what}: 'address' must be http://HOST:PORT or"
                           " https://HOST:PORT")
    if parts.username or parts.password:
        raise GitAuthError(f"{what}: put the proxy credentials in 'username' and"
                           " 'password', not in 'address'")
    return Proxy(address=address, username=_text(data, "username", what),
                 password=_text(data, "password", what))


__all__ = ["GitAuth", "Proxy", "auth_from_secret", "proxy_from_secret"]
