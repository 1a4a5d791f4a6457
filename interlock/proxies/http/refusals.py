"""Every refusal an HTTP guard answers becomes an audited decision, its id in the answer.

Guards answer a flow themselves through `answer.refuse` (a JSON body with `error` and
`reason`), which marks it; `Refusals`, the last addon, turns each marked answer into
`PDP.refuse` and adds the decision id to the body. Refusals that end the flow with an error
instead of an answer (the SSRF check on the socket, mitmproxy's body limit) are audited
from the error hook, and so are mitmproxy's own refusals of a request it could not read
once a flow exists (a bad Content-Length, chunk size or header name: its fixed HTML 400,
or a closed connection). The agent is the one the flow authenticated as, else whoever its
credentials name, else `anonymous` (a malformed request is refused before identity runs).

A refusal anyone can cause without credentials (an `anonymous` one, or mitmproxy's
refusal of an unreadable request) goes through `Throttle`: at most one record per client
address per second, the ones in between counted in the next record. Such a refusal's
answer names a decision id only when its record was written.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mitmproxy import connection, http
from mitmproxy.proxy import mode_specs

from interlock.core.model import Action, Agent, Operation
from interlock.core.pdp import PDP
from interlock.core.refusal import FloodLimit, guard_action
from interlock.proxies.http.addresses import canonical_host
from interlock.proxies.http.answer import COUNTED, MAX_QUOTED_REASON, REFUSAL
from interlock.proxies.http.identity import AGENT

GUARD_ERRORS = (
    "interlock SSRF guard:",
    "interlock internal error:",
    "body exceeds mitmproxy's body_size_limit",
)
"""Flow errors that are refusals: the SSRF check of the resolved socket address, an addon
failing closed on a server hook, and a body over `max_body_bytes`."""
CLIENT_LEFT = (
    "Client disconnected.",
    "peer closed connection without sending complete message body",
)
"""Flow errors where the client went away (or a deadline closed it, recorded by then):
nothing was refused."""


def listener_mode(client: connection.Client) -> str:
    return "reverse" if isinstance(client.proxy_mode, mode_specs.ReverseMode) else "forward"


def error_answer(why: str, guard: bool) -> tuple[int, str]:
    """The status and `error` of the answer to a refusal audited from the error hook, as
    mitmproxy's own page would have had them."""
    if not guard:
        return 400, "malformed request"
    if "body_size_limit" in why:
        return 413, "request body too large"
    if "SSRF guard" in why:
        return 502, "forbidden destination"
    return 502, "interlock internal error"


VALIDATION_ERRORS = ("Invalid request scheme", "refusing to prevent request smuggling")
"""How mitmproxy's own check of a request head (`validate_request`) words its refusal."""


def refused_by_parser(flow: http.HTTPFlow) -> bool:
    """mitmproxy refused to read the rest of a request it had started (its error hook
    fires before the request was complete, and the client did not just leave). A CONNECT
    never completes as a request (its tunnel follows); its head was decided. Over HTTP/2
    mitmproxy refuses a malformed frame or header block by ending the connection, audited
    once there (`parser.py`), and a head its own validation refuses (a scheme that is not
    http(s), smuggling headers) on the stream, audited here; any other stream error is
    the client's reset."""
    why = flow.error.msg if flow.error is not None else ""
    if not why or any(left in why for left in CLIENT_LEFT):
        return False
    if flow.request.is_http2:
        return any(mark in why for mark in VALIDATION_ERRORS)
    return flow.request.method != "CONNECT" and flow.request.timestamp_end is None


class Throttle:
    """Refusals anyone can cause without credentials, at most one recorded per client
    address per interval (`FloodLimit`): each record says in
    `details.suppressed_since_last` how many were counted, not written, since the last."""

    def __init__(self, flood: FloodLimit) -> None:
        self.flood = flood

    def action(
        self,
        address: str,
        agent: Agent | None,
        operation: Operation,
        target: str,
        details: Mapping[str, Any],
    ) -> Action | None:
        """The refused action to record now, or None when this refusal is counted. An
        identified agent's refusals have a budget of their own per address."""
        key = address
        if agent is not None:
            key = f"{address} {agent.id}"
            self.flood.owners[key] = (address, agent)
        suppressed = self.flood.take(key)
        if suppressed is None:
            return None
        details = {**details, "client": address, "suppressed_since_last": suppressed}
        return guard_action(agent, "http", operation, target, details)


Identify = Callable[[http.HTTPFlow], Awaitable[Agent | None]]


class Refusals:
    """mitmproxy addon, last of all: audits what any guard before it refused."""

    def __init__(self, pdp: PDP, identify: Identify, throttle: Throttle) -> None:
        self.pdp = pdp
        self.identify = identify
        self.throttle = throttle

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
        if REFUSAL in flow.metadata:
            return
        guard = any(mark in why for mark in GUARD_ERRORS)
        if guard or refused_by_parser(flow):
            flow.metadata[REFUSAL] = why
            reason = why if guard else why[:MAX_QUOTED_REASON]
            decision_id = await self._record(flow, reason, parser=not guard)
            if flow.response is None:
                # What mitmproxy then answers, if anything (`parser.AuditedHttp1Server`).
                status, error = error_answer(why, guard)
                body = {"error": error, "reason": reason}
                body |= {"audit": COUNTED} if decision_id is None else {"decision_id": decision_id}
                flow.response = http.Response.make(
                    status, json.dumps(body), {"Content-Type": "application/json"}
                )

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
            if decision_id is None:
                body["audit"] = COUNTED
            else:
                body["decision_id"] = decision_id
            flow.response.set_content(json.dumps(body).encode())

    async def _record(self, flow: http.HTTPFlow, why: str, parser: bool = False) -> str | None:
        """The decision id, or None when the refusal was counted under the throttle."""
        req = flow.request
        agent = flow.metadata.get(AGENT)
        if not isinstance(agent, Agent):
            agent = await self.identify(flow)
        connect = req.method == "CONNECT"
        details: dict[str, Any] = {
            "method": req.method[:16],
            "mode": listener_mode(flow.client_conn),
            "port": req.port,
            "path": "" if connect else req.path.split("?", 1)[0][:2048],
        }
        if flow.response is not None:
            details["status"] = flow.response.status_code
        operation = Operation.CONNECT if connect else Operation.EGRESS
        target = canonical_host(req.host)
        action: Action | None
        if parser or agent is None:
            if parser:
                details["parser"] = True
            address = str(flow.client_conn.peername[0])
            action = self.throttle.action(address, agent, operation, target, details)
        else:
            action = guard_action(agent, "http", operation, target, details)
        return None if action is None else (await self.pdp.refuse(action, why)).decision_id
