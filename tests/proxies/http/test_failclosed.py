"""An addon that raises answers the flow itself; nothing is let through on error."""

from __future__ import annotations

from mitmproxy.proxy import server_hooks
from mitmproxy.test import tflow

from interlock.proxies.http.failclosed import guard_all


class Exploding:
    async def request(self, flow: object) -> None:
        raise RuntimeError("boom")

    async def server_connect(self, data: object) -> None:
        raise ValueError("kaboom")


async def test_a_raising_request_hook_answers_502_locally() -> None:
    addon = guard_all(Exploding())
    flow = tflow.tflow()
    await addon.request(flow)
    assert flow.response is not None
    assert flow.response.status_code == 502
    assert b"interlock internal error" in (flow.response.content or b"")


async def test_a_raising_server_hook_kills_the_connection() -> None:
    addon = guard_all(Exploding())
    flow = tflow.tflow()
    data = server_hooks.ServerConnectionHookData(server=flow.server_conn, client=flow.client_conn)
    await addon.server_connect(data)
    assert data.server.error == "interlock internal error: ValueError"
