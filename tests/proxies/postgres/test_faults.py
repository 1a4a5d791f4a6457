"""Hostile and broken clients, and a dying upstream: the proxy fails closed and keeps
serving everyone else."""

from __future__ import annotations

import asyncio
import struct

import asyncpg
import pytest

from interlock.config import AgentConfig, PostgresConfig
from interlock.proxies.postgres import messages as m
from interlock.proxies.postgres.codec import BackendReader
from interlock.proxies.postgres.server import PostgresProxy
from tests.proxies.postgres.conftest import TOKEN, Proxied

pytestmark = pytest.mark.integration


async def exchange(proxied: Proxied, data: bytes, wait: float = 5.0) -> list[object]:
    reader, writer = await asyncio.open_connection(proxied.host, proxied.port)
    writer.write(data)
    await writer.drain()
    backend = BackendReader()
    out: list[object] = []
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), wait)
            if not chunk:
                break
            backend.feed(chunk)
            while (msg := backend.next()) is not None:
                out.append(msg)
    finally:
        writer.close()
    return out


def fatal(msgs: list[object]) -> m.ErrorResponse:
    errors = [x for x in msgs if isinstance(x, m.ErrorResponse)]
    assert errors, msgs
    assert errors[-1].fields["S"] == "FATAL"
    return errors[-1]


async def still_serving(proxied: Proxied) -> None:
    conn = await asyncpg.connect(proxied.dsn())
    try:
        assert await conn.fetchval("select 1") == 1
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x00\x00\x00\x08garbage!", "08P01"),
        (struct.pack("!i", -1), "08P01"),
        (struct.pack("!i", 50_000) + b"x" * 100, "08P01"),
        (m.StartupMessage({"user": "reporter", "options": "-c role=postgres"}).encode(), "08004"),
        (
            m.StartupMessage({"user": "reporter"}).encode()
            + m.StartupMessage({"user": "reporter"}).encode(),
            "08P01",
        ),
        (m.StartupMessage({"user": "reporter"}).encode() + m.Query("select 1").encode(), "08P01"),
    ],
    ids=[
        "garbage",
        "negative length",
        "oversized startup",
        "options parameter",
        "second startup mid-auth",
        "query before auth",
    ],
)
async def test_bad_connections_get_a_fatal_error(proxied: Proxied, data: bytes, code: str) -> None:
    assert fatal(await exchange(proxied, data)).code == code
    await still_serving(proxied)


async def test_ssl_and_gssenc_requests_are_declined(proxied: Proxied) -> None:
    reader, writer = await asyncio.open_connection(proxied.host, proxied.port)
    writer.write(m.SSLRequest().encode())
    assert await reader.readexactly(1) == b"N"
    writer.write(m.GSSENCRequest().encode())
    assert await reader.readexactly(1) == b"N"
    writer.close()


async def test_a_client_that_never_finishes_logging_in_is_cut_off(proxied: Proxied) -> None:
    proxy = PostgresProxy(
        PostgresConfig(
            listen="127.0.0.1:0", upstream=proxied.proxy.config.upstream, login_timeout=0.3
        ),
        {"reporter": AgentConfig(token=TOKEN)},
        proxied.pdp,
        proxied.proxy.classifier,
    )
    await proxy.start()
    try:
        assert proxy.address is not None
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(m.StartupMessage({"user": "reporter"}).encode()[:10])
        data = await asyncio.wait_for(reader.read(), 5)
        backend = BackendReader()
        backend.feed(data)
        msg = backend.next()
        assert isinstance(msg, m.ErrorResponse)
        assert msg.code == "08006"
    finally:
        await proxy.stop()


async def test_oversized_message_after_login_is_refused(proxied: Proxied) -> None:
    conn = await asyncpg.connect(proxied.dsn())
    try:
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await conn.execute("select '" + "x" * (65 * 1024 * 1024) + "'")
    finally:
        conn.terminate()
    await still_serving(proxied)


async def test_upstream_killed_mid_query_errors_this_client_only(proxied: Proxied) -> None:
    victim = await asyncpg.connect(proxied.dsn())
    other = await asyncpg.connect(proxied.dsn())
    try:
        pid = await victim.fetchval("select pg_backend_pid()")
        admin = await asyncpg.connect(proxied.proxy.config.upstream)
        try:
            task = asyncio.create_task(
                victim.fetchval("select count(*) from generate_series(1, 300000000)")
            )
            await asyncio.sleep(0.3)
            await admin.execute(f"select pg_terminate_backend({int(pid)})")
        finally:
            await admin.close()
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await task
        assert await other.fetchval("select 2") == 2
    finally:
        victim.terminate()
        await other.close()
    await still_serving(proxied)
