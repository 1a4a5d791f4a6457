"""The gateway's decisions in process (no pipes): failures deny and the session goes on."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from interlock.approvals.holds import Holds
from interlock.approvals.pins import PinStore
from interlock.core.model import Agent
from interlock.proxies.mcp.actions import Where
from interlock.proxies.mcp.gateway import Gateway
from interlock.proxies.mcp.relay import Side
from interlock.testing import CaptureSink, make_pdp


def line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode() + b"\n"


async def test_a_failing_pin_store_denies_the_call_and_the_session_goes_on(tmp_path: Path) -> None:
    sink = CaptureSink()
    out: list[tuple[Side, dict[str, Any]]] = []
    sent = asyncio.Event()

    def send(to: Side, data: bytes) -> None:
        out.append((to, json.loads(data)))
        sent.set()

    pins = PinStore(tmp_path / "pins.db")
    gateway = Gateway(
        make_pdp(sink=sink), Holds(), Agent("coder", owner="alice", authn="token"),
        Where("srv", str(tmp_path), str(tmp_path)), send, pins=pins,
    )  # fmt: skip
    pins.close()  # every read now raises
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}}
    gateway.host_line(line(call))
    await asyncio.wait_for(sent.wait(), 5)
    ((to, reply),) = out
    assert to is Side.HOST
    assert reply["error"]["message"] == "denied by interlock: internal error: ProgrammingError"
    assert reply["error"]["data"]["decision_id"] == sink.records[-1].decision.decision_id
    sent.clear()
    gateway.host_line(line({"jsonrpc": "2.0", "id": 2, "method": "ping"}))
    await asyncio.wait_for(sent.wait(), 5)
    assert out[-1] == (Side.SERVER, {"jsonrpc": "2.0", "id": 2, "method": "ping"})
    await gateway.close()
