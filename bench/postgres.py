"""Postgres suite: pgbench select-only through the proxy (policy and audit on), against
the same server directly and through PgBouncer, in one run.

Each target runs simple and prepared protocol at 1 and 16 clients; pgbench's per-
transaction logs give p50/p99 latency. Budgets: proxy TPS >= 60% of PgBouncer's at 16
clients, and at most 0.25 ms added p50 latency over PgBouncer at 1 client.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.stats import Measurement, percentile
from interlock.audit.checkpoint import Signer, load_or_create_key
from interlock.audit.log import AuditLog
from interlock.audit.sqlite import SqliteStore
from interlock.classify.sql import Catalog, SqlClassifier
from interlock.config import AgentConfig, PostgresConfig
from interlock.core.context import MemoryStore
from interlock.core.pdp import PDP
from interlock.core.policy import PolicyManager
from interlock.proxies.postgres.server import PostgresProxy
from interlock.testing.services import pgbouncer, postgres_server

TOKEN = "bench-agent-token-0123456789"  # noqa: S105 (a throwaway benchmark agent)
GOAL_TPS_RATIO = 0.6
GOAL_ADDED_P50_MS = 0.25


@contextmanager
def _proxy(dsn: str, data: Path) -> Iterator[int]:
    """The proxy with the bundled policy and a real audit log, on its own loop/thread."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        manager = PolicyManager()
        manager.load()
        signer = Signer("bench/audit", load_or_create_key(data / "audit.key"))
        audit = AuditLog(
            SqliteStore(data / "audit.db"), signer, "bench/audit", checkpoint_interval=0
        )
        await audit.start()
        pdp = PDP(manager, MemoryStore(), audit)
        proxy = PostgresProxy(
            PostgresConfig(listen="127.0.0.1:0", upstream=dsn),
            {"agent": AgentConfig(token=TOKEN)},
            pdp,
            SqlClassifier(Catalog()),
        )
        await proxy.start()
        assert proxy.address is not None
        box["port"] = proxy.address[1]
        box["stop"] = asyncio.Event()
        ready.set()
        await box["stop"].wait()
        await proxy.stop()
        await audit.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(60)
    try:
        yield int(box["port"])
    finally:
        loop.call_soon_threadsafe(box["stop"].set)
        thread.join(60)


def _pgbench(
    port: int,
    user: str,
    password: str,
    database: str,
    mode: str,
    clients: int,
    seconds: int,
    logdir: Path,
) -> tuple[float, list[float]]:
    for f in logdir.glob("pgbench_log*"):
        f.unlink()
    env = {**os.environ, "PGPASSWORD": password}
    out = subprocess.run(
        [
            "pgbench",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            user,
            "-n",
            "-S",
            "-M",
            mode,
            "-c",
            str(clients),
            "-j",
            str(min(clients, 2)),
            "-T",
            str(seconds),
            "-l",
            "--log-prefix",
            str(logdir / "pgbench_log"),
            database,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=seconds + 120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"pgbench failed: {out.stderr.strip()[-500:]}")
    found = re.search(r"tps = ([\d.]+)", out.stdout)
    if found is None:
        raise RuntimeError(f"pgbench printed no tps: {out.stdout[-500:]}")
    tps = float(found.group(1))
    latencies = []
    for f in logdir.glob("pgbench_log*"):
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                latencies.append(int(parts[2]) / 1000.0)
    return tps, sorted(latencies)


def run(quick: bool = False) -> dict[str, Any]:
    seconds = 3 if quick else 10
    results: dict[tuple[str, str, int], tuple[float, list[float]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="interlock-bench-pg-") as tmp,
        postgres_server({"max_connections": "200"}) as pg,
    ):
        root = Path(tmp)
        env = {**os.environ, "PGPASSWORD": pg.password}
        subprocess.run(
            [
                "psql",
                "-h",
                pg.host,
                "-p",
                str(pg.port),
                "-U",
                pg.user,
                "-c",
                "create database bench",
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        subprocess.run(
            [
                "pgbench",
                "-h",
                pg.host,
                "-p",
                str(pg.port),
                "-U",
                pg.user,
                "-i",
                "-s",
                "1",
                "-q",
                "bench",
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        logdir = root / "logs"
        logdir.mkdir()
        with pgbouncer(pg, "bench") as bouncer_port, _proxy(pg.dsn("bench"), root) as proxy_port:
            targets = {
                "direct": (pg.port, pg.user, pg.password),
                "pgbouncer": (bouncer_port, pg.user, pg.password),
                "interlock": (proxy_port, "agent", TOKEN),
            }
            for mode in ("simple", "prepared"):
                for clients in (1, 16):
                    for name, (port, user, password) in targets.items():
                        results[(name, mode, clients)] = _pgbench(
                            port, user, password, "bench", mode, clients, seconds, logdir
                        )
    measurements = []
    for (name, mode, clients), (tps, lat) in results.items():
        m = Measurement(
            f"{name}_{mode}_c{clients}",
            "ms",
            len(lat),
            round(percentile(lat, 50), 3),
            round(percentile(lat, 99), 3),
            round(sum(lat) / max(1, len(lat)), 3),
            round(tps, 1),
        )
        if name != "pgbouncer":
            base = results[("pgbouncer", mode, clients)]
            m.baseline = f"pgbouncer_{mode}_c{clients}"
            m.baseline_p50 = round(percentile(base[1], 50), 3)
            m.baseline_p99 = round(percentile(base[1], 99), 3)
            m.notes["tps_ratio"] = round(tps / base[0], 3) if base[0] else None
            m.notes["added_p50_ms"] = round(m.p50 - m.baseline_p50, 3)
        measurements.append(m)
    budgets = []
    for mode in ("simple", "prepared"):
        ours, base = results[("interlock", mode, 16)], results[("pgbouncer", mode, 16)]
        ratio = round(ours[0] / base[0], 3)
        budgets.append(
            {
                "name": f"{mode}: TPS at 16 clients >= {GOAL_TPS_RATIO:.0%} of PgBouncer",
                "value": ratio,
                "limit": GOAL_TPS_RATIO,
                "pass": ratio >= GOAL_TPS_RATIO,
            }
        )
        ours1, base1 = results[("interlock", mode, 1)], results[("pgbouncer", mode, 1)]
        added = round(percentile(ours1[1], 50) - percentile(base1[1], 50), 3)
        budgets.append(
            {
                "name": f"{mode}: added p50 at 1 client <= {GOAL_ADDED_P50_MS} ms",
                "value": added,
                "limit": GOAL_ADDED_P50_MS,
                "pass": added <= GOAL_ADDED_P50_MS,
            }
        )
    return {
        "suite": "postgres",
        "measurements": [m.to_json() for m in measurements],
        "budgets": budgets,
    }
