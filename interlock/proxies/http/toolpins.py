"""Tool pinning on MCP over HTTP: tools/list answers pinned, held tools neither listed nor called.

The same pins as the stdio gateway (approvals/pins.py), with the server named by its URL.
A listing comes back as one JSON body or as server-sent events (streamable HTTP); a
listing that cannot be read is withheld rather than passed on unpinned.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from mitmproxy import http

from interlock.approvals.pins import PinStore, change_action, owner_of
from interlock.classify.mcp import tool_call
from interlock.core.model import Action, Agent, Operation
from interlock.core.pdp import PDP
from interlock.proxies.http.egress import MCP_ID, body_text, deny
from interlock.proxies.http.identity import AGENT

LISTING = "interlock.mcp_listing"
"""Set on a flow carrying a tools/list request: the server's identity."""

Tools = list[dict[str, Any]]


def server_of(flow: http.HTTPFlow) -> str:
    """An HTTP MCP server's identity: its endpoint URL without query."""
    req = flow.request
    return f"{req.scheme}://{req.host}:{req.port}{req.path.split('?', 1)[0]}"


def _listing(doc: Any) -> Tools | None:
    """The tools of a tools/list answer, None when `doc` is not one."""
    if not isinstance(doc, dict) or not isinstance(doc.get("result"), dict):
        return None
    tools = doc["result"].get("tools")
    if not isinstance(tools, list) or not all(
        isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools
    ):
        return None
    return tools


def rewrite(text: str, event_stream: bool, keep: Callable[[Tools], Tools]) -> str | None:
    """`text` with the listing's tools replaced by `keep(tools)`; None when no listing
    is found in it (the caller withholds it)."""
    if not event_stream:
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        tools = _listing(doc)
        if tools is None:
            return None
        doc["result"]["tools"] = keep(tools)
        return json.dumps(doc)
    if "\r" in text.replace("\r\n", "\n"):
        # A bare CR ends a line to an SSE client (httpx-sse, browsers): lines split
        # here only at LF would hide an event inside another line.
        return None
    found = False
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.startswith("data:") or not line[5:].strip():
            continue  # an empty data line (a priming event) joins as whitespace
        try:
            doc = json.loads(line[5:])
        except ValueError:
            # Part of an event whose data spans several lines, which the client joins:
            # a listing split that way would reach it unread, next to one that is read.
            return None
        tools = _listing(doc)
        if tools is not None:
            found = True
            doc["result"]["tools"] = keep(tools)
            lines[i] = "data: " + json.dumps(doc)
    return "\n".join(lines) if found else None


class ToolPins:
    """mitmproxy addon, before Egress: calls to held tools refused, listings pinned."""

    def __init__(self, pdp: PDP, pins: PinStore) -> None:
        self.pdp = pdp
        self.pins = pins

    async def request(self, flow: http.HTTPFlow) -> None:
        agent: Agent | None = flow.metadata.get(AGENT)
        if flow.response is not None or agent is None or flow.request.method != "POST":
            return
        text = body_text(flow.request)
        if text is None or '"tools/' not in text:
            return
        try:
            doc = json.loads(text)
        except ValueError:
            return  # not JSON-RPC; Egress decides it as any request
        if isinstance(doc, dict) and doc.get("method") == "tools/list":
            flow.metadata[LISTING] = server_of(flow)
            flow.metadata[MCP_ID] = doc.get("id")
            return
        call = tool_call(doc)
        if call is None:
            return
        held = await asyncio.to_thread(self.pins.held, server_of(flow), owner_of(agent), call.name)
        if held:
            flow.metadata[MCP_ID] = call.id
            details = {"mcp_server": flow.request.host, "arguments": sorted(call.arguments)[:64]}
            action = Action(agent, "mcp", Operation.TOOL_CALL, call.name, details)
            why = f"tool held until its owner approves it ({held})"
            deny(flow, await self.pdp.refuse(action, why))

    async def response(self, flow: http.HTTPFlow) -> None:
        agent: Agent | None = flow.metadata.get(AGENT)
        server = flow.metadata.get(LISTING)
        if agent is None or server is None or flow.response is None:
            return
        text = body_text(flow.response)
        stream = "text/event-stream" in flow.response.headers.get("content-type", "")
        changes: list[Any] = []
        held: set[str] = set()

        def keep(tools: Tools) -> Tools:
            found, holding = self.pins.check(server, owner_of(agent), tools)
            changes.extend(found)
            held.update(holding)
            return [t for t in tools if t["name"] not in holding]

        body = await asyncio.to_thread(rewrite, text, stream, keep) if text is not None else None
        for change in changes:
            action = change_action(agent, server, change)
            await self.pdp.refuse(action, f"tool held: {change.reason}")
        if body is None:
            if flow.response.status_code >= 300:
                # An HTTP error carries no listing; any 2xx can (the SDK's client reads
                # a 201 or 203 like a 200).
                return
            why = "tools/list answer unreadable: not pinned, withheld"
            details = {"mcp_server": server, "method": "tools/list"}
            action = Action(agent, "mcp", Operation.TOOL_CALL, "tools/list", details)
            deny(flow, await self.pdp.refuse(action, why))
            return
        if held:
            flow.response.text = body
