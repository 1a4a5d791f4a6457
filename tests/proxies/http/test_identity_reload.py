"""A CONNECT tunnel authenticates once; after SIGHUP changes or removes its agent, the
requests still coming through that tunnel are refused (they must connect again)."""

from __future__ import annotations

import base64

from mitmproxy import http
from mitmproxy.test import tflow

from interlock.config import AgentConfig
from interlock.identity.registry import AgentRegistry
from interlock.proxies.http.identity import AGENT, Identity

TOKEN = "coder-token-0123456789"


async def test_a_tunnel_is_refused_once_its_agent_is_removed_or_changed() -> None:
    agents = {"coder": AgentConfig(token=TOKEN, roles=["dev"]), "other": AgentConfig(token=TOKEN)}
    registry = AgentRegistry.from_config(agents)
    identity = Identity(registry)
    basic = base64.b64encode(f"coder:{TOKEN}".encode()).decode()
    connect = tflow.tflow()
    connect.request.method = "CONNECT"
    connect.request.headers["Proxy-Authorization"] = f"Basic {basic}"
    await identity.http_connect(connect)
    assert connect.response is None

    def inner() -> http.HTTPFlow:
        flow = tflow.tflow()
        flow.client_conn = connect.client_conn  # the same tunnel
        return flow

    first = inner()
    await identity.requestheaders(first)
    assert first.response is None
    assert first.metadata[AGENT].id == "coder"

    # An unrelated change (another agent) leaves the tunnel alone.
    registry.replace({"coder": agents["coder"]})
    unrelated = inner()
    await identity.requestheaders(unrelated)
    assert unrelated.response is None

    # Its roles change: the tunnel's requests are refused.
    registry.replace({"coder": AgentConfig(token=TOKEN, roles=["admin"])})
    changed = inner()
    await identity.requestheaders(changed)
    assert changed.response is not None
    assert changed.response.status_code == 407
    assert b"connect again" in (changed.response.content or b"")

    # Removed altogether: refused too.
    registry.replace({})
    removed = inner()
    await identity.requestheaders(removed)
    assert removed.response is not None
    assert removed.response.status_code == 407
