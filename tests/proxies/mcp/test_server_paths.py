"""Paths as server-filesystem resolves them (relative to its allowed directories or the
host's roots, names matched by their NFC form): the policy sees the file it opens."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from mcp import ClientSession
from mcp.client.session import ClientRequestContext
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError
from mcp.types import ListRootsResult, Root
from pydantic import FileUrl

from tests.proxies.mcp.conftest import Setup, npm_server, session
from tests.proxies.mcp.test_servers import calls

pytestmark = pytest.mark.integration


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "home" / ".ssh").mkdir(parents=True)
    (root / "home" / ".ssh" / "id_rsa").write_text("PRIVATE")
    return root


@pytest.mark.parametrize(
    ("link", "asked"),
    [
        ("keys", "keys/id_rsa"),  # relative: the server joins it to its allowed directory
        ("caf\u00e9", "caf" + "e\u0301" + "/id_rsa"),  # NFD asked, NFC on disk
        ("\u212aeys", "Keys/id_rsa"),  # KELVIN SIGN folds to K under NFC
    ],
)
async def test_server_resolution_is_what_the_policy_sees(
    setup: Setup, tmp_path: Path, link: str, asked: str
) -> None:
    root = _tree(tmp_path)
    (root / link).symlink_to(root / "home" / ".ssh")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    relative = link == "keys"
    path = asked if relative else str(root / asked)
    params = setup.gateway(
        [npm_server("mcp-server-filesystem"), str(root)], cwd=elsewhere if relative else root
    )
    async with session(params) as s:
        try:
            got = await s.call_tool("read_text_file", {"path": path})
            leaked = "".join(getattr(c, "text", "") for c in got.content)
        except MCPError as exc:
            leaked = str(exc)
    assert "PRIVATE" not in leaked, (leaked, calls(setup))


async def test_relative_paths_meet_the_roots_the_host_reported(
    setup: Setup, tmp_path: Path
) -> None:
    """server-filesystem makes the host's roots its allowed directories when the host
    offers roots: a relative path then resolves against those, not its command line."""
    root = _tree(tmp_path)
    (root / "keys").symlink_to(root / "home" / ".ssh")
    other = tmp_path / "other"
    other.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    async def roots(context: ClientRequestContext) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=FileUrl(root.as_uri()))])

    params = setup.gateway([npm_server("mcp-server-filesystem"), str(other)], cwd=elsewhere)
    async with (
        stdio_client(params) as streams,
        ClientSession(streams[0], streams[1], list_roots_callback=roots) as s,
    ):
        await s.initialize()
        for _ in range(50):  # the server asks for the roots after `initialized`
            listed = await s.call_tool("list_allowed_directories", {})
            if str(root) in "".join(getattr(c, "text", "") for c in listed.content):
                break
            await asyncio.sleep(0.1)
        try:
            got = await s.call_tool("read_text_file", {"path": "keys/id_rsa"})
            leaked = "".join(getattr(c, "text", "") for c in got.content)
        except MCPError as exc:
            leaked = str(exc)
    assert "PRIVATE" not in leaked, (leaked, calls(setup))
