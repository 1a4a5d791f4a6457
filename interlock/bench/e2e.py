"""End-to-end suite: agents working through one `interlock up` with the Postgres, HTTPS and
SSH proxies and the bundled default policy, against the same work sent directly.

Twelve agents, four per protocol, each at a constant 8 actions per second (480 a minute,
inside the default policy's per-agent rate budget of 600, so the default policy decides
as it would in production): a SQL select through asyncpg, an HTTPS GET through the proxy
with TLS intercepted and DLP on the response, an SSH command in an open connection. All
three protocols run at once from one open-loop generator. The same agents also send the
same mix directly to PostgreSQL, the HTTPS server and sshd, in phases alternating with
the proxied ones (direct, interlock, interlock, direct, ...) so the machine's drift falls
on both; each phase starts with half a second of traffic that is not counted. A hold or
denial counts as an error and fails the budgets. Budgets: added p99 per protocol.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg
import asyncssh
import httpx

from interlock.bench import progress, slo
from interlock.bench.load import OpenLoopResult, combined, open_loop
from interlock.bench.procs import SSHD_NO_RC, process
from interlock.bench.stats import Measurement, from_open_loop
from interlock.testing.services import free_port, postgres_server, self_signed_cert, sshd_server

AGENTS = 4
"""Agents per protocol."""
PER_AGENT = 8.0
"""Actions per second per agent: 480 a minute, inside the default policy's 600."""
PROTOCOLS = ("postgres", "http", "ssh")
WARM = 0.5
"""Seconds of traffic before each measured phase, not counted."""
UPSTREAM = """
import asyncio, ssl, sys
from aiohttp import web
async def ok(request):
    return web.json_response({"id": 7, "status": "shipped", "items": ["a", "b", "c"]})
async def main():
    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1]), ssl_context=ctx).start()
    await asyncio.Event().wait()
asyncio.run(main())
"""


def _token(i: int) -> str:
    return f"bench-e2e-agent-{i:02d}-token-0123456789"


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _config(root: Path, pg_dsn: str, sshd: Any, cert: Path, ports: dict[str, int]) -> Path:
    lines = [f'data_dir = "{root / "data"}"']
    for i in range(AGENTS):
        lines += [f"[agents.sql{i}]", f'token = "{_token(i)}"']
        lines += [f"[agents.web{i}]", f'token = "{_token(i)}"']
        pub = (root / f"ssh{i}.pub").read_text().strip()
        lines += [f"[agents.ssh{i}]", f'ssh_keys = ["{pub}"]']
    lines += [
        "[admin]",
        f'listen = "127.0.0.1:{ports["admin"]}"',
        "[postgres]",
        f'listen = "127.0.0.1:{ports["postgres"]}"',
        f'upstream = "{pg_dsn}"',
        "[http]",
        f'listen = "127.0.0.1:{ports["http"]}"',
        'allow_networks = ["127.0.0.0/8"]',
        f'upstream_ca = "{cert}"',
        "[ssh]",
        f'listen = "127.0.0.1:{ports["ssh"]}"',
        "[ssh.routes]",
        *[f'ssh{i} = "target"' for i in range(AGENTS)],
        "[ssh.targets.target]",
        'host = "127.0.0.1"',
        f"port = {sshd.port}",
        f'user = "{sshd.user}"',
        f'key = "{sshd.client_key}"',
        f'known_hosts = "{sshd.known_hosts}"',
    ]
    cfg = root / "interlock.toml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


async def _mix(
    senders: dict[str, list[Callable[[], Awaitable[object]]]], seconds: float
) -> dict[str, OpenLoopResult]:
    """Every agent at its protocol's rate, all protocols at once, agents interleaved;
    results merged per protocol."""
    runs: dict[str, list[asyncio.Task[OpenLoopResult]]] = {}
    for protocol, agents in senders.items():
        runs[protocol] = [
            asyncio.create_task(open_loop(send, PER_AGENT, seconds, i / (PER_AGENT * len(agents))))
            for i, send in enumerate(agents)
        ]
    out = {}
    for protocol, tasks in runs.items():
        parts = list(await asyncio.gather(*tasks))
        achieved = sum(p.achieved for p in parts)
        out[protocol] = combined(parts, PER_AGENT * len(parts), achieved)
    return out


async def _direct_clients(
    stack: AsyncExitStack, pg_dsn: str, https_url: str, cert: Path, sshd: Any
) -> dict[str, list[Callable[[], Awaitable[object]]]]:
    return await _clients(
        stack,
        [lambda: asyncpg.connect(pg_dsn) for _ in range(AGENTS)],
        [
            httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(cert)))
            for _ in range(AGENTS)
        ],
        https_url,
        [
            lambda: asyncssh.connect(
                "127.0.0.1",
                sshd.port,
                username=sshd.user,
                client_keys=[str(sshd.client_key)],
                known_hosts=str(sshd.known_hosts),
                agent_path=None,
                config=[],
            )
            for _ in range(AGENTS)
        ],
    )


async def _proxied_clients(
    stack: AsyncExitStack, root: Path, ports: dict[str, int], database: str, https_url: str
) -> dict[str, list[Callable[[], Awaitable[object]]]]:
    ca = ssl.create_default_context(cafile=str(root / "data" / "ca" / "mitmproxy-ca-cert.pem"))
    host_pub = (root / "data" / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()
    known = root / "proxy_known_hosts"
    known.write_text(f"[127.0.0.1]:{ports['ssh']} {host_pub[0]} {host_pub[1]}\n")

    def pg(i: int) -> Callable[[], Awaitable[asyncpg.Connection]]:
        return lambda: asyncpg.connect(
            host="127.0.0.1",
            port=ports["postgres"],
            user=f"sql{i}",
            password=_token(i),
            database=database,
        )

    def ssh(i: int) -> Callable[[], Awaitable[asyncssh.SSHClientConnection]]:
        return lambda: asyncssh.connect(
            "127.0.0.1",
            ports["ssh"],
            username=f"ssh{i}",
            client_keys=[str(root / f"ssh{i}")],
            known_hosts=str(known),
            agent_path=None,
            config=[],
        )

    return await _clients(
        stack,
        [pg(i) for i in range(AGENTS)],
        [
            httpx.AsyncClient(
                proxy=f"http://web{i}:{_token(i)}@127.0.0.1:{ports['http']}", verify=ca
            )
            for i in range(AGENTS)
        ],
        https_url,
        [ssh(i) for i in range(AGENTS)],
    )


async def _alternating(
    pg_dsn: str, url: str, cert: Path, sshd: Any, root: Path, ports: dict[str, int],
    seconds: float, rounds: int,
) -> tuple[dict[str, OpenLoopResult], dict[str, OpenLoopResult]]:  # fmt: skip
    """Both sets of agents connected at once, then direct and proxied phases in ABBA
    order (direct, interlock, interlock, direct, ...), so drift in the machine's load
    falls on both alike instead of on whichever ran second."""
    async with AsyncExitStack() as stack:
        direct = await _direct_clients(stack, pg_dsn, url, cert, sshd)
        proxied = await _proxied_clients(stack, root, ports, "postgres", url)
        parts: dict[str, list[dict[str, OpenLoopResult]]] = {"direct": [], "interlock": []}
        order = ["direct", "interlock"]
        for r in range(rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                progress.step(f"round {r + 1} of {rounds}: {name}")
                senders = direct if name == "direct" else proxied
                # Unmeasured: the first half second after the other phase's turn is a
                # transient (caches, pools, a burst of arrivals); see docs/benchmarks.md.
                await _mix(senders, WARM)
                parts[name].append(await _mix(senders, seconds))
        return _merged(parts["direct"]), _merged(parts["interlock"])


def _merged(parts: list[dict[str, OpenLoopResult]]) -> dict[str, OpenLoopResult]:
    out = {}
    for protocol in PROTOCOLS:
        pieces = [p[protocol] for p in parts]
        achieved = sum(p.achieved for p in pieces) / len(pieces)
        out[protocol] = combined(pieces, pieces[0].rate, achieved)
    return out


async def _clients(
    stack: AsyncExitStack,
    pg: list[Callable[[], Awaitable[asyncpg.Connection]]],
    web: list[httpx.AsyncClient],
    url: str,
    ssh: list[Callable[[], Awaitable[asyncssh.SSHClientConnection]]],
) -> dict[str, list[Callable[[], Awaitable[object]]]]:
    """Open every agent's connection and warm it up; one sender per agent."""
    senders: dict[str, list[Callable[[], Awaitable[object]]]] = {p: [] for p in PROTOCOLS}
    for i, connect in enumerate(pg):
        conn = await connect()
        stack.push_async_callback(conn.close)

        turn = asyncio.Lock()

        # One statement at a time per connection, as asyncpg allows: a request due while
        # the previous one is still out waits for it, and that wait counts as latency.
        async def query(
            conn: asyncpg.Connection = conn, i: int = i, turn: asyncio.Lock = turn
        ) -> object:
            async with turn:
                return await conn.fetchval("select total from orders where id = $1", i + 1)

        senders["postgres"].append(query)
    for client in web:
        await stack.enter_async_context(client)
    for client in web:

        async def get(client: httpx.AsyncClient = client) -> object:
            r = await client.get(url)
            r.raise_for_status()
            return r

        senders["http"].append(get)
    for connect_ssh in ssh:
        sconn = await connect_ssh()
        stack.callback(sconn.close)

        async def command(sconn: asyncssh.SSHClientConnection = sconn) -> object:
            return await sconn.run("echo ok", check=True)

        senders["ssh"].append(command)
    for agents in senders.values():
        for send in agents:
            for _ in range(3):
                await send()
    return senders


def run(quick: bool = False) -> dict[str, Any]:
    # Each phase's length, and how many direct/interlock pairs (ABBA order).
    seconds, rounds = (1.5, 2) if quick else (5.0, 4)
    progress.plan(2 + 2 * rounds)
    with (
        tempfile.TemporaryDirectory(prefix="interlock-bench-e2e-") as tmp,
        postgres_server() as pg,
        sshd_server(SSHD_NO_RC) as sshd,
    ):
        root = Path(tmp)
        progress.step("PostgreSQL, sshd, the HTTPS server, interlock up")
        asyncio.run(_prepare(pg.dsn()))
        cert, key = self_signed_cert(root / "up")
        for i in range(AGENTS):
            _keygen(root / f"ssh{i}")
        ports = {k: free_port() for k in ("admin", "postgres", "http", "ssh", "upstream")}
        cfg = _config(root, pg.dsn(), sshd, cert, ports)
        url = f"https://127.0.0.1:{ports['upstream']}/orders/7"
        with (
            process(
                [sys.executable, "-c", UPSTREAM, str(ports["upstream"]), str(cert), str(key)],
                ports["upstream"],
                "HTTPS server",
            ),
            process(
                [sys.executable, "-m", "interlock.cli", "up", "-c", str(cfg)],
                ports["ssh"],
                "interlock",
                cwd=root,
            ),
        ):
            direct, ours = asyncio.run(
                _alternating(pg.dsn(), url, cert, sshd, root, ports, seconds, rounds)
            )
            progress.step("stopping")
    measurements: list[Measurement] = []
    checks = []
    groups = []
    for protocol in PROTOCOLS:
        base = from_open_loop(f"{protocol}_direct", direct[protocol])
        m = from_open_loop(f"{protocol}_interlock", ours[protocol]).against(base)
        m.notes["added_p50_ms"] = round(m.p50 - base.p50, 3)
        m.notes["added_p99_ms"] = round(m.p99 - base.p99, 3)
        measurements += [base, m]
        checks.append(
            slo.check(f"e2e.{protocol}_added_p99_ms", m.notes["added_p99_ms"], m.notes["errors"])
        )
        groups.append(
            {
                "title": f"{protocol}: {AGENTS} agents x {PER_AGENT:g}/s, all at once",
                "series": [base.name, m.name],
            }
        )
    return {
        "suite": "e2e",
        "measurements": [m.to_json() for m in measurements],
        "checks": checks,
        "latency_groups": groups,
    }


async def _prepare(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "create table if not exists orders (id int primary key, total numeric);"
            "insert into orders select g, g * 10 from generate_series(1, 100) g "
            "on conflict do nothing"
        )
    finally:
        await conn.close()
