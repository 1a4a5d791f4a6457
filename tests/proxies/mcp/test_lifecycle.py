"""The gateway's own behaviour over raw pipes: malformed JSON-RPC either way, holds (time
out, approved from another instance, withdrawn on stdin EOF and SIGTERM, all audited),
the child's stderr and exit status."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from interlock.approvals.holds import Holds
from interlock.approvals.shared import SharedApprovals
from interlock.core.redis_store import RedisStore
from interlock.proxies.mcp.relay import MAX_MESSAGE
from tests.proxies.mcp.conftest import OWNER, ROOT, TOKEN, Setup, write_config

pytestmark = pytest.mark.integration
SERVER = str(Path(__file__).resolve().parent / "rugpull_server.py")
HOLD_POLICY = """package interlock

import rego.v1

default decision := {"effect": "allow", "reasons": ["test"]}

decision := {"effect": "approve", "reasons": ["weather needs a person"]} if {
	input.action.target == "weather"
}
"""
INIT = {
    "jsonrpc": "2.0",
    "id": "init",
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "raw", "version": "1"}},
}  # fmt: skip


class Raw:
    """The host side of a gateway: lines out, lines in."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    def send(self, line: bytes | dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        data = line if isinstance(line, bytes) else json.dumps(line).encode() + b"\n"
        self.proc.stdin.write(data)

    async def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        assert line, "the gateway closed stdout"
        doc: dict[str, Any] = json.loads(line)
        return doc

    async def answer(self, id: Any) -> dict[str, Any]:
        """The response to request `id` (notifications before it are skipped)."""
        while True:
            doc = await self.read()
            if "method" not in doc and doc.get("id") == id:
                return doc


@asynccontextmanager
async def gateway(setup: Setup, argv: list[str]) -> AsyncIterator[Raw]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "interlock.cli", "mcp", "run", "--agent", "coder",
        "-c", str(setup.config), "--", *argv,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT), "INTERLOCK_TOKEN": TOKEN},
    )  # fmt: skip
    try:
        yield Raw(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_malformed_from_the_host_is_answered_and_never_forwarded(
    setup: Setup, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    bad: list[tuple[bytes, Any, int]] = [
        (b"not json\n", None, -32700),
        (b"\xff\xfe{}\n", None, -32700),
        (b"[1, 2]\n", None, -32600),
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"weather",'
         b'"name":"lookup"}}\n', None, -32600),
        (b'{"jsonrpc":"1.0","id":2,"method":"ping"}\n', 2, -32600),
        (b'{"jsonrpc":"2.0","id":2.5,"method":"ping"}\n', None, -32600),
        (b'{"jsonrpc":"2.0","id":true,"method":"ping"}\n', None, -32600),
        (b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":[1]}\n', 3, -32602),
        (b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"weather",'
         b'"arguments":{"q":NaN}}}\n', None, -32700),
        (b'{"jsonrpc":"2.0","id":5,"method":"debug/exec","params":{}}\n', 5, -32001),
        (b'{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"weather",'
         b'"arguments":"q=1"}}\n', 6, -32001),
        (b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":""}}\n', 7, -32001),
        (b'{"jsonrpc":"2.0","id":8,"result":{}}\n', None, 0),  # an answer to nothing: dropped
    ]  # fmt: skip
    named: list[str] = []
    async with gateway(setup, [sys.executable, SERVER, str(log)]) as g:
        for line, id, code in bad:
            g.send(line)
            if code:
                reply = await g.read()
                assert reply["id"] == id, line
                assert reply["error"]["code"] == code, (line, reply)
                # Every refusal, the relay's own included, names its record.
                named.append(reply["error"]["data"]["decision_id"])
        g.send(INIT)
        assert "result" in await g.answer("init")
        g.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        g.send({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                "params": {"name": "lookup", "arguments": {"q": "cat"}}})  # fmt: skip
        assert (await g.answer(9))["result"]["content"][0]["text"] == "lookup: cat"
        # The host leaves: the gateway finishes recording what it refused, then exits.
        assert g.proc.stdin is not None
        g.proc.stdin.close()
        assert await asyncio.wait_for(g.proc.wait(), 60) == 0
    received = [json.loads(line) for line in log.read_text().splitlines()]
    assert [m.get("method") for m in received] == [
        "initialize", "notifications/initialized", "tools/call",
    ]  # fmt: skip
    assert received[-1]["id"] == 9
    records = {r["decision_id"]: r for r in await setup.audit()}
    assert set(named) <= set(records)
    refused = [r for r in records.values() if r["action"]["details"].get("side") == "host"]
    # The nine lines the relay could not read and the answer to nothing (nobody is told
    # of that one), each recorded as a denial of the session's agent; the three the
    # policy could not read are decisions of their own.
    assert len(refused) == 10, "\n".join(r["reasons"][0] for r in refused)
    assert {(r["agent"]["id"], r["effect"]) for r in refused} == {("coder", "deny")}


async def test_an_over_long_line_is_refused_recorded_and_skipped(
    setup: Setup, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    async with gateway(setup, [sys.executable, SERVER, str(log)]) as g:
        g.send(b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + b"a" * MAX_MESSAGE)
        g.send(b'"}}\n')
        reply = await g.read()
        assert (reply["id"], reply["error"]["code"]) == (None, -32600)
        assert f"over {MAX_MESSAGE} bytes" in reply["error"]["message"]
        g.send(INIT)
        assert "result" in await g.answer("init"), "reading went on at the next line"
        assert g.proc.stdin is not None
        g.proc.stdin.close()
        assert await asyncio.wait_for(g.proc.wait(), 60) == 0
    records = {r["decision_id"]: r for r in await setup.audit()}
    record = records[reply["error"]["data"]["decision_id"]]
    assert record["effect"] == "deny"
    assert record["action"]["details"]["side"] == "host"
    received = [json.loads(line) for line in log.read_text().splitlines()]
    assert [m.get("method") for m in received] == ["initialize"], "the long line went nowhere"


async def test_malformed_from_the_server_is_answered_and_never_forwarded(
    setup: Setup, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    script = (
        "import sys\n"
        "print('garbage from the server', flush=True)\n"
        'print(\'{"jsonrpc":"2.0","id":99,"result":{}}\', flush=True)\n'
        'print(\'{"jsonrpc":"2.0","method":"notifications/message",'
        '"params":{"level":"info","data":"hello"}}\', flush=True)\n'
        f"open({str(log)!r}, 'w').write(sys.stdin.readline())\n"
    )
    async with gateway(setup, [sys.executable, "-c", script]) as g:
        first = await g.read()
        assert first["method"] == "notifications/message"  # the valid one, and only it
        assert g.proc.stdin is not None
        g.proc.stdin.close()
        assert await asyncio.wait_for(g.proc.wait(), 60) == 0
    error = json.loads(log.read_text())
    assert error["id"] is None
    assert error["error"]["code"] == -32700
    # The garbage and the answer to no request: both refused. The server's refusals are
    # under the flood limit: the first is a record (the error it got names it), the
    # second, within the second, is counted in the summary the session's end writes.
    records = await setup.audit()
    (refused,) = [r for r in records if r["action"]["details"].get("side") == "server"]
    assert refused["reasons"][0].startswith("message from the server refused: invalid JSON")
    assert error["error"]["data"]["decision_id"] == refused["decision_id"]
    (summary,) = [r for r in records if r["action"]["details"].get("summary")]
    assert summary["action"]["protocol"] == "mcp"
    assert summary["action"]["details"]["suppressed_since_last"] == 1


async def test_holds_time_out_are_approved_elsewhere_and_are_withdrawn(
    setup: Setup, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "policy.rego").write_text(HOLD_POLICY)
    # Long enough that the approval sent from elsewhere (after the gateway's progress
    # notification reached the test) arrives before it on a loaded machine.
    policy = f'[policy]\nbundle = "{bundle}"\n'
    write_config(setup.config, setup.data_dir, setup.redis_url, policy, approval_timeout=4.0)
    log = tmp_path / "server.log"
    client = redis.asyncio.from_url(setup.redis_url)
    elsewhere = Holds()  # another interlock instance on the same Redis (`interlock up`)
    elsewhere.shared = SharedApprovals(client)
    await elsewhere.shared.start(elsewhere)
    params = {"name": "weather", "arguments": {"q": "x"}, "_meta": {"progressToken": "p"}}
    call = {"jsonrpc": "2.0", "method": "tools/call", "params": params}
    try:
        async with gateway(setup, [sys.executable, SERVER, str(log)]) as g:
            g.send(INIT)
            await g.answer("init")
            g.send({**call, "id": 1})
            progress = await g.read()
            assert progress["method"] == "notifications/progress"
            assert "held by interlock" in progress["params"]["message"]
            timed_out = await g.answer(1)
            assert "held for approval" in timed_out["error"]["message"]
            assert timed_out["error"]["data"]["decision_id"]

            g.send({**call, "id": 2})
            progress = await g.read()
            decision_id = progress["params"]["message"].rsplit(" ", 1)[1].rstrip(")")
            await elsewhere.answer_anywhere(decision_id, True, OWNER, "api")
            assert (await g.answer(2))["result"]["content"][0]["text"] == "weather: x"

            g.send({**call, "id": 3})
            await g.read()  # held
            assert g.proc.stdin is not None
            g.proc.stdin.close()
            assert await asyncio.wait_for(g.proc.wait(), 60) == 0
        async with gateway(setup, [sys.executable, SERVER, str(log)]) as g:
            g.send(INIT)
            await g.answer("init")
            g.send({**call, "id": 4})
            await g.read()  # held
            g.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(g.proc.wait(), 60) == 0
    finally:
        await elsewhere.shared.close()
        await client.aclose()
    sent = [m["id"] for m in map(json.loads, log.read_text().splitlines())
            if m.get("method") == "tools/call"]  # fmt: skip
    assert sent == [2]
    outcomes = [r["reasons"][0] for r in await setup.audit() if r.get("approver") is not None
                or r["action"]["details"].get("approved") is not None]  # fmt: skip
    assert sorted(outcomes) == sorted([
        "not approved: approval not given within 4 s",
        "approved by alice@example.com via api",
        "not approved: the client went away",  # stdin closed
        "not approved: the client went away",  # SIGTERM
    ])  # fmt: skip


async def test_child_stderr_and_exit_status_pass_through(setup: Setup) -> None:
    script = 'echo server-says-hi >&2; echo "token=[$INTERLOCK_TOKEN]" >&2; exit 3'
    async with gateway(setup, ["sh", "-c", script]) as g:
        assert await asyncio.wait_for(g.proc.wait(), 60) == 3
        assert g.proc.stderr is not None
        stderr = await g.proc.stderr.read()
    assert b"server-says-hi" in stderr
    assert b"token=[]" in stderr  # the agent's token is not handed to the server


async def test_isolating_the_agent_elsewhere_ends_the_session(setup: Setup, tmp_path: Path) -> None:
    store = RedisStore(setup.redis_url)
    await store.start()
    try:
        async with gateway(setup, [sys.executable, SERVER, str(tmp_path / "s.log")]) as g:
            g.send(INIT)
            await g.answer("init")
            await store.restrict("coder", (), isolate=True, reason="test")
            assert await asyncio.wait_for(g.proc.wait(), 60) == 0
            assert g.proc.stderr is not None
            assert b"isolated, ending the session" in await g.proc.stderr.read()
    finally:
        await store.restore("coder")
        await store.close()


async def test_a_server_that_cannot_start_is_a_clear_error(setup: Setup) -> None:
    async with gateway(setup, ["/nonexistent/mcp-server"]) as g:
        assert await asyncio.wait_for(g.proc.wait(), 60) == 2
        assert g.proc.stderr is not None
        assert b"cannot start the server '/nonexistent/mcp-server'" in await g.proc.stderr.read()
