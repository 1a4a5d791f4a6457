"""One destination per tunnel: CONNECT target, TLS SNI and Host header must agree, and
pass-through applies only to a tunnel whose CONNECT target is the pass-through host."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from interlock.core.model import Operation
from tests.proxies.http.util import (
    absolute_form,
    connect,
    proxy_url,
    raw_exchange,
    start_proxy,
)
from tests.proxies.postgres.test_tls import self_signed

pytestmark = pytest.mark.integration


@dataclass
class Upstream:
    port: int
    cert: Path
    hits: list[str] = field(default_factory=list)


@pytest.fixture
async def https_upstream(tmp_path: Path) -> AsyncIterator[Upstream]:
    cert, key = self_signed(tmp_path / "up")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    up = Upstream(0, cert)

    async def handler(request: web.Request) -> web.Response:
        up.hits.append(request.path)
        return web.Response(text=f"hello {request.path}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    up.port = runner.addresses[0][1]
    yield up
    await runner.cleanup()


def tunnel_get(proxy: tuple[str, int], target: str, sni: str, cafile: Path) -> str:
    """CONNECT to `target`, then TLS with `sni`, trusting only `cafile`; returns the body."""
    with socket.create_connection(proxy, timeout=10) as sock:
        sock.sendall(connect(target))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("proxy closed during CONNECT")
            head += chunk
        assert head.startswith(b"HTTP/1.1 200"), head
        ctx = ssl.create_default_context(cafile=str(cafile))
        ctx.check_hostname = False  # the SNI under test need not match the certificate
        with ctx.wrap_socket(sock, server_hostname=sni) as tls:
            tls.sendall(
                f"GET /tunnel HTTP/1.1\r\nHost: {sni}:{target.rsplit(':', 1)[1]}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            out = b""
            while chunk := tls.recv(65536):
                out += chunk
    return out.decode()


async def test_sni_disagreeing_with_the_connect_target_is_refused(
    tmp_path: Path, https_upstream: Upstream
) -> None:
    proxy, sink = await start_proxy(
        tmp_path, allow_networks=["127.0.0.0/8"], upstream_ca=https_upstream.cert
    )
    try:
        assert proxy.address is not None
        target = f"localhost:{https_upstream.port}"
        ok = await asyncio.to_thread(tunnel_get, proxy.address, target, "localhost", proxy.ca_file)
        assert "hello /tunnel" in ok
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            await asyncio.to_thread(
                tunnel_get, proxy.address, target, "evil.example", proxy.ca_file
            )
    finally:
        await proxy.stop()
    assert https_upstream.hits == ["/tunnel"]
    # The refused handshake is a decision of its own, under the agent of its CONNECT.
    [record] = [r for r in sink.records if r.action.details.get("guard")]
    assert record.action.details["tls"] is True
    assert record.action.agent.id == "coder"
    assert record.action.target == "localhost"
    assert "'evil.example' does not match" in record.decision.reasons[0]
    assert record.decision.effect.value == "deny"


async def test_a_passthrough_host_is_tunnelled_without_interception(
    tmp_path: Path, https_upstream: Upstream
) -> None:
    proxy, sink = await start_proxy(
        tmp_path, allow_networks=["127.0.0.0/8"], passthrough=["localhost"]
    )
    try:
        assert proxy.address is not None
        # Trusting only the upstream's own certificate proves nobody sat in between.
        body = await asyncio.to_thread(
            tunnel_get,
            proxy.address,
            f"localhost:{https_upstream.port}",
            "localhost",
            https_upstream.cert,
        )
        assert "hello /tunnel" in body
        assert sink.last.action.operation is Operation.CONNECT
        assert sink.last.action.target == "localhost"
    finally:
        await proxy.stop()


async def test_a_passthrough_sni_cannot_open_a_blind_tunnel_elsewhere(
    tmp_path: Path, https_upstream: Upstream
) -> None:
    """mitmproxy's ignore_hosts would pass this through unseen: the SNI names the
    pass-through host, the CONNECT target is another (undecided) one."""
    proxy, _ = await start_proxy(
        tmp_path, allow_networks=["127.0.0.0/8"], passthrough=["localhost"]
    )
    try:
        assert proxy.address is not None
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            await asyncio.to_thread(
                tunnel_get,
                proxy.address,
                f"127.0.0.1:{https_upstream.port}",
                "localhost",
                https_upstream.cert,
            )
    finally:
        await proxy.stop()
    assert https_upstream.hits == []


async def test_a_host_header_naming_another_host_gets_421(
    tmp_path: Path, https_upstream: Upstream
) -> None:
    proxy, _ = await start_proxy(
        tmp_path, allow_networks=["127.0.0.0/8"], upstream_ca=https_upstream.cert
    )
    try:
        assert proxy.address is not None
        async with httpx.AsyncClient(
            proxy=proxy_url(proxy), verify=ssl.create_default_context(cafile=proxy.ca_file)
        ) as client:
            r = await client.get(
                f"https://localhost:{https_upstream.port}/fronted",
                headers={"Host": "other.example"},
            )
        assert r.status_code == 421
        assert "other.example" in r.json()["reason"]
        raw = await raw_exchange(
            proxy.address,
            absolute_form(f"localhost:{https_upstream.port}").replace(
                f"Host: localhost:{https_upstream.port}".encode(), b"Host: other.example"
            ),
        )
        assert raw.startswith(b"HTTP/1.1 421")
    finally:
        await proxy.stop()
    assert https_upstream.hits == []


async def test_isolation_closes_the_agents_open_tunnels(
    tmp_path: Path, https_upstream: Upstream
) -> None:
    proxy, sink = await start_proxy(tmp_path, allow_networks=["127.0.0.0/8"])
    try:
        assert proxy.address is not None
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(connect(f"localhost:{https_upstream.port}"))
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await proxy.pdp.store.restrict("coder", (), isolate=True, reason="decision cause-1")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the proxy
        assert loop.time() - t0 < 1.0
        writer.close()
    finally:
        await proxy.stop()
    # The connection it ended is a record of its own, linked to the isolating decision.
    [ended] = [r for r in sink.records if r.action.details.get("session") == "ended"]
    assert ended.action.agent.id == "coder"
    assert ended.action.parents == ("cause-1",)
    assert ended.decision.reasons == ("session ended: agent isolated",)


async def test_an_absolute_url_inside_a_tunnel_must_name_the_tunnel(
    tmp_path: Path, https_upstream: Upstream
) -> None:
    proxy, _ = await start_proxy(tmp_path, allow_networks=["127.0.0.0/8"])
    try:
        assert proxy.address is not None
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(connect(f"127.0.0.1:{https_upstream.port}"))
        await writer.drain()
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        ctx = ssl.create_default_context(cafile=str(proxy.ca_file))
        ctx.check_hostname = False
        await writer.start_tls(ctx, server_hostname=None)
        writer.write(
            f"GET http://evil.example/x HTTP/1.1\r\nHost: 127.0.0.1:{https_upstream.port}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert head.startswith(b"HTTP/1.1 421"), head[:100]
    finally:
        await proxy.stop()
    assert https_upstream.hits == []
