"""SSH suite: the proxy (`interlock up` with policy and audit) against direct OpenSSH, in
one run: commands in an open connection at a fixed 40 per second (open loop), bulk
output throughput, and connection set-up (connect, authenticate, one command, close).

The target is Debian's sshd (started like the tests start it); the client is asyncssh in
this process, the same client for both paths.
Budgets: added p50 per command, and bulk throughput against direct.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncssh

from interlock.bench import progress, slo
from interlock.bench.load import open_loop
from interlock.bench.procs import SSHD_NO_RC, bench_bundle, process
from interlock.bench.stats import Measurement, summarize
from interlock.testing.services import Sshd, free_port, sshd_server

RATE = 40.0
"""Commands per second in the open-loop exec phase."""
BULK_BYTES = 64 * 1024 * 1024


async def _connect(
    port: int, user: str, key: Path, known_hosts: Path
) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1",
        port,
        username=user,
        client_keys=[str(key)],
        known_hosts=str(known_hosts),
        agent_path=None,
        config=[],
    )


async def _measure(
    port: int, user: str, key: Path, known_hosts: Path, seconds: float, setups: int, bulk: int
) -> dict[str, Any]:
    async with await _connect(port, user, key, known_hosts) as conn:

        async def command() -> None:
            await conn.run("true", check=True)

        for _ in range(20):
            await command()
        commands = await open_loop(command, RATE, seconds)
        rtt = commands.latencies
        t0 = time.perf_counter()
        result = await conn.run(f"head -c {bulk} /dev/zero", encoding=None, check=True)
        elapsed = time.perf_counter() - t0
        assert len(result.stdout or b"") == bulk
    setup = []
    for _ in range(setups):
        t0 = time.perf_counter()
        async with await _connect(port, user, key, known_hosts) as conn:
            await conn.run("true", check=True)
        setup.append(time.perf_counter() - t0)
    return {"rtt": rtt, "errors": commands.errors, "mbps": bulk / elapsed / 1e6, "setup": setup}


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _proxy_config(root: Path, sshd: Sshd, port: int, admin: int, agent_pub: str) -> Path:
    bundle = bench_bundle(root / "bundle")
    cfg = root / "interlock.toml"
    cfg.write_text(
        f'data_dir = "{root / "data"}"\n[policy]\nbundle = "{bundle}"\n'
        f'[agents.bench]\nssh_keys = ["{agent_pub.strip()}"]\n'
        f'[admin]\nlisten = "127.0.0.1:{admin}"\n'
        f'[ssh]\nlisten = "127.0.0.1:{port}"\n[ssh.routes]\nbench = "target"\n'
        f'[ssh.targets.target]\nhost = "127.0.0.1"\nport = {sshd.port}\nuser = "{sshd.user}"\n'
        f'key = "{sshd.client_key}"\nknown_hosts = "{sshd.known_hosts}"\n'
    )
    return cfg


def run(quick: bool = False) -> dict[str, Any]:
    seconds, setups, bulk = (2.0, 5, BULK_BYTES // 4) if quick else (10.0, 30, BULK_BYTES)
    progress.plan(3)
    with (
        tempfile.TemporaryDirectory(prefix="interlock-bench-ssh-") as tmp,
        sshd_server(SSHD_NO_RC) as sshd,
    ):
        root = Path(tmp)
        _keygen(root / "agent")
        port, admin = free_port(), free_port()
        cfg = _proxy_config(root, sshd, port, admin, (root / "agent.pub").read_text())
        progress.step("starting sshd and interlock")
        with process(
            [sys.executable, "-m", "interlock.cli", "up", "-c", str(cfg)],
            port,
            "interlock",
            cwd=root,
        ):
            host_pub = (root / "data" / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()
            proxy_known = root / "proxy_known_hosts"
            proxy_known.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
            progress.step(f"direct: commands at {RATE:g}/s, connections, bulk")
            direct = asyncio.run(
                _measure(
                    sshd.port, sshd.user, sshd.client_key, sshd.known_hosts, seconds, setups, bulk
                )
            )
            progress.step(f"interlock: commands at {RATE:g}/s, connections, bulk")
            proxied = asyncio.run(
                _measure(port, "bench", root / "agent", proxy_known, seconds, setups, bulk)
            )
    base_rtt = summarize("exec_direct", direct["rtt"], unit="ms")
    ours_rtt = summarize("exec_interlock", proxied["rtt"], unit="ms").against(base_rtt)
    for m, r in ((base_rtt, direct), (ours_rtt, proxied)):
        m.notes.update(rate=RATE, errors=r["errors"])
    added = round(ours_rtt.p50 - base_rtt.p50, 3)
    ours_rtt.notes["added_p50_ms"] = added
    base_setup = summarize("connect_direct", direct["setup"], unit="ms")
    ours_setup = summarize("connect_interlock", proxied["setup"], unit="ms").against(base_setup)
    ratio = round(proxied["mbps"] / direct["mbps"], 3)
    bulk_direct = Measurement(
        "bulk_direct", "MB/s", 1, 0, 0, 0, throughput=round(direct["mbps"], 1)
    )
    bulk_ours = Measurement(
        "bulk_interlock",
        "MB/s",
        1,
        0,
        0,
        0,
        throughput=round(proxied["mbps"], 1),
        baseline="bulk_direct",
        notes={"ratio_to_direct": ratio},
    )
    measurements = [base_rtt, ours_rtt, base_setup, ours_setup, bulk_direct, bulk_ours]
    checks = [
        slo.check("ssh.exec_added_p50_ms", added, proxied["errors"]),
        slo.check("ssh.bulk_ratio", ratio),
    ]
    groups = [
        {
            "title": f"one command in an open connection, {RATE:g}/s",
            "series": ["exec_direct", "exec_interlock"],
        },
        {
            "title": "connect, authenticate, one command, close",
            "series": ["connect_direct", "connect_interlock"],
        },
    ]
    return {
        "suite": "ssh",
        "measurements": [m.to_json() for m in measurements],
        "checks": checks,
        "latency_groups": groups,
    }
