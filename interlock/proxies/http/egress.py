"""Egress policy: every request (and every CONNECT) becomes an Action for the PDP.

Deny answers 403 with a JSON body naming the decision; approve holds the flow until a
human decides or the deadline passes; allow lets it go, with header obligations applied.
"""

from __future__ import annotations

import json
from typing import Any

from mitmproxy import http

from interlock.approvals.holds import Holds
from interlock.core.model import Action, Decision, Effect, Operation
from interlock.core.pdp import PDP
from interlock.proxies.http.identity import AGENT

DECISION = "interlock.decision"


def deny(flow: http.HTTPFlow, decision: Decision, why: str | None = None) -> None:
    body = {
        "error": "denied by interlock",
        "decision_id": decision.decision_id,
        "reason": why or "; ".join(decision.reasons) or decision.effect.value,
    }
    flow.response = http.Response.make(403, json.dumps(body), {"Content-Type": "application/json"})


def request_action(flow: http.HTTPFlow) -> Action:
    req = flow.request
    details: dict[str, Any] = {
        "method": req.method,
        "scheme": req.scheme,
        "port": req.port,
        "path": req.path.split("?", 1)[0][:2048],
        "query_keys": sorted(set(req.query))[:64],
        "headers": sorted({k.lower() for k in req.headers})[:64],
        "body_bytes": len(req.raw_content or b""),
        "content_type": req.headers.get("content-type", "").split(";", 1)[0][:128],
    }
    return Action(flow.metadata[AGENT], "http", Operation.EGRESS, req.host, details)


class Egress:
    """mitmproxy addon: decide every request."""

    def __init__(
        self,
        pdp: PDP,
        holds: Holds,
        approval_timeout: float = 30.0,
        passthrough: frozenset[str] = frozenset(),
    ) -> None:
        self.pdp = pdp
        self.holds = holds
        self.approval_timeout = approval_timeout
        self.passthrough = passthrough

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        """Pass-through hosts are decided here, by host alone: nothing inside is seen."""
        if flow.response is not None or AGENT not in flow.metadata:
            return
        if flow.request.host.lower() not in self.passthrough:
            return
        action = Action(
            flow.metadata[AGENT],
            "http",
            Operation.CONNECT,
            flow.request.host,
            {"port": flow.request.port, "passthrough": True},
        )
        await self._enforce(flow, action)

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or AGENT not in flow.metadata:
            return
        await self._enforce(flow, request_action(flow))

    async def _enforce(self, flow: http.HTTPFlow, action: Action) -> None:
        decision = await self.pdp.decide(action)
        flow.metadata[DECISION] = decision
        if decision.effect is Effect.APPROVE:
            verdict = await self.holds.wait(decision, self.approval_timeout)
            if not verdict.approved:
                deny(flow, decision, f"held for approval: {verdict.reason or 'denied'}")
            return
        if decision.effect is not Effect.ALLOW:
            deny(flow, decision)
            return
        for o in decision.obligations:
            if o.type == "add_header":
                flow.request.headers[str(o.params["name"])] = str(o.params["value"])
            elif o.type == "strip_header":
                flow.request.headers.pop(str(o.params["name"]), None)
