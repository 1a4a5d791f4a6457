"""The HTTP proxy end to end: real clients (curl, httpx) through the listening proxy to a
real local upstream."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from interlock.config import AgentConfig, HttpConfig
from interlock.identity.registry import AgentRegistry
from interlock.proxies.http.server import HttpProxy
from interlock.testing import CaptureSink, make_pdp
from tests.proxies.http.util import start_proxy

pytestmark = pytest.mark.integration
TOKEN = "coder-token-0123456789"


@dataclass
class Upstream:
    url: str
    seen: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream("")

    async def handler(request: web.Request) -> web.Response:
        up.seen.append(dict(request.headers))
        return web.json_response({"path": request.path, "ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    up.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield up
    await runner.cleanup()


async def make_proxy(tmp_path: Path, allow: list[str]) -> tuple[HttpProxy, CaptureSink]:
    sink = CaptureSink()
    pdp = make_pdp(sink=sink)
    proxy = HttpProxy(
        HttpConfig(listen="127.0.0.1:0", allow_networks=allow),
        tmp_path,
        pdp,
        AgentRegistry.from_config({"coder": AgentConfig(token=TOKEN)}),
    )
    await proxy.start()
    return proxy, sink


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[tuple[HttpProxy, CaptureSink]]:
    p, sink = await make_proxy(tmp_path, ["127.0.0.0/8"])
    yield p, sink
    await p.stop()


def proxy_url(p: HttpProxy, user: str = "coder", password: str = TOKEN) -> str:
    assert p.address is not None
    return f"http://{user}:{password}@{p.address[0]}:{p.address[1]}"


async def test_httpx_request_is_decided_and_forwarded_without_proxy_credentials(
    proxy: tuple[HttpProxy, CaptureSink],
    upstream: Upstream,
) -> None:
    p, sink = proxy
    async with httpx.AsyncClient(proxy=proxy_url(p)) as client:
        r = await client.get(upstream.url + "/v1/things?x=1")
    assert r.status_code == 200
    assert r.json() == {"path": "/v1/things", "ok": True}
    assert "Proxy-Authorization" not in upstream.seen[-1]
    action = sink.last.action
    assert (action.protocol, action.operation.value, action.target) == (
        "http",
        "egress",
        "127.0.0.1",
    )
    assert action.details["path"] == "/v1/things"
    assert list(action.details["query_keys"]) == ["x"]


async def test_curl_through_the_proxy(
    proxy: tuple[HttpProxy, CaptureSink], upstream: Upstream
) -> None:
    p, _ = proxy
    out = await asyncio.to_thread(
        subprocess.run,
        ["curl", "-s", "-x", proxy_url(p), upstream.url + "/hello"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(out.stdout) == {"path": "/hello", "ok": True}


@pytest.mark.parametrize(("user", "password"), [("coder", "wrong-token-000000"), ("nobody", TOKEN)])
async def test_wrong_or_missing_credentials_get_407(
    proxy: tuple[HttpProxy, CaptureSink],
    upstream: Upstream,
    user: str,
    password: str,
) -> None:
    p, _ = proxy
    async with httpx.AsyncClient(proxy=proxy_url(p, user, password)) as client:
        r = await client.get(upstream.url + "/")
    assert r.status_code == 407
    assert r.headers["Proxy-Authenticate"].startswith("Basic")
    assert p.address is not None
    async with httpx.AsyncClient(proxy=f"http://{p.address[0]}:{p.address[1]}") as client:
        assert (await client.get(upstream.url + "/")).status_code == 407
    assert upstream.seen == []


async def test_denied_request_gets_403_with_the_decision_and_reaches_nothing(
    proxy: tuple[HttpProxy, CaptureSink],
    upstream: Upstream,
) -> None:
    p, sink = proxy
    await p.pdp.store.restrict("coder", ["no_egress"])
    async with httpx.AsyncClient(proxy=proxy_url(p)) as client:
        r = await client.post(upstream.url + "/upload", content=b"secret stuff")
    assert r.status_code == 403
    body = r.json()
    assert body["decision_id"] == sink.last.decision.decision_id
    assert "no_egress" in body["reason"]
    assert upstream.seen == []


# Whatever the proxy reads a request as (an LLM prompt, an MCP tool call, a secret read),
# it carries data to another host: the agent writes the shape, so the shape must not
# decide whether data may leave.
PROMPT = {"model": "m", "messages": [{"role": "user", "content": "payroll: 1234"}]}
CALL = {"name": "search", "arguments": {"q": "payroll"}}
SENDS_OUT: dict[str, tuple[str, str, object, dict[str, str]]] = {
    "prompt": ("POST", "/v1/chat/completions", PROMPT, {}),
    "tool_call": (
        "POST",
        "/mcp",
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": CALL},
        {},
    ),
    "secret_read": ("GET", "/v1/secret/data/payroll", None, {"X-Vault-Token": "t"}),
}


@pytest.mark.parametrize("shape", sorted(SENDS_OUT))
async def test_no_egress_stops_a_request_whatever_it_is_read_as(
    proxy: tuple[HttpProxy, CaptureSink],
    upstream: Upstream,
    shape: str,
) -> None:
    p, sink = proxy
    method, path, body, headers = SENDS_OUT[shape]
    await p.pdp.store.restrict("coder", ["no_egress"])
    async with httpx.AsyncClient(proxy=proxy_url(p)) as client:
        r = await client.request(method, upstream.url + path, json=body, headers=headers)
    # A tool call is refused as MCP refuses one: a JSON-RPC error the client reads.
    said = r.json()["error"]["message"] if shape == "tool_call" else r.json()["reason"]
    assert r.status_code == (200 if shape == "tool_call" else 403)
    assert "posture no_egress" in said
    assert sink.last.action.operation.value == shape  # read as that, and still stopped
    assert list(sink.last.action.details["effects"]) == ["egress"]
    assert upstream.seen == []


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "2130706433", "0x7f000001", "127.1", "[::ffff:127.0.0.1]", "localhost"]
)
async def test_ssrf_guard_refuses_loopback_in_every_spelling(
    tmp_path: Path,
    upstream: Upstream,
    host: str,
) -> None:
    p, _ = await make_proxy(tmp_path, [])
    try:
        port = upstream.url.rsplit(":", 1)[1]
        out = await asyncio.to_thread(
            subprocess.run,
            ["curl", "-s", "-x", proxy_url(p), f"http://{host}:{port}/x"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        body = json.loads(out.stdout)
        assert body["error"] == "forbidden destination"
        assert "loopback" in body["reason"]
    finally:
        await p.stop()
    assert upstream.seen == []


async def test_connect_to_the_metadata_address_is_refused(tmp_path: Path) -> None:
    p, _ = await make_proxy(tmp_path, [])
    try:
        assert p.address is not None
        reader, writer = await asyncio.open_connection(*p.address)
        import base64

        cred = base64.b64encode(f"coder:{TOKEN}".encode()).decode()
        writer.write(
            f"CONNECT 169.254.169.254:443 HTTP/1.1\r\nHost: 169.254.169.254:443\r\n"
            f"Proxy-Authorization: Basic {cred}\r\n\r\n".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.read(4096), 10)
        writer.close()
        assert head.startswith(b"HTTP/1.1 403")
        assert b"link-local" in head
    finally:
        await p.stop()


async def test_the_ca_is_created_for_agents_to_trust(proxy: tuple[HttpProxy, CaptureSink]) -> None:
    p, _ = proxy
    assert p.ca_file.exists()
    assert b"BEGIN CERTIFICATE" in p.ca_file.read_bytes()


async def test_reported_confidence_is_taken_and_not_forwarded(
    tmp_path: Path, upstream: Upstream
) -> None:
    # A trusted upstream, so its answers do not taint the session and move the scores.
    p, sink = await start_proxy(
        tmp_path, allow_networks=["127.0.0.0/8"], trusted_hosts=["127.0.0.1"]
    )
    async with httpx.AsyncClient(proxy=proxy_url(p)) as client:
        await client.get(upstream.url + "/a", headers={"X-Interlock-Confidence": "0.6"})
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "search", "_meta": {"confidence": 0.9}},
        }
        await client.post(upstream.url + "/mcp", json=call)
        await client.get(upstream.url + "/b", headers={"X-Interlock-Confidence": "banana"})
    assert [r.action.confidence for r in sink.records] == [0.6, 0.9, None]
    assert all("X-Interlock-Confidence" not in seen for seen in upstream.seen)
    assert sink.records[0].decision.risk.signals["confidence"] == 0.4
    await p.stop()


async def test_the_http_proxy_leaves_the_shared_loop_s_task_factory_alone(tmp_path: Path) -> None:
    """mitmproxy's Master.run installs eager tasks on the loop it runs on; interlock shares
    that loop with the SSH proxy, whose logins stalled under them."""
    loop = asyncio.get_running_loop()
    assert loop.get_task_factory() is None
    proxy, _ = await start_proxy(tmp_path)
    try:
        assert loop.get_task_factory() is None
    finally:
        await proxy.stop()
