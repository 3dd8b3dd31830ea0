"""A network backend for httpx's connection pool that remembers each connection's socket.

Before every request httpcore's pool asks each idle connection ``has_expired()``, which
asks the stream ``get_extra_info("is_readable")``. Through anyio that looks the raw
socket up in the stream's typed attributes, and a TLS stream rebuilds its whole
attribute map (its transport's included) on every lookup. With 16 kept-alive
connections to the API server that was about 12% of the controller's CPU under load
(py-spy, 500 pairs). The socket of a connection never changes, so this backend looks it
up once, when the connection is made, and answers the readability check from it.

httpcore has no public way to pass a backend through httpx, so :func:`install` sets the
pool's backend attribute when it is there and leaves the client as it is otherwise (the
cost is only speed).
"""

# ruff: noqa: ASYNC109  (the timeout parameters are httpcore's interface)
from __future__ import annotations

import ssl
import typing
from collections.abc import Iterable

import httpcore
import httpx
from httpcore._utils import is_socket_readable

# httpcore's own alias, spelled out: its module is private.
SocketOption = (tuple[int, int, int] | tuple[int, int, bytes | bytearray]
                | tuple[int, int, None, int])


class _Stream(httpcore.AsyncNetworkStream):
    """Delegates to the backend's stream; answers ``socket`` and ``is_readable`` from
    the socket looked up once."""

    def __init__(self, inner: httpcore.AsyncNetworkStream,
                 sock: typing.Any = None) -> None:
        self._inner = inner
        self._sock = sock if sock is not None else inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        # TLS wraps the same socket: keep it.
        return _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout),
                       self._sock)

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable":
            return is_socket_readable(self._sock)
        if info == "socket" and self._sock is not None:
            return self._sock
        return self._inner.get_extra_info(info)


class CachedSocketBackend(httpcore.AsyncNetworkBackend):
    """Wraps the pool's own backend; its streams keep their socket."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[SocketOption] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_tcp(host, port, timeout, local_address,
                                                     socket_options))

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[SocketOption] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def install(client: httpx.AsyncClient | object) -> bool:
    """Give ``client``'s connection pool a :class:`CachedSocketBackend`; call before its
    first request. True when installed; False (nothing changed) when ``client`` is not
    an httpx client on httpx's own pool."""
    if not isinstance(client, httpx.AsyncClient):
        return False
    transport = getattr(client, "_transport", None)
    pool = getattr(transport, "_pool", None)
    if not isinstance(pool, httpcore.AsyncConnectionPool):
        return False
    inner = getattr(pool, "_network_backend", None)
    if not isinstance(inner, httpcore.AsyncNetworkBackend) \
            or isinstance(inner, CachedSocketBackend):
        return False
    pool._network_backend = CachedSocketBackend(inner)
    return True
