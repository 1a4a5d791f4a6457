"""The Postgres suite's workers phase (full runs): `interlock up` with `[postgres] workers`
1 and 2, both on the stores several instances share (Redis state, which workers need,
and a PostgreSQL audit store), against the same PgBouncer, in alternating order.

What it answers: what the second process gives with the shared stores held equal, and
what those stores cost against the single default process (memory state, SQLite audit
log), which runs in the same rounds. `interlock up` runs as a child process, as an
operator runs it, so the workers are real processes on one port."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from interlock.bench import progress
from interlock.bench.stats import from_sorted
from interlock.testing.services import Postgres, Redis, free_port

ROUNDS = 2
CLIENTS = 16
SHAPES = {"single": (1, False), "workers1": (1, True), "workers2": (2, True)}
"""Name: (workers, shared stores). `single` is the default deployment."""


def _psql(pg: Postgres, sql: str) -> None:
    env = {**os.environ, "PGPASSWORD": pg.password}
    cmd = ["psql", "-h", pg.host, "-p", str(pg.port), "-U", pg.user, "-c", sql]
    subprocess.run(cmd, check=True, capture_output=True, env=env)


@contextmanager
def _up(pg: Postgres, redis: Redis, root: Path, name: str, token: str) -> Iterator[int]:
    """`interlock up` for one shape, on a fresh audit database; yields its port."""
    workers, shared = SHAPES[name.split("-")[0]]
    home = root / name
    home.mkdir()
    port = free_port()
    stores = ""
    if shared:
        database = "audit_" + name.replace("-", "_")
        _psql(pg, f"create database {database}")
        stores = f'[state]\nstore = "{redis.url}"\n[audit]\nstore = "{pg.dsn(database)}"\n'
    config = home / "interlock.toml"
    config.write_text(
        f'data_dir = "{home / "data"}"\nevent_loop = "auto"\n{stores}'
        f'[agents.agent]\ntoken = "{token}"\n'
        f'[postgres]\nlisten = "127.0.0.1:{port}"\nupstream = "{pg.dsn("bench")}"\n'
        f"workers = {workers}\nmax_client_conn = 200\n"
    )
    with (home / "stderr.log").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "interlock.cli", "up", "-c", str(config)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        # The banner is printed once everything serves, the other workers included.
        if not any(line.strip().startswith("audit key") for line in proc.stdout):
            why = (home / "stderr.log").read_text()[-800:]
            raise RuntimeError(f"interlock up ({name}) did not start: {why}")
        yield port
    finally:
        proc.terminate()
        proc.wait(60)


def run(
    pg: Postgres,
    redis: Redis,
    root: Path,
    bouncer_port: int,
    token: str,
    bench: Any,
) -> tuple[list[Any], dict[str, float]]:
    """Measurements (TPS at 16 clients per shape and protocol, ratio to the round's
    PgBouncer) and the medians of `workers2` over `workers1` per protocol. `bench` is
    the suite's pgbench runner."""
    logdir = root / "logs"
    logdir.mkdir(exist_ok=True)
    seconds = 5
    tps: dict[tuple[str, str], list[float]] = {}
    ratios: dict[tuple[str, str], list[float]] = {}
    progress.plan(ROUNDS * 2 * (len(SHAPES) + 1))
    for rnd in range(ROUNDS):
        order = list(SHAPES) if rnd % 2 == 0 else list(reversed(SHAPES))
        for mode in ("simple", "prepared"):
            progress.step(f"workers phase, round {rnd + 1}, {mode}, pgbouncer")
            base, _ = bench(bouncer_port, pg.user, pg.password, "bench", mode, CLIENTS,
                            seconds, logdir)  # fmt: skip
            for shape in order:
                progress.step(f"workers phase, round {rnd + 1}, {mode}, {shape}")
                with _up(pg, redis, root, f"{shape}-{rnd}-{mode}", token) as port:
                    got, _ = bench(port, "agent", token, "bench", mode, CLIENTS, seconds, logdir)
                tps.setdefault((shape, mode), []).append(got)
                ratios.setdefault((shape, mode), []).append(got / base if base else 0.0)
    measurements = []
    gains: dict[str, float] = {}
    for (shape, mode), values in tps.items():
        m = from_sorted(f"interlock_{shape}_{mode}_c{CLIENTS}", sorted(values), "tx/s", 1)
        m.throughput = round(_median(values), 1)
        m.baseline = f"pgbouncer_{mode}_c{CLIENTS}"
        m.notes["tps_ratio"] = round(_median(ratios[(shape, mode)]), 3)
        m.notes["rounds"] = [round(v, 1) for v in values]
        measurements.append(m)
    for mode in ("simple", "prepared"):
        one, two = _median(tps[("workers1", mode)]), _median(tps[("workers2", mode)])
        gains[mode] = round(two / one, 3) if one else 0.0
    return measurements, gains


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
