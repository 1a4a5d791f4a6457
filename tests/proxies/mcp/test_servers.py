"""Third-party servers (server-filesystem, mcp-server-git, server-everything) behind the
stdio gateway, through the MCP SDK's own stdio client: allowed calls work, denied ones
never reach the server (its tapped stdin says so), and context is the shared one."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent

from interlock.core.redis_store import RedisStore
from tests.proxies.mcp.conftest import Setup, git_server, npm_server, session

pytestmark = pytest.mark.integration


def calls(setup: Setup) -> list[tuple[str, dict[str, object]]]:
    """The tools/call requests the server received: (tool, arguments)."""
    return [
        (m["params"]["name"], m["params"].get("arguments", {}))
        for m in setup.received()
        if m.get("method") == "tools/call"
    ]


def text(result: CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, TextContent))


async def test_filesystem_server_protected_paths_as_ssh(setup: Setup, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "home" / ".ssh").mkdir(parents=True)
    (root / "notes.txt").write_text("hello from notes")
    (root / "home" / ".ssh" / "id_rsa").write_text("PRIVATE")
    (root / "link").symlink_to(root / "home" / ".ssh" / "id_rsa")
    (root / "docs").symlink_to(root / "home" / ".ssh")
    params = setup.gateway([npm_server("mcp-server-filesystem"), str(root)], cwd=root)
    denied: list[tuple[str, dict[str, Any]]] = [
        ("read_text_file", {"path": str(root / "home/.ssh/id_rsa")}),
        ("read_text_file", {"path": "home/.ssh/id_rsa"}),  # relative to the server's cwd
        ("read_text_file", {"path": str(root / "link")}),  # a link to a protected file
        ("read_text_file", {"path": str(root / "docs/id_rsa")}),  # a linked directory
        ("read_text_file", {"path": str(root / "x/../home/.ssh/id_rsa")}),
        ("read_multiple_files", {"paths": [str(root / "notes.txt"), str(root / "link")]}),
        ("write_file", {"path": str(root / "home/.ssh/authorized_keys"), "content": "ssh-ed25519"}),
        ("move_file", {"source": str(root / "notes.txt"),
                       "destination": str(root / "home/.ssh/id_ed25519")}),
    ]  # fmt: skip
    async with session(params) as s:
        ok = await s.call_tool("read_text_file", {"path": str(root / "notes.txt")})
        assert "hello from notes" in text(ok)
        for tool, args in denied:
            with pytest.raises(MCPError, match=r"denied by interlock: .*protected path") as err:
                await s.call_tool(tool, args)
            assert err.value.error.data["decision_id"]
    assert calls(setup) == [("read_text_file", {"path": str(root / "notes.txt")})]
    assert not (root / "home/.ssh/authorized_keys").exists()
    assert (root / "notes.txt").exists()
    records = await setup.audit()
    denials = [r for r in records if r["effect"] == "deny" and r["action"]["protocol"] == "mcp"]
    assert len(denials) == len(denied)


async def test_git_server_shares_posture_and_taint_through_redis(
    setup: Setup, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)  # noqa: ASYNC221 (set-up)
    (repo / "a.txt").write_text("a")
    store = RedisStore(setup.redis_url)
    await store.start()
    try:
        # Posture set elsewhere (the admin API of `interlock up`, another proxy) applies here.
        await store.restrict("coder", ["tool:git_add"])
        params = setup.gateway([git_server(), "--repository", str(repo)])
        async with session(params) as s:
            status = await s.call_tool("git_status", {"repo_path": str(repo)})
            assert "a.txt" in text(status)
            with pytest.raises(MCPError, match=r"denied by interlock: .*tool:git_add"):
                await s.call_tool("git_add", {"repo_path": str(repo), "files": ["a.txt"]})
        assert [name for name, _ in calls(setup)] == ["git_status"]
        # What the server answered is outside text: the agent is tainted everywhere.
        view = await store.view("coder", "k", time.time())
        assert "untrusted_content" in view.taints
    finally:
        await store.close()


async def test_everything_server_tools_resources_prompts(setup: Setup) -> None:
    params = setup.gateway([npm_server("mcp-server-everything"), "stdio"])
    async with session(params) as s:
        tools = {t.name for t in (await s.list_tools()).tools}
        assert {"echo", "get-sum"} <= tools
        assert text(await s.call_tool("echo", {"message": "hi"})) == "Echo: hi"
        resources = (await s.list_resources()).resources
        first = await s.read_resource(resources[0].uri)
        assert first.contents
        prompts = (await s.list_prompts()).prompts
        got = await s.get_prompt(prompts[0].name, {})
        assert got.messages
    methods = [m.get("method") for m in setup.received()]
    assert {"tools/call", "resources/read", "prompts/get"} <= set(methods)
    kinds = {(r["action"]["operation"], r["effect"]) for r in await setup.audit()}
    assert {("tool_call", "allow"), ("read", "allow"), ("prompt", "allow")} <= kinds


async def test_labelled_values_in_results_are_masked_or_held(setup: Setup, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "notes.txt").write_text("contact bob@example.com or +1 415 555 0100, at noon")
    (root / "keys.txt").write_text("deploy key AKIAABCDEFGHIJKLMNOP")
    params = setup.gateway([npm_server("mcp-server-filesystem"), str(root)], cwd=root)
    async with session(params) as s:
        got = text(await s.call_tool("read_text_file", {"path": str(root / "notes.txt")}))
        # Credentials in a result raise the read's risk: held, and withheld on time-out.
        with pytest.raises(MCPError, match="result withheld: held for approval"):
            await s.call_tool("read_text_file", {"path": str(root / "keys.txt")})
    assert got == "contact [masked:email] or [masked:phone], at noon"
