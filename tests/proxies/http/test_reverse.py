"""Reverse mode (API gateway): a listener in front of one fixed upstream, deciding each
request like the forward proxy does, with the agent's credentials in a gateway header."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from interlock.config import ReverseRoute
from interlock.proxies.http.server import HttpProxy
from interlock.testing import CaptureSink
from tests.proxies.http.util import TOKEN, start_proxy

pytestmark = pytest.mark.integration


@dataclass
class Upstream:
    url: str = ""
    seen: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[HttpProxy, CaptureSink, Upstream]]:
    up = Upstream()

    async def handler(request: web.Request) -> web.Response:
        up.seen.append(dict(request.headers))
        return web.json_response({"path": request.path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    up.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    # No allow_networks: the SSRF guard would refuse loopback, but a configured
    # reverse upstream is the operator's choice and is not checked.
    proxy, sink = await start_proxy(
        tmp_path, reverse=[ReverseRoute(listen="127.0.0.1:0", upstream=up.url)]
    )
    yield proxy, sink, up
    await proxy.stop()
    await runner.cleanup()


def base(proxy: HttpProxy) -> str:
    host, port = proxy.reverse_addresses[0]
    return f"http://{host}:{port}"


def creds(token: str = TOKEN) -> dict[str, str]:
    value = base64.b64encode(f"coder:{token}".encode()).decode()
    return {"X-Interlock-Authorization": f"Basic {value}"}


async def test_a_request_to_the_gateway_is_decided_and_forwarded(
    gateway: tuple[HttpProxy, CaptureSink, Upstream],
) -> None:
    proxy, sink, up = gateway
    async with httpx.AsyncClient() as client:
        r = await client.post(base(proxy) + "/api/orders", json={"n": 1}, headers=creds())
    assert r.json() == {"path": "/api/orders"}
    assert "X-Interlock-Authorization" not in up.seen[-1]
    action = sink.last.action
    assert action.agent.id == "coder"
    assert (action.operation.value, action.target) == ("egress", "127.0.0.1")
    assert action.details["mode"] == "reverse"
    assert action.details["path"] == "/api/orders"


async def test_the_gateway_answers_401_without_valid_credentials(
    gateway: tuple[HttpProxy, CaptureSink, Upstream],
) -> None:
    proxy, _, up = gateway
    async with httpx.AsyncClient() as client:
        missing = await client.get(base(proxy) + "/x")
        wrong = await client.get(base(proxy) + "/x", headers=creds("not-the-token-000000"))
    for r in (missing, wrong):
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Basic")
    assert up.seen == []


async def test_posture_applies_at_the_gateway(
    gateway: tuple[HttpProxy, CaptureSink, Upstream],
) -> None:
    proxy, sink, up = gateway
    await proxy.pdp.store.restrict("coder", ["no_egress"])
    async with httpx.AsyncClient() as client:
        r = await client.get(base(proxy) + "/x", headers=creds())
    assert r.status_code == 403
    assert r.json()["decision_id"] == sink.last.decision.decision_id
    assert up.seen == []


def test_reverse_routes_are_validated() -> None:
    with pytest.raises(ValueError, match="upstream"):
        ReverseRoute(listen="127.0.0.1:0", upstream="ftp://x")
    with pytest.raises(ValueError, match="no path"):
        ReverseRoute(listen="127.0.0.1:0", upstream="http://x/api")
