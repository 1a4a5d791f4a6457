"""Real tool servers behind `interlock mcp run`, driven by the MCP SDK's stdio client.

Each server runs behind a tap (`tee` on its stdin): the tap's file is what the server
received, so a test proves from the target's side that nothing undecided reached it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from interlock.audit.factory import open_store
from tests.services import redis_server

ROOT = Path(__file__).resolve().parents[3]
SERVERS = Path(__file__).resolve().parent / "servers"
TOKEN = "coder-token-0123456789"
OWNER = "alice@example.com"
INSTALL = (
    "install the test servers: `npm ci --prefix tests/proxies/mcp/servers` (node >= 20) and "
    "`pip install -e '.[test]'` (mcp-server-git); `make unit` does both"
)


def npm_server(name: str) -> str:
    """A server from tests/proxies/mcp/servers; missing fails the test (never skips)."""
    path = SERVERS / "node_modules" / ".bin" / name
    if not path.exists() or shutil.which("node") is None:
        pytest.fail(f"{name} is not installed: {INSTALL}")
    return str(path)


def git_server() -> str:
    path = Path(sys.executable).parent / "mcp-server-git"
    if not path.exists():
        pytest.fail(f"mcp-server-git is not installed: {INSTALL}")
    return str(path)


@dataclass
class Setup:
    config: Path
    data_dir: Path
    redis_url: str
    tap: Path

    def tapped(self, argv: list[str]) -> list[str]:
        """`argv` with its stdin copied to the tap file on the way in."""
        return ["sh", "-c", 'tee -a "$0" | exec "$@"', str(self.tap), *argv]

    def received(self) -> list[dict[str, Any]]:
        if not self.tap.exists():
            return []
        return [json.loads(line) for line in self.tap.read_text().splitlines() if line.strip()]

    def gateway(self, argv: list[str], cwd: Path | None = None) -> StdioServerParameters:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "PYTHONPATH": str(ROOT),
            "INTERLOCK_TOKEN": TOKEN,
        }
        return StdioServerParameters(
            command=sys.executable,
            args=["-m", "interlock.cli", "mcp", "run", "--agent", "coder", "-c",
                  str(self.config), "--", *self.tapped(argv)],
            env=env,
            cwd=str(cwd) if cwd else None,
        )  # fmt: skip

    async def audit(self) -> list[dict[str, Any]]:
        store = open_store("sqlite:///audit.db", self.data_dir)
        await store.open()
        try:
            records = await store.records(0, await store.size())
        finally:
            await store.close()
        return [json.loads(r.data) for r in records]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as redis:
        yield redis.url


def write_config(
    path: Path, data_dir: Path, redis_url: str, extra: str = "", approval_timeout: float = 1.0
) -> None:
    path.write_text(
        f'data_dir = "{data_dir}"\n'
        f'[state]\nstore = "{redis_url}"\n'
        f'[agents.coder]\ntoken = "{TOKEN}"\nowner = "{OWNER}"\n'
        f"[mcp]\napproval_timeout = {approval_timeout}\n{extra}"
    )


@pytest.fixture
def setup(tmp_path: Path, redis_url: str) -> Setup:
    data_dir = tmp_path / "data"
    config = tmp_path / "interlock.toml"
    write_config(config, data_dir, redis_url)
    return Setup(config, data_dir, redis_url, tmp_path / "received.jsonl")


@contextlib.asynccontextmanager
async def session(params: StdioServerParameters) -> AsyncIterator[ClientSession]:
    async with stdio_client(params) as streams, ClientSession(streams[0], streams[1]) as s:
        await s.initialize()
        yield s
