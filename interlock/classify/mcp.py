"""MCP tool calls inside JSON-RPC bodies, as every PEP that sees HTTP reads them.

The streamable HTTP transport posts one JSON-RPC message per request; a `tools/call` is
the agent using a tool, which is a `tool_call` action whatever proxy sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class McpCall:
    name: str
    arguments: dict[str, Any]
    id: Any
    """The JSON-RPC id, so a denial can answer that very call."""


def tool_call(doc: Any) -> McpCall | None:
    """The tool call `doc` is, or None when it is not a JSON-RPC `tools/call`."""
    if not isinstance(doc, dict) or doc.get("jsonrpc") != "2.0":
        return None
    if doc.get("method") != "tools/call":
        return None
    params = doc.get("params")
    params = params if isinstance(params, dict) else {}
    args = params.get("arguments")
    return McpCall(
        str(params.get("name", "")),
        args if isinstance(args, dict) else {},
        doc.get("id"),
    )
