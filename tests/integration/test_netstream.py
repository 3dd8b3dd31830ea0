"""ocigitops.netstream against a real HTTP/1.1 server on 127.0.0.1: the pool keeps its
connection alive, and notices when the server closed it (the readability check the
cached socket answers). TLS through the same backend is covered by every e2e test: the
API server client is built with it."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from ocigitops import netstream
from ocigitops.netstream import CachedSocketBackend

pytestmark = pytest.mark.integration


async def _serve(close_after: int) -> tuple[asyncio.Server, list[int]]:
    """A keep-alive server that closes each connection after ``close_after`` answers;
    the list counts connections."""
    conns: list[int] = []

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        conns.append(1)
        try:
            for _ in range(close_after):
                while (await r.readline()) not in (b"\r\n", b""):
                    pass
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await w.drain()
        finally:
            w.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), conns


def test_install_only_on_httpx_pool() -> None:
    assert netstream.install(object()) is False
    client = httpx.AsyncClient()
    assert netstream.install(client) is True
    assert netstream.install(client) is False  # already installed: not wrapped twice


def test_keepalive_and_server_close() -> None:
    asyncio.run(_keepalive_and_server_close())


async def _keepalive_and_server_close() -> None:
    server, conns = await _serve(close_after=2)
    port = server.sockets[0].getsockname()[1]
    async with server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert netstream.install(client)
        pool = client._transport._pool  # type: ignore[attr-defined]
        assert isinstance(pool._network_backend, CachedSocketBackend)
        assert (await client.get("/")).text == "ok"
        stream = pool.connections[0]._connection._network_stream
        assert isinstance(stream, netstream._Stream)
        assert stream.get_extra_info("is_readable") is False  # idle, still open
        assert (await client.get("/")).text == "ok"
        assert len(conns) == 1  # the second request reused the connection
        await asyncio.sleep(0.1)  # the server has closed it: readable (EOF)
        assert stream.get_extra_info("is_readable") is True
        assert (await client.get("/")).text == "ok"
        assert len(conns) == 2  # the pool saw the close and reconnected
