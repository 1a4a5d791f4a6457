"""Tool calls requested in LLM responses: read out of every API shape, whole and streamed,
and recorded through the proxy as children of the prompt's decision."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from interlock.core.model import Operation
from interlock.proxies.http.llm import MAX_CALLS, tool_calls
from interlock.proxies.http.server import HttpProxy
from interlock.testing import CaptureSink
from tests.proxies.http.util import proxy_url, start_proxy

OPENAI_CHAT = {
    "id": "chatcmpl-1",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "read_file", "arguments": '{"path": "/etc/x"}'},
                    },
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "send_mail", "arguments": '{"to": "ceo@example.com"}'},
                    },
                ],
            },
        }
    ],
}
OPENAI_RESPONSES = {
    "output": [
        {"type": "message", "content": [{"type": "output_text", "text": "hi"}]},
        {"type": "function_call", "call_id": "fc_1", "name": "search", "arguments": '{"q": 1}'},
    ]
}
ANTHROPIC = {
    "type": "message",
    "content": [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "query_db", "input": {"sql": "select 1"}},
    ],
}


def sse(*events: object) -> str:
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"


OPENAI_CHAT_STREAM = sse(
    {"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
    {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {"index": 0, "id": "call_s", "function": {"name": "rm", "arguments": ""}}
                    ]
                },
            }
        ]
    },
    {
        "choices": [
            {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"pa'}}]}}
        ]
    },
    {
        "choices": [
            {
                "index": 0,
                "delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'th": "/"}'}}]},
            }
        ]
    },
)
ANTHROPIC_STREAM = "event: message_start\n" + sse(
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_s", "name": "deploy", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '{"env": '},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '"prod"}'},
    },
)
RESPONSES_STREAM = sse(
    {
        "type": "response.output_item.added",
        "item": {"type": "function_call", "call_id": "fc_9", "name": "pay", "arguments": ""},
    },
    {
        "type": "response.output_item.done",
        "item": {
            "type": "function_call",
            "call_id": "fc_9",
            "name": "pay",
            "arguments": '{"amount": 5}',
        },
    },
)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            json.dumps(OPENAI_CHAT),
            [("read_file", "call_a", ["path"]), ("send_mail", "call_b", ["to"])],
        ),
        (json.dumps(OPENAI_RESPONSES), [("search", "fc_1", ["q"])]),
        (json.dumps(ANTHROPIC), [("query_db", "toolu_1", ["sql"])]),
        (OPENAI_CHAT_STREAM, [("rm", "call_s", ["path"])]),
        (ANTHROPIC_STREAM, [("deploy", "toolu_s", ["env"])]),
        (RESPONSES_STREAM, [("pay", "fc_9", ["amount"])]),
        (json.dumps({"choices": [{"message": {"content": "no tools"}}]}), []),
        ("<html>not json</html>", []),
    ],
)
def test_tool_calls_are_found_in_every_shape(
    body: str, expected: list[tuple[str, str, list[str]]]
) -> None:
    got = [(c.name, c.call_id, sorted(c.arguments)) for c in tool_calls(body)]
    assert got == expected


def test_the_number_of_calls_recorded_is_bounded() -> None:
    many = {"content": [{"type": "tool_use", "id": str(i), "name": f"t{i}"} for i in range(500)]}
    assert len(tool_calls(json.dumps(many))) == MAX_CALLS


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "choices",
                    "message",
                    "delta",
                    "tool_calls",
                    "function",
                    "name",
                    "arguments",
                    "index",
                    "output",
                    "type",
                    "content",
                    "input",
                    "item",
                    "response",
                    "content_block",
                    "partial_json",
                    "id",
                    "call_id",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@given(json_values)
def test_hostile_shapes_never_raise(doc: object) -> None:
    for body in (json.dumps(doc), "data: " + json.dumps(doc) + "\n"):
        for call in tool_calls(body):
            assert isinstance(call.name, str)
            assert call.name
            assert isinstance(call.arguments, dict)


@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text: str) -> None:
    tool_calls(text)


@pytest.fixture
async def llm_api() -> AsyncIterator[str]:
    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(OPENAI_CHAT)

    async def messages(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text=ANTHROPIC_STREAM, content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/messages", messages)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[tuple[HttpProxy, CaptureSink]]:
    p, sink = await start_proxy(tmp_path, allow_networks=["127.0.0.0/8"])
    yield p, sink
    await p.stop()


@pytest.mark.integration
async def test_tool_calls_in_a_completion_are_children_of_the_prompt(
    proxy: tuple[HttpProxy, CaptureSink], llm_api: str
) -> None:
    p, sink = proxy
    async with httpx.AsyncClient(proxy=proxy_url(p)) as client:
        r = await client.post(
            llm_api + "/v1/chat/completions",
            json={"model": "gpt-x", "messages": [{"role": "user", "content": "tidy up"}]},
        )
    assert r.json() == OPENAI_CHAT  # the agent gets the answer unchanged
    prompt, *children = sink.records
    assert prompt.action.operation is Operation.PROMPT
    assert [c.action.target for c in children] == ["read_file", "send_mail"]
    for child in children:
        assert child.action.operation is Operation.TOOL_CALL
        assert child.action.protocol == "llm"
        assert child.action.parents == (prompt.decision.decision_id,)
        assert child.action.details["enforced"] is False
        assert child.action.details["model"] == "gpt-x"
    assert children[1].action.details["arguments"] == ("to",)
    # The e-mail address in the arguments labels the call; its value is not recorded.
    assert "pii" in children[1].action.labels
    assert "ceo@example.com" not in repr(children[1].action.details)
    # A model's answer is not "content from outside": no untrusted_content taint.
    view = await p.pdp.store.view("coder", "x", p.pdp.clock())
    assert "untrusted_content" not in view.taints


@pytest.mark.integration
async def test_streamed_tool_calls_are_recorded_too(
    proxy: tuple[HttpProxy, CaptureSink], llm_api: str
) -> None:
    p, sink = proxy
    async with httpx.AsyncClient(proxy=proxy_url(p)) as client:
        r = await client.post(
            llm_api + "/v1/messages",
            json={
                "model": "claude-x",
                "stream": True,
                "messages": [{"role": "user", "content": "ship"}],
            },
        )
    assert "content_block_delta" in r.text
    prompt, child = sink.records
    assert (child.action.target, child.action.parents) == ("deploy", (prompt.decision.decision_id,))
    assert child.action.details["arguments"] == ("env",)
