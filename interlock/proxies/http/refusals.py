"""Every refusal an HTTP guard answers becomes an audited decision, its id in the answer.

Guards answer a flow themselves through `answer.refuse` (a JSON body with `error` and
`reason`), which marks it; `Refusals`, the last addon, turns each marked answer into
`PDP.refuse` and adds the decision id to the body. Refusals that end the flow with an error
instead of an answer (the SSRF check on the socket, mitmproxy's body limit) are audited
from the error hook. The agent is the one the flow authenticated as, else whoever its
credentials name, else `anonymous` (a malformed request is refused before identity runs).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from mitmproxy import http
from mitmproxy.proxy import mode_specs

from interlock.core.model import Agent, Operation
from interlock.core.pdp import PDP
from interlock.core.refusal import guard_action
from interlock.proxies.http.answer import REFUSAL
from interlock.proxies.http.identity import AGENT

GUARD_ERRORS = (
    "interlock SSRF guard:",
    "interlock internal error:",
    "body exceeds mitmproxy's body_size_limit",
)
"""Flow errors that are refusals: the SSRF check of the resolved socket address, an addon
failing closed on a server hook, and a body over `max_body_bytes`."""

Identify = Callable[[http.HTTPFlow], Awaitable[Agent | None]]


class Refusals:
    """mitmproxy addon, last of all: audits what any guard before it refused."""

    def __init__(self, pdp: PDP, identify: Identify) -> None:
        self.pdp = pdp
        self.identify = identify

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        await self._answered(flow)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        await self._answered(flow)

    async def request(self, flow: http.HTTPFlow) -> None:
        await self._answered(flow)

    async def response(self, flow: http.HTTPFlow) -> None:
        await self._answered(flow)

    async def error(self, flow: http.HTTPFlow) -> None:
        why = flow.error.msg if flow.error is not None else ""
        if any(mark in why for mark in GUARD_ERRORS) and REFUSAL not in flow.metadata:
            flow.metadata[REFUSAL] = why
            await self._record(flow, why)

    async def _answered(self, flow: http.HTTPFlow) -> None:
        why = flow.metadata.get(REFUSAL)
        if not isinstance(why, str) or flow.response is None:
            return
        flow.metadata[REFUSAL] = None
        decision_id = await self._record(flow, why)
        try:
            body = json.loads(flow.response.get_content(strict=False) or b"{}")
        except ValueError:
            return
        if isinstance(body, dict):
            body["decision_id"] = decision_id
            flow.response.set_content(json.dumps(body).encode())

    async def _record(self, flow: http.HTTPFlow, why: str) -> str:
        req = flow.request
        agent = flow.metadata.get(AGENT)
        if not isinstance(agent, Agent):
            agent = await self.identify(flow)
        connect = req.method == "CONNECT"
        details: dict[str, Any] = {
            "method": req.method[:16],
            "mode": "reverse"
            if isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode)
            else "forward",
            "port": req.port,
            "path": "" if connect else req.path.split("?", 1)[0][:2048],
        }
        if flow.response is not None:
            details["status"] = flow.response.status_code
        action = guard_action(
            agent, "http", Operation.CONNECT if connect else Operation.EGRESS, req.host, details
        )
        return (await self.pdp.refuse(action, why)).decision_id
