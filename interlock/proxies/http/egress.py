"""Egress policy: every request (and every CONNECT) becomes an Action for the PDP.

Deny answers 403 with a JSON body naming the decision; approve holds the flow until a
human decides or the deadline passes; allow lets it go, with header obligations applied.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mitmproxy import http

from interlock.approvals.holds import Holds
from interlock.classify.content import (
    MAX_SCAN,
    Findings,
    HeuristicDetector,
    InjectionDetector,
    scan,
)
from interlock.core.model import Action, Decision, Effect, Operation
from interlock.core.pdp import PDP
from interlock.proxies.http.identity import AGENT

DECISION = "interlock.decision"
MCP_ID = "interlock.mcp_id"


def deny(flow: http.HTTPFlow, decision: Decision, why: str | None = None) -> None:
    reason = why or "; ".join(decision.reasons) or decision.effect.value
    if MCP_ID in flow.metadata:
        # An MCP client expects a JSON-RPC error for that one call, not an HTTP failure.
        body: dict[str, Any] = {
            "jsonrpc": "2.0",
            "id": flow.metadata[MCP_ID],
            "error": {
                "code": -32001,
                "message": f"denied by interlock: {reason}",
                "data": {"decision_id": decision.decision_id},
            },
        }
        flow.response = http.Response.make(
            200, json.dumps(body), {"Content-Type": "application/json"}
        )
        return
    body = {"error": "denied by interlock", "decision_id": decision.decision_id, "reason": reason}
    flow.response = http.Response.make(403, json.dumps(body), {"Content-Type": "application/json"})


TEXTUAL = (
    "application/json",
    "text/",
    "application/x-www-form-urlencoded",
    "application/xml",
    "application/jsonrpc",
)
LLM_PATHS = ("/chat/completions", "/responses", "/messages", "/completions")


def body_text(message: http.Message) -> str | None:
    """The body as text when it is textual, else None (binary is not scanned)."""
    ctype = message.headers.get("content-type", "").lower()
    if not message.raw_content or not any(t in ctype for t in TEXTUAL):
        return None
    try:
        raw = message.get_content(strict=False) or b""
    except ValueError:
        raw = message.raw_content or b""
    return raw[:MAX_SCAN].decode("utf-8", "replace")


def _json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _prompt_text(doc: dict[str, Any]) -> str:
    parts: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str):
            parts.append(v)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            for key in ("content", "text", "input", "system", "instructions"):
                if key in v:
                    walk(v[key])

    for key in ("system", "instructions", "messages", "input", "prompt"):
        if key in doc:
            walk(doc[key])
    return "\n".join(parts)


def request_action(flow: http.HTTPFlow, keep_prompts: bool = False) -> Action:
    req = flow.request
    path = req.path.split("?", 1)[0]
    details: dict[str, Any] = {
        "method": req.method,
        "scheme": req.scheme,
        "port": req.port,
        "path": path[:2048],
        "query_keys": sorted(set(req.query))[:64],
        "headers": sorted({k.lower() for k in req.headers})[:64],
        "body_bytes": len(req.raw_content or b""),
        "content_type": req.headers.get("content-type", "").split(";", 1)[0][:128],
    }
    agent = flow.metadata[AGENT]
    text = body_text(req)
    found = scan(text) if text else Findings()
    if found.kinds:
        details["dlp"] = sorted(found.kinds)
    doc = _json(text)
    if isinstance(doc, dict) and doc.get("jsonrpc") == "2.0" and doc.get("method") == "tools/call":
        raw_params = doc.get("params")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        raw_args = params.get("arguments")
        args: dict[str, Any] = raw_args if isinstance(raw_args, dict) else {}
        flow.metadata[MCP_ID] = doc.get("id")
        details.update(mcp_server=req.host, arguments=sorted(args)[:64])
        return Action(
            agent,
            "mcp",
            Operation.TOOL_CALL,
            str(params.get("name", "")),
            details,
            labels=found.labels,
        )
    if (
        isinstance(doc, dict)
        and req.method == "POST"
        and "model" in doc
        and path.endswith(LLM_PATHS)
    ):
        prompt = _prompt_text(doc)
        details.update(model=str(doc.get("model"))[:128], prompt_chars=len(prompt))
        return Action(
            agent,
            "http",
            Operation.PROMPT,
            req.host,
            details,
            labels=found.labels | scan(prompt).labels,
            prompt_hash=hashlib.sha256(prompt.encode()).hexdigest(),
            prompt_text=prompt if keep_prompts else None,
        )
    if req.method == "GET" and path.startswith("/v1/") and "x-vault-token" in details["headers"]:
        return Action(
            agent,
            "http",
            Operation.SECRET_READ,
            f"{req.host}{path}",
            details,
            labels=found.labels | {"credentials"},
        )
    return Action(agent, "http", Operation.EGRESS, req.host, details, labels=found.labels)


class Egress:
    """mitmproxy addon: decide every request."""

    def __init__(
        self,
        pdp: PDP,
        holds: Holds,
        approval_timeout: float = 30.0,
        passthrough: frozenset[str] = frozenset(),
        keep_prompts: bool = False,
        trusted_hosts: frozenset[str] = frozenset(),
        taint_ttl: float = 900.0,
    ) -> None:
        self.keep_prompts = keep_prompts
        self.trusted_hosts = trusted_hosts
        self.taint_ttl = taint_ttl
        self.detector: InjectionDetector = HeuristicDetector()
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
        await self._enforce(flow, request_action(flow, self.keep_prompts))

    async def response(self, flow: http.HTTPFlow) -> None:
        """Text from outside taints the session; text that tries to steer the agent
        taints it harder. MCP tool results are outside text too."""
        agent = flow.metadata.get(AGENT)
        if agent is None or flow.response is None or DECISION not in flow.metadata:
            return
        if flow.request.host.lower() in self.trusted_hosts:
            return
        text = body_text(flow.response)
        if text is None:
            return
        until = self.pdp.clock() + self.taint_ttl
        await self.pdp.store.add_taint(agent.id, "untrusted_content", until)
        reasons = self.detector.scan(text)
        if reasons:
            flow.metadata["interlock.injection"] = reasons
            await self.pdp.store.add_taint(agent.id, "prompt_injection_suspected", until)

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
