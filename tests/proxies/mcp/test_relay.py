"""The sans-IO relay, with no process: what reaches the server is only what was decided
or only lists, and every malformed line is answered to its sender and goes no further."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.classify.mcp import DECIDED_METHODS, LISTING_METHODS
from interlock.proxies.mcp.relay import Decide, Inspect, Refused, Relay, Send, Side, parse

METHODS = [
    *sorted(DECIDED_METHODS | LISTING_METHODS),
    *["notifications/initialized", "notifications/cancelled", "debug/exec", "tools/call ", ""],
]
ids = st.one_of(
    st.integers(-3, 3), st.sampled_from(["a", "1", ""]), st.none(), st.booleans(), st.floats(0, 2)
)
params = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "name": st.sampled_from(["echo", "", 3]),
            "arguments": st.none()
            | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
            "requestId": ids,
        },
    ),
    st.lists(st.integers(), max_size=2),
    st.text(max_size=3),
)
messages = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "2.0", "2.0", "1.0", 2]),
        "id": ids,
        "method": st.sampled_from(METHODS) | st.integers(),
        "params": params,
        "result": st.just({}),
        "error": st.just({"code": 1, "message": "x"}),
    },
)


def line_of(doc: Any, junk: bytes) -> bytes:
    return json.dumps(doc).encode() + junk + b"\n"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(messages, st.sampled_from([b"", b"", b"}", b"\xff", b" x"])), max_size=12)
)
def test_nothing_undecided_reaches_the_server(lines: list[tuple[dict[str, Any], bytes]]) -> None:
    relay = Relay()
    for doc, junk in lines:
        line = line_of(doc, junk)
        events = relay.from_host(line)
        to_server = [e for e in events if isinstance(e, Send) and e.to is Side.SERVER]
        try:
            parsed = parse(line)
        except ValueError:
            # Malformed: refused, to be recorded and answered to the host; nothing else.
            assert len(events) == 1
            assert isinstance(events[0], Refused)
            assert events[0].side is Side.HOST
            assert events[0].code is not None
            continue
        for send in to_server:
            out = json.loads(send.data)
            assert out == parsed  # exactly what was read, re-encoded
            method = out.get("method")
            assert (
                method is None
                or method in LISTING_METHODS
                or ("id" not in out and method.startswith("notifications/"))
            )
        decides = [e for e in events if isinstance(e, Decide)]
        for decide in decides:
            assert decide.request == parsed
            assert decide.method not in LISTING_METHODS


def test_decided_requests_go_through_once_allowed_and_answers_are_inspected() -> None:
    relay = Relay()
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}}
    (decide,) = relay.from_host(line_of(call, b""))
    assert isinstance(decide, Decide)
    # The same id again while the first waits: refused, not a second request.
    (dup,) = relay.from_host(line_of(call, b""))
    assert isinstance(dup, Refused)
    assert (dup.side, dup.id, dup.code) == (Side.HOST, 1, -32600)
    # An answer the server invents for a request it never saw goes nowhere.
    answer = {"jsonrpc": "2.0", "id": 1, "result": {"content": []}}
    assert all(not isinstance(e, Send) for e in relay.from_server(line_of(answer, b"")))
    (send,) = relay.allow(decide.key)
    assert isinstance(send, Send)
    assert send.to is Side.SERVER
    (inspect,) = relay.from_server(line_of(answer, b""))
    assert isinstance(inspect, Inspect)
    assert inspect.method == "tools/call"


def test_a_denied_request_answers_the_host_with_the_decision_id() -> None:
    relay = Relay()
    call = {"jsonrpc": "2.0", "id": "x", "method": "resources/read", "params": {"uri": "a"}}
    (decide,) = relay.from_host(line_of(call, b""))
    assert isinstance(decide, Decide)
    (send,) = relay.deny(decide.key, "denied by interlock: no", {"decision_id": "d1"})
    assert isinstance(send, Send)
    assert send.to is Side.HOST
    assert json.loads(send.data)["error"] == {
        "code": -32001, "message": "denied by interlock: no", "data": {"decision_id": "d1"},
    }  # fmt: skip
    assert relay.allow(decide.key) == []  # decided once


def test_cancelling_a_request_in_decision_tells_the_server_nothing() -> None:
    relay = Relay()
    call = {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "echo"}}
    (decide,) = relay.from_host(line_of(call, b""))
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 4}}
    events = relay.from_host(line_of(cancel, b""))
    assert [type(e).__name__ for e in events] == ["Cancel"]
    assert isinstance(decide, Decide)
    relay.forget(decide.key)
    assert relay.allow(decide.key) == []


def test_a_number_no_double_holds_is_refused() -> None:
    """`1e999` would parse to infinity and go on as `Infinity`, which is not JSON: the
    server would fail on a message the gateway had decided."""
    import pytest

    from interlock.proxies.mcp.relay import Malformed

    call = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x",'
    line = call + b'"arguments":{"n":1e999}}}'
    with pytest.raises(Malformed, match="out of range"):
        parse(line)
    assert parse(line.replace(b"1e999", b"1e300"))["params"]["arguments"]["n"] == 1e300
