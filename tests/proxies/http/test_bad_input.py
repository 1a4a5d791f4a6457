"""Malformed and hostile requests through the listener: a clear local answer, and the
upstream receives nothing."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from interlock.config import AgentConfig, HttpConfig
from interlock.identity.registry import AgentRegistry
from interlock.proxies.http.server import HttpProxy
from interlock.testing import make_pdp

pytestmark = pytest.mark.integration
TOKEN = "coder-token-0123456789"
AUTH = base64.b64encode(f"coder:{TOKEN}".encode()).decode()


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[tuple[str, int], int, list[bytes]]]:
    seen: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.Response(text="upstream")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    proxy = HttpProxy(
        HttpConfig(listen="127.0.0.1:0", allow_networks=["127.0.0.0/8"], max_body_bytes=4096),
        tmp_path,
        make_pdp(),
        AgentRegistry.from_config({"coder": AgentConfig(token=TOKEN)}),
    )
    await proxy.start()
    assert proxy.address is not None
    yield proxy.address, runner.addresses[0][1], seen
    await proxy.stop()
    await runner.cleanup()


async def raw(address: tuple[str, int], data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


def request(port: int, extra: bytes, body: bytes = b"") -> bytes:
    return (
        (
            f"POST http://127.0.0.1:{port}/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Proxy-Authorization: Basic {AUTH}\r\n"
        ).encode()
        + extra
        + b"\r\n"
        + body
    )


@pytest.mark.parametrize(
    ("extra", "body", "status"),
    [
        (b"X-Note: caf\xe9\r\nContent-Length: 2\r\n", b"ok", b"400"),
        (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n", b"400"),
        (b"Content-Length: 2\r\nContent-Length: 3\r\n", b"okk", b"400"),
        (b"Content-Length: 9000\r\n", b"x" * 9000, b"413"),
    ],
    ids=["invalid utf-8 header", "content-length and chunked", "two lengths", "oversized"],
)
async def test_refused_locally(
    setup: tuple[tuple[str, int], int, list[bytes]], extra: bytes, body: bytes, status: bytes
) -> None:
    address, port, seen = setup
    answer = await raw(address, request(port, extra, body))
    assert answer.split(b" ", 2)[1] == status, answer[:200]
    assert seen == []


async def test_garbage_gets_an_error_and_the_proxy_keeps_serving(
    setup: tuple[tuple[str, int], int, list[bytes]],
) -> None:
    address, port, seen = setup
    answer = await raw(address, b"NOT HTTP AT ALL\r\n\r\n")
    assert not answer.startswith(b"HTTP/1.1 200")
    ok = await raw(address, request(port, b"Content-Length: 2\r\n", b"ok"))
    assert ok.startswith(b"HTTP/1.1 200")
    assert seen == [b"ok"]
