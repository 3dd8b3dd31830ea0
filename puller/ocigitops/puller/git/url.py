"""Git repository URLs as GitRepository accepts them: ``https://``, ``http://`` (only with
an explicit opt-in) and ``ssh://``.

Credentials never live in the URL: ``https://user:token@host/repo`` is refused with a hint
to use ``spec.secretRef``, because a URL is printed in status, events and logs. An SSH URL
may name its login user (``ssh://git@host/repo``), as every Git host asks; a password
there is refused too. The scp-like form (``git@host:repo``) is refused as Flux refuses it,
with the ``ssh://`` spelling to use instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ocigitops.puller.git.errors import GitURLError

_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[^/:]+:(?!//)")
MAX_URL = 2048


@dataclass(frozen=True)
class GitURL:
    """A parsed repository URL (no credentials in it, ever)."""

    scheme: str
    host: str
    port: int | None
    path: str
    #: The SSH login user (``git`` in ``ssh://git@host/repo``); None for HTTP(S).
    user: str | None = None

    @property
    def base(self) -> str:
        """``scheme://host[:port]``: where an HTTP client connects."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + (f":{self.port}" if self.port else "")

    def __str__(self) -> str:
        """The URL as the user wrote it, minus nothing (it has no secret)."""
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{user}{host}{port}{self.path}"


def parse_git_url(url: str, *, allow_http: bool = False) -> GitURL:
    """Parse and check ``url``; raises :class:`GitURLError` naming the problem.

    ``allow_http`` is the opt-in for plain HTTP (credentials and content travel in the
    clear); without it an ``http://`` URL is refused.
    """
    if len(url) > MAX_URL:
        raise GitURLError(f"repository URL is longer than {MAX_URL} characters")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise GitURLError("repository URL contains whitespace or control characters")
    if _SCP_LIKE.match(url):
        login, _, rest = url.partition("@")
        where, _, rel = rest.partition(":")
        raise GitURLError(f"scp-like SSH address {url!r} is not supported: write"
                          f" ssh://{login}@{where}/{rel}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http", "ssh"):
        raise GitURLError(f"repository URL scheme {parts.scheme or '(none)'!r} is not"
                          " supported: use https://, ssh:// or http://")
    if parts.password is not None or (scheme != "ssh" and parts.username is not None):
        # Never echo the URL here: it holds the secret.
        raise GitURLError(f"the {scheme} repository URL has credentials embedded in it:"
                          " remove them and put them in the Secret named by"
                          " spec.secretRef")
    if scheme == "http" and not allow_http:
        raise GitURLError(f"plain HTTP repository URL {url!r} refused: use https://, or"
                          " opt in to plain HTTP explicitly")
    if parts.query or parts.fragment:
        raise GitURLError(f"repository URL {url!r} must not have a query or fragment")
    host = parts.hostname
    if not host:
        raise GitURLError(f"repository URL {url!r} has no host")
    try:
        port = parts.port
    except ValueError:
        raise GitURLError(f"repository URL {url!r} has an invalid port") from None
    path = parts.path or "/"
    if not path.startswith("/") or path == "/":
        raise GitURLError(f"repository URL {url!r} names no repository path")
    if any(seg == ".." for seg in path.split("/")):
        raise GitURLError(f"repository URL {url!r} has '..' in its path")
    return GitURL(scheme=scheme, host=host, port=port, path=path,
                  user=parts.username if scheme == "ssh" else None)


__all__ = ["GitURL", "parse_git_url"]
