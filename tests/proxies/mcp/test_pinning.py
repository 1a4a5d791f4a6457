"""Tool pinning through the stdio gateway, with the suite's own rug-pull server: the first
listing pins, a changed description holds that tool (hidden, its calls refused, old and
new hashes audited) until `interlock mcp approve-tool`; poisoned tools start held; a tool
shadowing another server's tool of the same owner starts held."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio
from mcp.shared.exceptions import MCPError

from tests.proxies.mcp.conftest import OWNER, ROOT, Setup, session

pytestmark = pytest.mark.integration
SERVER = str(Path(__file__).resolve().parent / "rugpull_server.py")


def cli(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "interlock.cli", "mcp", *args, "-c", str(setup.config)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


def pins(setup: Setup) -> dict[str, dict[str, object]]:
    out = cli(setup, "tools")
    assert out.returncode == 0, out.stderr
    return {p["name"]: p for p in map(json.loads, out.stdout.splitlines())}


async def test_rug_pull_is_held_until_the_owner_approves(setup: Setup, tmp_path: Path) -> None:
    argv = [sys.executable, SERVER, str(tmp_path / "server.log")]
    async with session(setup.gateway(argv)) as s:
        first = [t.name for t in (await s.list_tools()).tools]
        assert first == ["lookup", "weather"]  # notes is poisoned: held from first sight
        with pytest.raises(MCPError, match="tool held") as err:
            await s.call_tool("notes", {"q": "x"})
        assert err.value.error.data["decision_id"]
        second = [t.name for t in (await s.list_tools()).tools]
        assert second == ["weather"]  # lookup's description changed: held
        with pytest.raises(MCPError, match="tool held"):
            await s.call_tool("lookup", {"q": "cat"})
        assert (await s.call_tool("weather", {"q": "today"})).content
    sent = [m["params"]["name"] for m in setup.received() if m.get("method") == "tools/call"]
    assert sent == ["weather"]

    held = pins(setup)
    assert held["lookup"]["held"] == "changed since pinned: description"
    assert held["notes"]["held"].startswith("description flagged: ")
    assert "hidden_unicode" in held["notes"]["held"]
    assert "exfiltration_url" in held["notes"]["held"]
    assert "IMPORTANT" in str(held["lookup"]["pending_description"])
    assert held["weather"]["held"] == ""

    records = [r for r in await setup.audit() if r["action"]["details"].get("pin")]
    change = next(r for r in records if r["action"]["target"] == "lookup")
    pin = change["action"]["details"]["pin"]
    assert pin["old_description_sha256"] == held["lookup"]["description_sha256"]
    assert pin["new_description_sha256"] == held["lookup"]["pending_description_sha256"]
    assert pin["old_description_sha256"] != pin["new_description_sha256"]
    assert change["effect"] == "deny"

    server = str(held["lookup"]["server"])
    approved = cli(setup, "approve-tool", "--server", server, "--owner", OWNER, "lookup")
    assert approved.returncode == 0, approved.stderr
    again = cli(setup, "approve-tool", "--server", server, "--owner", OWNER, "lookup")
    assert again.returncode == 2  # nothing held any more
    (accepted,) = [
        r for r in await setup.audit() if r["action"]["details"].get("method") == "approve-tool"
    ]
    assert (
        accepted["action"]["details"]["pin"]["description_sha256"] == pin["new_description_sha256"]
    )
    assert accepted["reasons"] == [f"tool change approved by its owner {OWNER}"]
    async with session(setup.gateway(argv)) as s:
        await s.list_tools()  # this server process's first listing: the original text
        listed = [t.name for t in (await s.list_tools()).tools]
        assert listed == ["lookup", "weather"]
        assert (await s.call_tool("lookup", {"q": "cat"})).content


async def test_a_tool_shadowing_another_servers_tool_starts_held(
    setup: Setup, tmp_path: Path
) -> None:
    first = [sys.executable, SERVER, str(tmp_path / "a.log")]
    async with session(setup.gateway(first)) as s:
        assert "lookup" in [t.name for t in (await s.list_tools()).tools]
    shadow = [sys.executable, SERVER, str(tmp_path / "b.log"), "--shadow"]
    async with session(setup.gateway(shadow)) as s:
        assert [t.name for t in (await s.list_tools()).tools] == []
        with pytest.raises(MCPError, match="shadows a tool of"):
            await s.call_tool("lookup", {"q": "x"})


@pytest.mark.parametrize("steer", [True, False], ids=["steering", "plain"])
async def test_instructions_that_steer_the_model_taint_the_session(
    setup: Setup, tmp_path: Path, steer: bool
) -> None:
    # (review: initialize instructions and resource or prompt descriptions reached the
    # model unscanned, while the same text in a tool result tainted the session)
    argv = [sys.executable, SERVER, str(tmp_path / "server.log"), *(["--steer"] if steer else [])]
    client = redis.asyncio.Redis.from_url(setup.redis_url)
    await client.flushdb()  # no taint left by an earlier test of this module's Redis
    await client.aclose()
    async with session(setup.gateway(argv)) as s:
        await s.list_tools()
        with contextlib.suppress(MCPError):  # held or not, it is decided on the context
            await s.call_tool("weather", {"q": "today"})
    call = next(r for r in await setup.audit() if r["action"]["target"] == "weather")
    taints = call["context"]["taints"]
    assert ("prompt_injection_suspected" in taints) is steer, taints
