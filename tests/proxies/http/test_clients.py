"""More real clients through the listening proxy: requests (HTTP and HTTPS), curl over
HTTP/2 end to end (to an HTTP/2 upstream), and an agent that authenticates with a JWT."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from aiohttp import web
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from interlock.config import AgentConfig, HttpConfig, JwtConfig
from interlock.identity.jwt import JwtVerifier
from interlock.identity.registry import AgentRegistry
from interlock.proxies.http.server import HttpProxy
from interlock.testing import CaptureSink, make_pdp
from tests.identity.test_jwt import AUD, ISS, RSA_KEY, jwk, token
from tests.proxies.http.util import proxy_url, start_proxy
from tests.proxies.postgres.test_tls import self_signed
from tests.services import free_port, listening

pytestmark = pytest.mark.integration


@pytest.fixture
async def upstreams(tmp_path: Path) -> AsyncIterator[tuple[str, str, Path]]:
    """(plain base URL, TLS base URL, the TLS server's certificate)."""
    cert, key = self_signed(tmp_path / "up")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path, "secure": request.secure})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    plain, tls = (a[1] for a in runner.addresses)
    yield f"http://127.0.0.1:{plain}", f"https://localhost:{tls}", cert
    await runner.cleanup()


async def test_requests_over_http_and_https(
    tmp_path: Path, upstreams: tuple[str, str, Path]
) -> None:
    plain, tls, cert = upstreams
    proxy, sink = await start_proxy(tmp_path, allow_networks=["127.0.0.0/8"], upstream_ca=cert)
    try:
        url = proxy_url(proxy)

        def fetch() -> tuple[object, object]:
            with requests.Session() as s:
                s.proxies = {"http": url, "https": url}
                # Per request: requests lets REQUESTS_CA_BUNDLE override Session.verify.
                ca = str(proxy.ca_file)
                a = s.get(plain + "/requests/plain", timeout=30, verify=ca).json()
                b = s.get(tls + "/requests/tls", timeout=30, verify=ca).json()
            return a, b

        a, b = await asyncio.to_thread(fetch)
        assert a == {"path": "/requests/plain", "secure": False}
        assert b == {"path": "/requests/tls", "secure": True}
        assert [r.action.details["path"] for r in sink.records] == [
            "/requests/plain",
            "/requests/tls",
        ]
    finally:
        await proxy.stop()


@pytest.fixture
async def h2_upstream(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """hypercorn, which speaks HTTP/2 over TLS (mitmproxy mirrors the upstream's ALPN)."""
    cert, key = self_signed(tmp_path / "h2")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = json.dumps({"path": scope["path"], "http_version": scope["http_version"]})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})

    async with hypercorn_tls(app, cert, key) as port:
        yield f"https://localhost:{port}", cert


@contextlib.asynccontextmanager
async def hypercorn_tls(app: Any, cert: Path, key: Path) -> AsyncIterator[int]:
    """An ASGI app served by hypercorn over TLS on a free port (HTTP/2 by ALPN)."""
    port = free_port()
    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{port}"]
    config.certfile, config.keyfile = str(cert), str(key)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
    await asyncio.to_thread(wait_listening, port)
    yield port
    stop.set()
    await task


def wait_listening(port: int) -> None:
    for _ in range(200):
        if listening(port):
            return
        time.sleep(0.05)
    raise RuntimeError("hypercorn did not start")


async def test_curl_speaks_http2_end_to_end_through_the_tunnel(
    tmp_path: Path, h2_upstream: tuple[str, Path]
) -> None:
    base, cert = h2_upstream
    proxy, sink = await start_proxy(tmp_path, allow_networks=["127.0.0.0/8"], upstream_ca=cert)
    try:
        # curl, because it prefers h2 in its ALPN offer; httpx offers http/1.1 first and
        # mitmproxy honours the client's order.
        out = await asyncio.to_thread(
            subprocess.run,
            [
                "curl",
                "-s",
                "--http2",
                "--cacert",
                str(proxy.ca_file),
                "-x",
                proxy_url(proxy),
                "-w",
                "\n%{http_version}",
                base + "/curl",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        body, version = out.stdout.rsplit("\n", 1)
        assert (json.loads(body), version) == ({"path": "/curl", "http_version": "2"}, "2")
        assert sink.last.action.details["path"] == "/curl"
    finally:
        await proxy.stop()


async def test_an_agent_authenticates_with_a_jwt(
    tmp_path: Path, upstreams: tuple[str, str, Path]
) -> None:
    plain, _, _ = upstreams
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk(RSA_KEY, "rsa1", "RS256")]}))
    registry = AgentRegistry.from_config({"reporter": AgentConfig(roles=["analyst"])})
    sink = CaptureSink()
    proxy = HttpProxy(
        HttpConfig(listen="127.0.0.1:0", allow_networks=["127.0.0.0/8"]),
        tmp_path / "data",
        make_pdp(sink=sink),
        registry,
        JwtVerifier(JwtConfig(issuer=ISS, audience=AUD, jwks_file=jwks), registry),
    )
    await proxy.start()
    try:
        assert proxy.address is not None
        where = f"http://{proxy.address[0]}:{proxy.address[1]}"
        good = httpx.Proxy(where, headers={"Proxy-Authorization": f"Bearer {token()}"})
        async with httpx.AsyncClient(proxy=good) as client:
            r = await client.get(plain + "/jwt")
        assert r.status_code == 200
        assert (sink.last.action.agent.id, sink.last.action.agent.authn) == ("reporter", "jwt")
        expired = httpx.Proxy(where, headers={"Proxy-Authorization": f"Bearer {token(exp=1)}"})
        async with httpx.AsyncClient(proxy=expired) as client:
            assert (await client.get(plain + "/jwt")).status_code == 407
    finally:
        await proxy.stop()
