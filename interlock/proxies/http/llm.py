"""Tool calls an LLM asks for, read out of its API response.

An agent's next moves are decided by the model's answer: when a chat completion asks for
`delete_records(...)`, that request is the parent of whatever the agent does next. These
pure functions find the tool calls in the three response shapes agents use (OpenAI chat
completions, OpenAI responses, Anthropic messages), whole or streamed as server-sent
events, so the proxy can record each one as a child of the prompt's decision.

They never raise on anything a server sends: text that is not one of these shapes simply
has no tool calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MAX_CALLS = 32
"""More tool calls than this in one answer are not recorded one by one."""


@dataclass
class ToolCall:
    name: str
    call_id: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)


def _obj(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _args(v: Any) -> dict[str, Any]:
    """Arguments arrive as an object (Anthropic) or as a JSON string (OpenAI)."""
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            return {}
    return _obj(v)


def _events(text: str) -> list[Any]:
    """The JSON documents in a body: one whole document, or one per SSE `data:` line."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            return [json.loads(stripped)]
        except ValueError:
            pass
    out: list[Any] = []
    for line in text.splitlines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if not payload or payload == "[DONE]":
            continue
        try:
            out.append(json.loads(payload))
        except ValueError:
            continue
    return out


class _Collector:
    """Accumulates calls by a stable key, so streamed fragments join into one call."""

    def __init__(self) -> None:
        self.calls: dict[tuple[str, Any], ToolCall] = {}
        self.raw_args: dict[tuple[str, Any], str] = {}

    def put(self, key: tuple[str, Any], name: str = "", call_id: str = "") -> ToolCall:
        call = self.calls.get(key)
        if call is None:
            if len(self.calls) >= MAX_CALLS:
                return ToolCall(name)
            call = self.calls[key] = ToolCall(name)
        if name and not call.name:
            call.name = name
        if call_id and not call.call_id:
            call.call_id = call_id
        return call

    def fragment(self, key: tuple[str, Any], piece: Any) -> None:
        if isinstance(piece, str) and key in self.calls:
            self.raw_args[key] = self.raw_args.get(key, "") + piece

    def result(self) -> list[ToolCall]:
        for key, raw in self.raw_args.items():
            call = self.calls[key]
            if not call.arguments:
                call.arguments = _args(raw)
        return [c for c in self.calls.values() if c.name]


def _openai_chat(doc: dict[str, Any], into: _Collector) -> None:
    for choice in _list(doc.get("choices")):
        choice = _obj(choice)
        idx = choice.get("index", 0)
        message = _obj(choice.get("message"))
        for n, tc in enumerate(_list(message.get("tool_calls"))):
            tc = _obj(tc)
            fn = _obj(tc.get("function"))
            call = into.put(("chat", (idx, n)), str(fn.get("name") or ""), str(tc.get("id") or ""))
            call.arguments = _args(fn.get("arguments"))
        delta = _obj(choice.get("delta"))
        for tc in _list(delta.get("tool_calls")):
            tc = _obj(tc)
            fn = _obj(tc.get("function"))
            key = ("chat", (idx, tc.get("index", 0)))
            into.put(key, str(fn.get("name") or ""), str(tc.get("id") or ""))
            into.fragment(key, fn.get("arguments"))


def _openai_responses(doc: dict[str, Any], into: _Collector) -> None:
    items = [_obj(i) for i in _list(doc.get("output"))]
    items += [_obj(i) for i in _list(_obj(doc.get("response")).get("output"))]
    items.append(_obj(doc.get("item")))
    for item in items:
        if item.get("type") != "function_call":
            continue
        key = ("responses", str(item.get("call_id") or item.get("id") or item.get("name")))
        call = into.put(key, str(item.get("name") or ""), str(item.get("call_id") or ""))
        if item.get("arguments"):
            call.arguments = _args(item.get("arguments"))


def _anthropic(doc: dict[str, Any], into: _Collector) -> None:
    for n, block in enumerate(_list(doc.get("content"))):
        block = _obj(block)
        if block.get("type") == "tool_use":
            call = into.put(
                ("anthropic", n), str(block.get("name") or ""), str(block.get("id") or "")
            )
            call.arguments = _args(block.get("input"))
    if doc.get("type") == "content_block_start":
        block = _obj(doc.get("content_block"))
        if block.get("type") == "tool_use":
            into.put(
                ("anthropic", doc.get("index", 0)),
                str(block.get("name") or ""),
                str(block.get("id") or ""),
            )
    elif doc.get("type") == "content_block_delta":
        delta = _obj(doc.get("delta"))
        if delta.get("type") == "input_json_delta":
            into.fragment(("anthropic", doc.get("index", 0)), delta.get("partial_json"))


def tool_calls(text: str) -> list[ToolCall]:
    """Every tool call the model asked for in this response body, in order."""
    into = _Collector()
    for doc in _events(text):
        if not isinstance(doc, dict):
            continue
        _openai_chat(doc, into)
        _openai_responses(doc, into)
        _anthropic(doc, into)
    return into.result()
