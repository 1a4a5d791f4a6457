"""Postgres suite: pgbench select-only through the proxy (policy and audit on), against
the same server directly and through PgBouncer, in one run.

Latency: pgbench at a fixed rate (`-R`, open loop: a transaction's latency includes its
wait behind the schedule), simple and prepared protocol. Throughput: closed-loop pgbench
at rising client counts (1, 4, 16, 32, 64; quick: 16 only). Budgets: TPS at 16 clients
against PgBouncer's, added p50 over PgBouncer at the fixed rate, and (full runs) no
collapse with more clients: TPS at 64 against TPS at 16, and a second `[postgres]
workers` process adding throughput (`pgworkers`)."""

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

from interlock.audit.checkpoint import Signer, load_or_create_key
from interlock.audit.log import AuditLog
from interlock.audit.sqlite import SqliteStore
from interlock.bench import pgworkers, progress, slo
from interlock.bench.stats import from_sorted, percentile
from interlock.classify.sql import Catalog, SqlClassifier
from interlock.config import AgentConfig, PostgresConfig
from interlock.core import heap
from interlock.core.context import MemoryStore
from interlock.core.pdp import PDP
from interlock.core.policy import PolicyManager
from interlock.eventloop import loop_factory
from interlock.proxies.postgres.server import PostgresProxy
from interlock.testing.services import pgbouncer, postgres_server, redis_server

TOKEN = "bench-agent-token-0123456789"  # noqa: S105 (a throwaway benchmark agent)
RATE = 300
"""Transactions per second of the open-loop latency phase (4 pgbench clients)."""
SCALED = 64
"""The most clients a full run drives: throughput there must not fall below 16's."""


@contextmanager
def _proxy(dsn: str, data: Path) -> Iterator[int]:
    """The proxy with the bundled policy and a real audit log, on its own loop/thread
    (uvloop when it is installed: `event_loop = "auto"`)."""
    loop = loop_factory("auto")()
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
        heap.settle()  # as `interlock up` does once it serves
        ready.set()
        await box["stop"].wait()
        await proxy.stop()
        await audit.close()
        heap.release()

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
    rate: int = 0,
) -> tuple[float, list[float]]:
    """TPS and sorted latencies (ms). With `rate`, pgbench schedules transactions at that
    mean rate (open loop) and a transaction's latency includes its wait behind the
    schedule (`schedule_lag`), so a target that falls behind shows it."""
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
            *(["-R", str(rate)] if rate else []),
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
            if rate and len(parts) >= 7:
                latencies.append((int(parts[2]) + int(parts[6])) / 1000.0)
            elif not rate and len(parts) >= 3:
                latencies.append(int(parts[2]) / 1000.0)
    return tps, sorted(latencies)


def run(quick: bool = False) -> dict[str, Any]:
    seconds = 1 if quick else 5
    latency_s = 1 if quick else 10
    concurrency = (16,) if quick else (1, 4, 16, 32, SCALED)
    results: dict[tuple[str, str, int], tuple[float, list[float]]] = {}
    latency: dict[tuple[str, str], tuple[float, list[float]]] = {}
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
        with (
            pgbouncer(pg, "bench", max(concurrency) + 8) as bouncer_port,
            _proxy(pg.dsn("bench"), root) as proxy_port,
        ):
            targets = {
                "direct": (pg.port, pg.user, pg.password),
                "pgbouncer": (bouncer_port, pg.user, pg.password),
                "interlock": (proxy_port, "agent", TOKEN),
            }
            progress.plan(2 * (len(concurrency) + 1) * len(targets))
            for mode in ("simple", "prepared"):
                for name, (port, user, password) in targets.items():
                    progress.step(f"pgbench {mode}, {RATE}/s open loop, {name}")
                    latency[(name, mode)] = _pgbench(
                        port, user, password, "bench", mode, 4, latency_s, logdir, RATE
                    )
                for clients in concurrency:
                    for name, (port, user, password) in targets.items():
                        progress.step(f"pgbench {mode}, {clients} clients, {name}")
                        results[(name, mode, clients)] = _pgbench(
                            port, user, password, "bench", mode, clients, seconds, logdir
                        )
            if not quick:
                with redis_server() as redis:
                    extra, gains = pgworkers.run(pg, redis, root, bouncer_port, TOKEN, _pgbench)
    measurements = [] if quick else extra
    at_rate = {key: from_sorted(f"{key[0]}_{key[1]}_r{RATE}", lat, "ms")
               for key, (_, lat) in latency.items()}  # fmt: skip
    for (name, mode), m in at_rate.items():
        m.throughput = round(latency[(name, mode)][0], 1)
        m.notes["rate"] = RATE
        if name != "pgbouncer":
            base = at_rate[("pgbouncer", mode)]
            m.against(base)
            m.notes["added_p50_ms"] = round(m.p50 - base.p50, 3)
        measurements.append(m)
    for (name, mode, clients), (tps, lat) in results.items():
        m = from_sorted(f"{name}_{mode}_c{clients}", lat, "ms")
        m.throughput = round(tps, 1)
        if name != "pgbouncer":
            base_tps = results[("pgbouncer", mode, clients)][0]
            m.baseline = f"pgbouncer_{mode}_c{clients}"
            m.notes["tps_ratio"] = round(tps / base_tps, 3) if base_tps else None
        measurements.append(m)
    checks = []
    for mode in ("simple", "prepared"):
        ours_tps, base_tps = (
            results[("interlock", mode, 16)][0],
            results[("pgbouncer", mode, 16)][0],
        )
        checks.append(slo.check(f"postgres.{mode}_tps_ratio", round(ours_tps / base_tps, 3)))
        ours_lat, base_lat = latency[("interlock", mode)][1], latency[("pgbouncer", mode)][1]
        added = round(percentile(ours_lat, 50) - percentile(base_lat, 50), 3)
        checks.append(slo.check(f"postgres.{mode}_added_p50_ms", added))
        if ("interlock", mode, SCALED) in results:
            scaled = results[("interlock", mode, SCALED)][0] / ours_tps
            checks.append(slo.check(f"postgres.{mode}_tps_{SCALED}_vs_16", round(scaled, 3)))
        if not quick:
            checks.append(slo.check(f"postgres.{mode}_workers_2_vs_1", gains[mode]))
    names = ("direct", "pgbouncer", "interlock")
    curves = []
    for mode in ("simple", "prepared"):
        for what, pick in (("TPS", lambda r: r[0]), ("p99 latency (ms)", _p99)):
            curves.append(
                {
                    "title": f"pgbench -S, {mode} protocol: {what}",
                    "x_label": "clients",
                    "y_label": what,
                    "log_y": what != "TPS",
                    "series": {
                        t: [[c, round(pick(results[(t, mode, c)]), 3)] for c in concurrency]
                        for t in names
                    },
                }
            )
    groups = [
        {
            "title": f"{mode} protocol, {RATE} transactions/s (open loop)",
            "series": [f"{t}_{mode}_r{RATE}" for t in names],
        }
        for mode in ("simple", "prepared")
    ]
    return {
        "suite": "postgres",
        "measurements": [m.to_json() for m in measurements],
        "checks": checks,
        "curves": curves,
        "latency_groups": groups,
    }


def _p99(result: tuple[float, list[float]]) -> float:
    return percentile(result[1], 99)
