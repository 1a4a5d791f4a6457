"""HTTPS through the intercepting proxy: the agent trusts interlock's CA, interlock
verifies the upstream, and decisions see inside the TLS."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from interlock.config import AgentConfig, HttpConfig
from interlock.identity.registry import AgentRegistry
from interlock.proxies.http.server import HttpProxy
from interlock.testing import CaptureSink, make_pdp
from tests.proxies.postgres.test_tls import self_signed

pytestmark = pytest.mark.integration
TOKEN = "coder-token-0123456789"


@pytest.fixture
async def https_upstream(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    cert, key = self_signed(tmp_path / "up")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"secure": request.secure, "path": request.path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    yield f"https://localhost:{runner.addresses[0][1]}", cert
    await runner.cleanup()


async def test_https_is_intercepted_decided_and_verified_upstream(
    tmp_path: Path,
    https_upstream: tuple[str, Path],
) -> None:
    base, upstream_ca = https_upstream
    sink = CaptureSink()
    proxy = HttpProxy(
        HttpConfig(listen="127.0.0.1:0", allow_networks=["127.0.0.0/8"], upstream_ca=upstream_ca),
        tmp_path / "data",
        make_pdp(sink=sink),
        AgentRegistry.from_config({"coder": AgentConfig(token=TOKEN)}),
    )
    await proxy.start()
    try:
        assert proxy.address is not None
        url = f"http://coder:{TOKEN}@{proxy.address[0]}:{proxy.address[1]}"
        async with httpx.AsyncClient(
            proxy=url, verify=ssl.create_default_context(cafile=proxy.ca_file)
        ) as client:
            r = await client.get(base + "/inside/tls")
        assert r.json() == {"secure": True, "path": "/inside/tls"}
        assert sink.last.action.details["path"] == "/inside/tls"
        assert sink.last.action.details["scheme"] == "https"
        out = await asyncio.to_thread(
            subprocess.run,
            ["curl", "-s", "--http2", "--cacert", str(proxy.ca_file), "-x", url, base + "/curl"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert '"path": "/curl"' in out.stdout
    finally:
        await proxy.stop()


async def test_an_untrusted_upstream_certificate_is_refused(
    tmp_path: Path,
    https_upstream: tuple[str, Path],
) -> None:
    base, _ = https_upstream
    proxy = HttpProxy(
        HttpConfig(listen="127.0.0.1:0", allow_networks=["127.0.0.0/8"]),
        tmp_path / "data",
        make_pdp(),
        AgentRegistry.from_config({"coder": AgentConfig(token=TOKEN)}),
    )
    await proxy.start()
    try:
        assert proxy.address is not None
        url = f"http://coder:{TOKEN}@{proxy.address[0]}:{proxy.address[1]}"
        async with httpx.AsyncClient(
            proxy=url, verify=ssl.create_default_context(cafile=proxy.ca_file)
        ) as client:
            r = await client.get(base + "/x")
        assert r.status_code == 502
    finally:
        await proxy.stop()
