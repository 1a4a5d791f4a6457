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
    confidence: float | None = None
    """`params._meta.confidence`, when the agent framework reports one."""


def tool_call(doc: Any) -> McpCall | None:
    """The tool call `doc` is, or None when it is not a JSON-RPC `tools/call`."""
    if not isinstance(doc, dict) or doc.get("jsonrpc") != "2.0":
        return None
    if doc.get("method") != "tools/call":
        return None
    params = doc.get("params")
    params = params if isinstance(params, dict) else {}
    args = params.get("arguments")
    meta = params.get("_meta")
    return McpCall(
        str(params.get("name", "")),
        args if isinstance(args, dict) else {},
        doc.get("id"),
        confidence_value(meta.get("confidence") if isinstance(meta, dict) else None),
    )


def confidence_value(value: Any) -> float | None:
    """A reported confidence in [0, 1], or None for anything else (absent or malformed
    reports are neutral rather than errors: they come from the agent)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0.0 <= number <= 1.0 else None
