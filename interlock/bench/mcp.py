"""MCP suite: a stdio tool server through `interlock mcp run` against the same server spoken
to directly, in one run: tools/call at a fixed 100 per second (open loop), phases of the
two paths interleaved (A/B) so load from elsewhere on the machine hits both alike.

The server is a minimal JSON-RPC one in this process's Python (its own cost is the same
on both paths and small, so the difference is the gateway's: relay, decision, audit).
Budgets: added p50 and p99 per call.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from interlock.bench import progress, slo
from interlock.bench.load import OpenLoopResult, combined, open_loop
from interlock.bench.procs import bench_bundle
from interlock.bench.stats import summarize

RATE = 100.0
"""tools/call per second."""
TOKEN = "bench-token-0123456789"  # noqa: S105 (a benchmark's own agent)
SERVER = """
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    if msg["method"] == "initialize":
        result = {"protocolVersion": msg["params"]["protocolVersion"], "capabilities":
                  {"tools": {}}, "serverInfo": {"name": "bench", "version": "1"}}
    else:
        result = {"content": [{"type": "text", "text": "ok"}]}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\\n")
    sys.stdout.flush()
"""


class Client:
    """The host side over a child's pipes: one request, its answer."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.ids = itertools.count(1)
        self.waiting: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, argv: list[str], env: dict[str, str] | None = None) -> Client:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env
        )
        client = cls(proc)
        init = {"protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "bench", "version": "1"}}  # fmt: skip
        await asyncio.wait_for(client.request("initialize", init), 30)
        return client

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            doc = json.loads(line)
            future = self.waiting.pop(doc.get("id"), None)
            if future is not None and not future.done():
                future.set_result(doc)

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        id = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.waiting[id] = future
        msg = {"jsonrpc": "2.0", "id": id, "method": method, "params": params}
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        doc: dict[str, Any] = await future
        if "error" in doc:
            raise RuntimeError(doc["error"].get("message", "error"))
        return doc

    async def call(self) -> None:
        await self.request("tools/call", {"name": "echo", "arguments": {"text": "hello"}})

    async def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await asyncio.wait_for(self.proc.wait(), 30)
        self.reader.cancel()


def _config(root: Path) -> Path:
    bundle = bench_bundle(root / "bundle")
    cfg = root / "interlock.toml"
    cfg.write_text(
        f'data_dir = "{root / "data"}"\n[policy]\nbundle = "{bundle}"\n'
        f'[agents.bench]\ntoken = "{TOKEN}"\n'
    )
    return cfg


async def _measure(cfg: Path, seconds: float, phases: int) -> tuple[OpenLoopResult, ...]:
    server = [sys.executable, "-c", SERVER]
    env = {**os.environ, "INTERLOCK_TOKEN": TOKEN}
    gateway = [sys.executable, "-m", "interlock.cli", "mcp", "run", "--agent", "bench",
               "-c", str(cfg), "--", *server]  # fmt: skip
    direct, ours = await Client.start(server), await Client.start(gateway, env)
    try:
        for client in (direct, ours):
            for _ in range(50):  # warm up: imports, the policy's first evaluations
                await client.call()
        runs: dict[str, list[OpenLoopResult]] = {"direct": [], "interlock": []}
        for i in range(phases):
            order = [("direct", direct), ("interlock", ours)]
            for name, client in order if i % 2 == 0 else order[::-1]:
                progress.step(f"{name}: tools/call at {RATE:g}/s, phase {i + 1} of {phases}")
                runs[name].append(await open_loop(client.call, RATE, seconds / phases))
    finally:
        await direct.close()
        await ours.close()
    return tuple(
        combined(parts, RATE, sum(p.achieved for p in parts) / len(parts))
        for parts in runs.values()
    )


def run(quick: bool = False) -> dict[str, Any]:
    seconds, phases = (4.0, 2) if quick else (20.0, 4)
    progress.plan(2 * phases)
    with tempfile.TemporaryDirectory(prefix="interlock-bench-mcp-") as tmp:
        direct, ours = asyncio.run(_measure(_config(Path(tmp)), seconds, phases))
    base = summarize("call_direct", direct.latencies, unit="ms")
    proxied = summarize("call_interlock", ours.latencies, unit="ms").against(base)
    for m, r in ((base, direct), (proxied, ours)):
        m.notes.update(rate=RATE, errors=r.errors, first_error=r.first_error)
    added_p50 = round(proxied.p50 - base.p50, 3)
    added_p99 = round(proxied.p99 - base.p99, 3)
    proxied.notes.update(added_p50_ms=added_p50, added_p99_ms=added_p99)
    return {
        "suite": "mcp",
        "measurements": [base.to_json(), proxied.to_json()],
        "checks": [
            slo.check("mcp.call_added_p50_ms", added_p50, ours.errors),
            slo.check("mcp.call_added_p99_ms", added_p99, ours.errors),
        ],
        "latency_groups": [
            {
                "title": f"tools/call over stdio, {RATE:g}/s",
                "series": ["call_direct", "call_interlock"],
            }
        ],
    }
