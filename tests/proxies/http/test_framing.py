"""Exactly one framed upstream request per decided request, on every protocol pairing,
proven from a raw HTTP/1.1 upstream's own log of what it read (issue 19)."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interlock.proxies.http.server import HttpProxy
from interlock.testing import CaptureSink
from interlock.testing.services import self_signed_cert
from tests.proxies.http.rawh2 import h2_exchange
from tests.proxies.http.rawupstream import RawUpstream
from tests.proxies.http.test_clients import hypercorn_tls
from tests.proxies.http.util import (
    BASIC,
    connect,
    decided,
    proxy_url,
    raw_exchange,
    start_proxy,
    tunnel,
    websocket,
)

pytestmark = pytest.mark.integration

SMUGGLED = (
    b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    b"Content-Length: 58\r\n\r\n"
    b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}'
)
"""A whole second request as the body: an upstream reading an unframed body runs it."""

Rig = tuple[HttpProxy, CaptureSink, RawUpstream]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """The proxy, its audit records, and a raw HTTPS upstream that speaks only HTTP/1.1."""
    cert, key = self_signed_cert(tmp_path / "up")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    upstream = await RawUpstream(ctx).start()
    proxy, sink = await start_proxy(tmp_path, allow_networks=["127.0.0.0/8"], upstream_ca=cert)
    yield proxy, sink, upstream
    await proxy.stop()
    await upstream.stop()


async def curl(proxy: HttpProxy, url: str, *args: str, data: bytes = b"") -> tuple[str, str]:
    """(body, HTTP version to the proxy) of a curl run through the proxy."""
    out = await asyncio.to_thread(
        subprocess.run,
        [
            *("curl", "-sS", "--cacert", str(proxy.ca_file), "-x", proxy_url(proxy)),
            *("-w", "\n%{http_version}", *args, url),
        ],
        input=data,
        capture_output=True,
        timeout=60,
    )
    body, _, version = out.stdout.decode().rpartition("\n")
    return body, version


@pytest.mark.parametrize("version", ["--http2", "--http1.1"])
async def test_a_streamed_body_arrives_as_one_framed_request(rig: Rig, version: str) -> None:
    proxy, sink, upstream = rig
    url = f"https://localhost:{upstream.port}/upload"
    body, spoken = await curl(proxy, url, version, "-X", "POST", "-T", "-", data=SMUGGLED)
    assert (body, spoken) == ("ok", "2" if version == "--http2" else "1.1")
    [got] = upstream.requests
    assert (got.method, got.target, got.body) == (b"POST", b"/upload", SMUGGLED)
    assert got.header(b"content-length") == [str(len(SMUGGLED)).encode()]
    assert got.header(b"transfer-encoding") == []
    assert [r.action.details["path"] for r in decided(sink)] == ["/upload"]


class H2Only(ssl.SSLContext):
    """Through a proxy httpx offers `http/1.1` before `h2` whatever it is told, and
    mitmproxy honours the client's order: this context offers only h2."""

    def set_alpn_protocols(self, alpn_protocols: Any) -> None:
        super().set_alpn_protocols(["h2"])


def h2_client(proxy: HttpProxy) -> httpx.AsyncClient:
    """httpx speaking HTTP/2 inside its CONNECT tunnel to the proxy."""
    ctx = H2Only(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(proxy.ca_file))
    return httpx.AsyncClient(
        proxy=proxy_url(proxy),
        verify=ctx,
        http1=False,
        http2=True,
        timeout=30,
    )


async def stream(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for c in chunks:
        yield c


async def test_httpx_http2_streamed_body_arrives_as_one_framed_request(rig: Rig) -> None:
    proxy, sink, upstream = rig
    async with h2_client(proxy) as client:
        url = f"https://localhost:{upstream.port}/mcp"
        r = await client.post(url, content=stream([SMUGGLED[:10], SMUGGLED[10:]]))
    assert (r.status_code, r.http_version, r.text) == (200, "HTTP/2", "ok")
    assert [(g.target, g.body) for g in upstream.requests] == [(b"/mcp", SMUGGLED)]
    assert len(decided(sink)) == 1


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chunks=st.lists(
        st.one_of(st.binary(max_size=64), st.sampled_from([SMUGGLED, b"0\r\n\r\n", b"\r\n"])),
        max_size=5,
    ),
    method=st.sampled_from(["POST", "PUT", "PATCH", "DELETE", "GET"]),
)
async def test_any_h2_body_arrives_whole_in_exactly_one_request(
    rig: Rig, chunks: list[bytes], method: str
) -> None:
    proxy, sink, upstream = rig
    before, n = len(upstream.requests), len(decided(sink))
    async with h2_client(proxy) as client:
        url = f"https://localhost:{upstream.port}/p"
        # Arbitrary bytes, declared binary: untyped UTF-16-looking text is refused.
        binary = {"content-type": "application/octet-stream"}
        r = await client.request(method, url, content=stream(chunks), headers=binary)
    assert r.status_code == 200
    got = upstream.requests[before:]
    assert [(g.method.decode(), g.body) for g in got] == [(method, b"".join(chunks))]
    assert len(decided(sink)) == n + 1


async def test_pipelined_http1_requests_are_each_decided_and_arrive_once(rig: Rig) -> None:
    proxy, sink, upstream = rig
    assert proxy.address is not None
    reader, writer = await tunnel(proxy, f"localhost:{upstream.port}")
    ctx = ssl.create_default_context(cafile=str(proxy.ca_file))
    await writer.start_tls(ctx, server_hostname="localhost")
    host = b"Host: localhost:%d\r\n" % upstream.port
    one = b"POST /a HTTP/1.1\r\n" + host + b"Content-Length: 3\r\n\r\nabc"
    writer.write(one + b"GET /b HTTP/1.1\r\n" + host + b"\r\n")
    answers = b""
    while answers.count(b"HTTP/1.1 200") < 2:
        answers += await asyncio.wait_for(reader.read(65536), 15)
    writer.close()
    assert [(g.target, g.body) for g in upstream.requests] == [(b"/a", b"abc"), (b"/b", b"")]
    assert [r.action.details["path"] for r in decided(sink)] == ["/a", "/b"]


async def test_a_websocket_upgrade_is_one_request_then_frames(rig: Rig) -> None:
    proxy, sink, _ = rig
    plain = await RawUpstream().start()
    try:
        assert proxy.address is not None
        _, writer = await websocket(proxy, plain.port)
        # One masked text frame, "hi".
        frame = bytes([0x81, 0x82, 1, 2, 3, 4, ord("h") ^ 1, ord("i") ^ 2])
        plain.arrived.clear()
        writer.write(frame)
        await asyncio.wait_for(plain.arrived.wait(), 15)
        writer.close()
        assert [(g.method, g.target) for g in plain.requests] == [(b"GET", b"/ws")]
        data = bytes(plain.tunnelled[1])
        # The proxy re-frames with its own mask: same header, same payload.
        assert data[:2] == frame[:2]
        assert bytes(b ^ data[2 + i % 4] for i, b in enumerate(data[6:])) == b"hi"
        assert [r.action.details["path"] for r in decided(sink)] == ["/ws"]
    finally:
        await plain.stop()


@pytest.mark.parametrize("upgrade", ["foo", "h2c, websocket", "WebSocket2"])
async def test_an_upgrade_to_anything_but_websocket_is_refused(rig: Rig, upgrade: str) -> None:
    proxy, sink, _ = rig
    plain = await RawUpstream().start()
    try:
        assert proxy.address is not None
        answer = await raw_exchange(
            proxy.address,
            (
                f"GET http://127.0.0.1:{plain.port}/u HTTP/1.1\r\nHost: 127.0.0.1:{plain.port}\r\n"
                f"Proxy-Authorization: Basic {BASIC}\r\nUpgrade: {upgrade}\r\n"
                "Connection: Upgrade\r\n\r\n"
            ).encode(),
        )
        assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
        assert plain.requests == []
        assert decided(sink) == []
    finally:
        await plain.stop()


@pytest.fixture
async def h2_upstream(tmp_path: Path) -> AsyncIterator[tuple[int, Path, list[tuple[str, bytes]]]]:
    """hypercorn over TLS (h2), logging (path, body) of each request it serves."""
    cert, key = self_signed_cert(tmp_path / "h2")
    seen: list[tuple[str, bytes]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        seen.append((scope["path"], body))
        answer = json.dumps({"http_version": scope["http_version"]}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": answer})

    async with hypercorn_tls(app, cert, key) as port:
        yield port, cert, seen


async def test_h2_to_h2_streamed_body_arrives_once(
    tmp_path: Path, h2_upstream: tuple[int, Path, list[tuple[str, bytes]]]
) -> None:
    port, cert, seen = h2_upstream
    proxy, sink = await start_proxy(tmp_path, allow_networks=["127.0.0.0/8"], upstream_ca=cert)
    try:
        url = f"https://localhost:{port}/h2"
        body, spoken = await curl(proxy, url, "--http2", "-X", "POST", "-T", "-", data=SMUGGLED)
        assert (json.loads(body), spoken) == ({"http_version": "2"}, "2")
        assert seen == [("/h2", SMUGGLED)]
        assert len(decided(sink)) == 1
    finally:
        await proxy.stop()


def h2_head(upstream: RawUpstream, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", f"localhost:{upstream.port}".encode()),
        (b":path", b"/h2raw"),
        *extra,
    ]


async def test_h2_frames_in_several_data_frames_arrive_as_one_body(rig: Rig) -> None:
    proxy, sink, upstream = rig
    target = f"localhost:{upstream.port}"
    status, body, _ = await h2_exchange(
        proxy, target, h2_head(upstream), [b"a" * 10, SMUGGLED, b""]
    )
    assert (status, body) == (200, b"ok")
    assert [(g.target, g.body) for g in upstream.requests] == [(b"/h2raw", b"a" * 10 + SMUGGLED)]
    assert len(decided(sink)) == 1


@pytest.mark.parametrize(
    ("extra", "data", "trailers"),
    [
        ((), [b"abc"], [(b"x-late", b"1")]),
        (((b"x-a", b"foo\x01bar"),), [b"abc"], None),
        (((b"content-length", b"3"),), [b"abcdef"], None),
        (((b"content-length", b"03"),), [b"abc"], None),
        (((b"transfer-encoding", b"chunked"),), [b"3\r\nabc\r\n0\r\n\r\n"], None),
        (((b"host", b"other.example"),), [b"abc"], None),
        (((b"x-a", b"1\r\nx-b: 2"),), [b"abc"], None),
    ],
    ids=[
        "trailers",
        "control in a value",
        "content-length shorter than the data",
        "content-length with a leading zero",
        "transfer-encoding",
        "host disagreeing with authority",
        "CRLF in a value",
    ],
)
async def test_malformed_h2_requests_reach_nobody(
    rig: Rig, extra: tuple[tuple[bytes, bytes], ...], data: list[bytes], trailers: Any
) -> None:
    proxy, sink, upstream = rig
    target = f"localhost:{upstream.port}"
    status, _, _ = await h2_exchange(proxy, target, h2_head(upstream, *extra), data, trailers)
    assert status in (None, 400)  # None: the stream was reset as malformed (h2's own checks)
    assert upstream.requests == []
    assert decided(sink) == []


async def test_bytes_that_are_not_http_in_a_tunnel_are_refused(rig: Rig) -> None:
    proxy, _, upstream = rig
    assert proxy.address is not None
    answer = await raw_exchange(
        proxy.address, connect(f"localhost:{upstream.port}") + b"\x00\x01\x02 binary\r\n\r\n"
    )
    assert b"HTTP/1.1 400" in answer, answer[:300]
    assert upstream.requests == []
    assert upstream.tunnelled == {}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chunks=st.lists(
        st.one_of(st.binary(min_size=1, max_size=64), st.just(SMUGGLED)), min_size=0, max_size=5
    ),
    extension=st.sampled_from([b"", b";x=1", b";name"]),
)
async def test_any_chunked_http1_body_arrives_whole_in_exactly_one_request(
    rig: Rig, chunks: list[bytes], extension: bytes
) -> None:
    proxy, sink, _ = rig
    assert proxy.address is not None
    plain = await RawUpstream().start()
    try:
        n = len(decided(sink))
        body = b"".join(b"%x%s\r\n%s\r\n" % (len(c), extension, c) for c in chunks)
        answer = await raw_exchange(
            proxy.address,
            (
                f"POST http://127.0.0.1:{plain.port}/c HTTP/1.1\r\nHost: 127.0.0.1:{plain.port}\r\n"
                f"Proxy-Authorization: Basic {BASIC}\r\nTransfer-Encoding: chunked\r\n"
                "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
            ).encode()
            + body
            + b"0\r\n\r\n",
        )
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert [(g.target, g.body) for g in plain.requests] == [(b"/c", b"".join(chunks))]
        assert plain.requests[0].header(b"transfer-encoding") == []
        assert len(decided(sink)) == n + 1
    finally:
        await plain.stop()


async def test_a_connect_inside_a_tunnel_reaches_nobody(rig: Rig) -> None:
    """mitmproxy refuses CONNECT outside regular mode (an upstream would read it as a
    proxy request of its own); this holds it to that."""
    proxy, sink, upstream = rig
    reader, writer = await tunnel(proxy, f"localhost:{upstream.port}")
    await writer.start_tls(
        ssl.create_default_context(cafile=str(proxy.ca_file)), server_hostname="localhost"
    )
    writer.write(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(65536), 15)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert upstream.requests == []
    assert decided(sink) == []
