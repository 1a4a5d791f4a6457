"""The TCP fault proxy itself, against an echo server: it forwards, delays, freezes (and
delivers what it held once thawed), and goes down (refused, open connections reset) and
comes back on the same port."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from interlock.testing.faultproxy import FaultProxy


@pytest.fixture
async def link() -> AsyncIterator[FaultProxy]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    proxy = FaultProxy("127.0.0.1", server.sockets[0].getsockname()[1])
    await proxy.start()
    yield proxy
    await proxy.stop()
    server.close()


async def roundtrip(
    link: FaultProxy, data: bytes = b"ping"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
    writer.write(data)
    assert await asyncio.wait_for(reader.readexactly(len(data)), 2) == data
    return reader, writer


async def test_latency_delays_each_direction(link: FaultProxy) -> None:
    link.latency = 0.1
    started = time.monotonic()
    _, writer = await roundtrip(link)
    assert time.monotonic() - started >= 0.2
    writer.close()


async def test_freeze_holds_bytes_until_thawed(link: FaultProxy) -> None:
    reader, writer = await roundtrip(link)
    await link.set("freeze")
    writer.write(b"held")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(4), 0.3)
    await link.set("pass")
    assert await asyncio.wait_for(reader.readexactly(4), 2) == b"held"
    writer.close()


async def test_down_resets_and_refuses_then_comes_back_on_its_port(link: FaultProxy) -> None:
    reader, writer = await roundtrip(link)
    port = link.port
    await link.set("down")
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(10), 2)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    await link.set("pass")
    assert link.port == port
    _, again = await roundtrip(link)
    again.close()
    writer.close()
