"""Slow and silent clients are closed at their deadline, each address holds at most its
cap of connections, and other clients are served promptly meanwhile (issue 19)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from interlock.proxies.http.server import HttpProxy
from interlock.testing import CaptureSink
from interlock.testing.services import self_signed_cert
from tests.proxies.http.rawupstream import RawUpstream
from tests.proxies.http.util import BASIC, start_proxy, tunnel, websocket

pytestmark = pytest.mark.integration

TIMEOUT = 1.0
CAP = 30
Rig = tuple[HttpProxy, CaptureSink, RawUpstream]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    upstream = await RawUpstream().start()
    proxy, sink = await start_proxy(
        tmp_path,
        allow_networks=["127.0.0.0/8"],
        header_timeout=TIMEOUT,
        idle_timeout=TIMEOUT,
        body_timeout=TIMEOUT,
        max_connections_per_client=CAP,
    )
    yield proxy, sink, upstream
    await proxy.stop()
    await upstream.stop()


def head(port: int, extra: str = "") -> bytes:
    return (
        f"POST http://127.0.0.1:{port}/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Proxy-Authorization: Basic {BASIC}\r\n{extra}\r\n"
    ).encode()


async def closed_after(reader: asyncio.StreamReader, limit: float, start: float) -> float:
    """Seconds from `start` until the proxy closes this connection (reading and
    discarding); fails if it is still open after `limit`."""
    with contextlib.suppress(ConnectionError):
        while await asyncio.wait_for(reader.read(65536), limit):
            pass
    return time.monotonic() - start


async def served_in(proxy: HttpProxy, port: int, source: str) -> float:
    """Seconds a well-behaved client from `source` waits for its answer."""
    assert proxy.address is not None
    start = time.monotonic()
    reader, writer = await asyncio.open_connection(*proxy.address, local_addr=(source, 0))
    writer.write(head(port, "Content-Length: 2\r\nConnection: close\r\n") + b"ok")
    answer = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    return time.monotonic() - start


async def echo_round_trip() -> float:
    """Seconds for one round trip to an echo server on this loop."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    start = time.monotonic()
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.read(100), 10) == b"ping"
    writer.close()
    server.close()
    return time.monotonic() - start


async def test_slowloris_is_closed_and_others_are_served(rig: Rig) -> None:
    proxy, sink, upstream = rig
    assert proxy.address is not None
    proxy.refusal_budget.interval = 0.0  # every refusal written (the flood limit: below)
    conns = []
    watchers = []
    slowest_open = 0.0
    for _ in range(CAP + 20):
        before = time.monotonic()
        conn = await asyncio.open_connection(*proxy.address)
        slowest_open = max(slowest_open, time.monotonic() - before)
        conns.append(conn)
        # Each close is timed from that connection's own open, as it happens: neither
        # how long the others took to open (a full accept queue retries a SYN after a
        # second) nor the checks below count against it.
        opened = time.monotonic()
        watchers.append(asyncio.create_task(closed_after(conn[0], 3 * TIMEOUT + 5, opened)))
    whole = head(upstream.port, "Content-Length: 5\r\n")
    for i, (_, writer) in enumerate(conns):
        if i % 3 == 1:
            writer.write(whole[:40])  # half a head, then silence
        elif i % 3 == 2:
            writer.write(whole + b"ab")  # a head, then part of the body
    stop = asyncio.Event()

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            while not stop.is_set():
                for _, w in conns[::3]:
                    if not w.is_closing():
                        w.write(b"X")
                await asyncio.sleep(0.1)

    trickler = asyncio.create_task(trickle())
    await asyncio.sleep(0.2)
    # Another address (and the proxy's loop, shared with the other proxies) is not starved.
    waits = [await served_in(proxy, upstream.port, "127.0.0.2") for _ in range(5)]
    # The other proxies share this process and loop: a server beside it still answers.
    waits.append(await echo_round_trip())
    closed = await asyncio.gather(*watchers)
    stop.set()
    await trickler
    print(
        f"served in {max(waits):.3f} s at most; closed after {sorted(closed)[-1]:.2f} s; "
        f"slowest open {slowest_open:.3f} s; closes {sorted(round(c, 2) for c in closed)}"
    )
    assert max(waits) < TIMEOUT / 2
    # Beyond the cap: closed at once; the rest: at their deadline, not before.
    assert sum(c < TIMEOUT / 2 for c in closed) >= 20
    assert all(c < TIMEOUT + 1.5 for c in closed)
    assert sum(c >= TIMEOUT * 0.9 for c in closed) >= CAP - 1
    assert [r.target for r in upstream.requests] == [b"/x"] * 5
    assert [r.body for r in upstream.requests] == [b"ok"] * 5
    # Nothing is held any more: the proxy's own table of connections is empty.
    assert proxy.master is not None
    for _ in range(100):
        if not proxy.master.addons.get("proxyserver").connections:
            break
        await asyncio.sleep(0.02)
    assert proxy.master.addons.get("proxyserver").connections == {}
    # Each refusal is a decision in the log: the connections over the cap, and those
    # closed with a request unfinished (none for the served ones).
    await proxy.refusals.drain()
    refused = [r for r in sink.records if r.action.details.get("connection")]
    reasons = [r.decision.reasons[0] for r in refused]
    assert sum(x == f"more than {CAP} connections from 127.0.0.1" for x in reasons) == 20
    assert (
        sum(x.startswith(("no complete request head", "no complete body")) for x in reasons)
        >= CAP - 1
    )
    assert all(
        r.decision.effect.value == "deny" and r.action.agent.id == "anonymous" for r in refused
    )


async def test_an_idle_keep_alive_connection_is_closed(rig: Rig) -> None:
    proxy, _, upstream = rig
    assert proxy.address is not None
    reader, writer = await asyncio.open_connection(*proxy.address)
    writer.write(head(upstream.port, "Content-Length: 2\r\n") + b"ok")
    assert (await asyncio.wait_for(reader.readuntil(b"ok"), 10)).startswith(b"HTTP/1.1 200")
    waited = await closed_after(reader, 3 * TIMEOUT + 5, time.monotonic())
    assert TIMEOUT * 0.6 < waited < TIMEOUT + 1.5
    writer.close()


async def test_a_connection_under_its_deadline_keeps_working(rig: Rig) -> None:
    proxy, _, upstream = rig
    assert proxy.address is not None
    reader, writer = await asyncio.open_connection(*proxy.address)
    for _ in range(3):
        await asyncio.sleep(TIMEOUT / 2)
        writer.write(head(upstream.port, "Content-Length: 2\r\n") + b"ok")
        assert (await asyncio.wait_for(reader.readuntil(b"ok"), 10)).startswith(b"HTTP/1.1 200")
    writer.close()
    assert len(upstream.requests) == 3


async def test_a_silent_connect_tunnel_is_closed(rig: Rig) -> None:
    proxy, _, upstream = rig
    assert proxy.address is not None
    reader, writer = await tunnel(proxy, f"localhost:{upstream.port}")
    waited = await closed_after(reader, 3 * TIMEOUT + 5, time.monotonic())
    assert TIMEOUT * 0.6 < waited < TIMEOUT + 1.5
    writer.close()


async def test_pass_through_tunnels_and_websockets_outlive_the_request_deadlines(
    tmp_path: Path,
) -> None:
    cert, key = self_signed_cert(tmp_path / "up")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    tls_upstream = await RawUpstream(ctx).start()
    plain = await RawUpstream().start()
    proxy, _ = await start_proxy(
        tmp_path,
        allow_networks=["127.0.0.0/8"],
        passthrough=["localhost"],
        header_timeout=TIMEOUT,
        idle_timeout=TIMEOUT,
    )
    try:
        assert proxy.address is not None
        # Pass-through: the client's TLS goes straight to the upstream.
        reader, writer = await tunnel(proxy, f"localhost:{tls_upstream.port}")
        await writer.start_tls(
            ssl.create_default_context(cafile=str(cert)), server_hostname="localhost"
        )
        await asyncio.sleep(TIMEOUT * 1.5)
        writer.write(b"GET /late HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"ok"), 10)).startswith(b"HTTP/1.1 200")
        writer.close()
        # WebSocket: after the 101 only the tunnel idle timeout applies.
        reader, writer = await websocket(proxy, plain.port)
        await asyncio.sleep(TIMEOUT * 1.5)
        plain.arrived.clear()
        writer.write(bytes([0x81, 0x80, 1, 2, 3, 4]))  # an empty masked text frame
        await asyncio.wait_for(plain.arrived.wait(), 10)
        writer.close()
        assert [r.target for r in tls_upstream.requests] == [b"/late"]
        assert len(plain.tunnelled[1]) == 6
    finally:
        await proxy.stop()
        await tls_upstream.stop()
        await plain.stop()
