"""``--debug``: the HTTP exchanges of a command on stderr, with every secret redacted.

Both HTTP clients (the registry client and the Kubernetes client) hand their httpx
client to :func:`install`, which adds event hooks logging each request and answer at
DEBUG level on the ``ocigitops.http`` logger. Nothing is printed unless
:func:`enable_debug` (the CLI's ``--debug``/``-v``) turned DEBUG on.

Only the request line, the status and the headers are logged, never bodies: a token
service's answer and an OAuth2 form carry secrets. Headers that carry credentials
(``Authorization``, cookies) are replaced by ``<redacted>`` with only the scheme kept
(``Bearer <redacted>``), and so are secret-looking query parameters and the user
information of a URL.

Kept free of heavy imports: the CLI imports it at start-up.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("ocigitops.http")

REDACTED = "<redacted>"
#: Headers whose value is a credential (compared lower-case).
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie",
                            "x-registry-auth", "x-auth-token", "x-api-key"})
#: Query parameters or form keys whose value is a credential (compared lower-case).
SECRET_PARAMS = frozenset({"token", "access_token", "refresh_token", "id_token",
                           "password", "client_secret", "secret", "code", "sig",
                           "signature", "x-amz-signature", "x-amz-credential",
                           "x-amz-security-token"})


def redact_header(name: str, value: str) -> str:
    """``value`` with a credential replaced: ``Bearer abc`` -> ``Bearer <redacted>``."""
    if name.lower() not in SECRET_HEADERS:
        return value
    scheme, sep, _ = value.partition(" ")
    return f"{scheme} {REDACTED}" if sep and name.lower().endswith("authorization") \
        else REDACTED


def redact_url(url: str) -> str:
    """``url`` without user information and with secret query parameters redacted."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = urlencode([(k, REDACTED if k.lower() in SECRET_PARAMS else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)],
                      safe="<>")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def format_headers(headers: Iterable[tuple[str, str]]) -> str:
    """``name: value`` pairs, redacted, separated by ``; ``."""
    return "; ".join(f"{k}: {redact_header(k, v)}" for k, v in headers)


async def _on_request(request: httpx.Request) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("> %s %s [%s]", request.method, redact_url(str(request.url)),
                  format_headers(request.headers.multi_items()))


async def _on_response(response: httpx.Response) -> None:
    if log.isEnabledFor(logging.DEBUG):
        req = response.request
        log.debug("< %s %s %s %s [%s]", response.status_code, response.reason_phrase,
                  req.method, redact_url(str(req.url)),
                  format_headers(response.headers.multi_items()))


def install(client: httpx.AsyncClient) -> None:
    """Log ``client``'s exchanges at DEBUG (see the module docstring)."""
    hooks: dict[str, list[Any]] = client.event_hooks
    client.event_hooks = {"request": [*hooks.get("request", []), _on_request],
                          "response": [*hooks.get("response", []), _on_response]}


_AUTH_IN_TEXT = re.compile(r"(?i)\b((?:proxy-)?authorization:\s*)(?:(basic|bearer)\s+)?[^;\]\s]+")


class _Redacting(logging.Formatter):
    """``debug: <message>`` lines. A credential header in any message is redacted again:
    other log calls may format whatever an exception or a request held."""

    def format(self, record: logging.LogRecord) -> str:
        return _AUTH_IN_TEXT.sub(lambda m: f"{m.group(1)}{m.group(2) + ' ' if m.group(2) else ''}"
                                 f"{REDACTED}", super().format(record))


def cause_errno(e: BaseException) -> int | None:
    """The errno of the OS error behind ``e`` (httpx wraps httpcore wraps OSError)."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and isinstance(cur.errno, int):
            return cur.errno
        cur = cur.__cause__ or cur.__context__
    return None


def transport_cause(e: BaseException) -> str:
    """The first line of a connection failure, ``connection refused`` rather than anyio's
    ``All connection attempts failed``."""
    import errno

    if cause_errno(e) == errno.ECONNREFUSED:
        return "connection refused"
    text = str(e) or type(e).__name__
    return text.splitlines()[0]


#: The loggers ``--debug`` shows: the exchanges, and the registry client's retries.
DEBUG_LOGGERS = ("ocigitops.http", "ocigitops.registry")


def enable_debug(stream: Any = None) -> None:
    """Show the HTTP exchanges and retries at DEBUG on ``stream`` (stderr), as text lines.

    Only :data:`DEBUG_LOGGERS` change, and they stop propagating: the controller's JSON
    logs (on the root logger) keep their own level and format.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Redacting("debug: %(message)s"))
    for name in DEBUG_LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
