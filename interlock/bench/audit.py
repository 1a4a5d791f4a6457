"""Audit suite: the log's append throughput and latencies against raw SQLite, and proof
time on a million-entry tree.

* baseline `sqlite_raw_batched`: executemany of rows the size of real records, in batches
  of the log's batch size, one transaction each, same pragmas (WAL, synchronous=FULL);
* `append_throughput`: records per second through `AuditLog` (canonical encoding, leaf
  hashing, tree nodes, commit), measured end to end with queued appends;
* the two alternate for ROUNDS rounds, each on fresh files; the ratio is the median of
  the rounds' ratios, so the machine's drift between two phases moves it less than one
  pair would (one pair ranged 0.35-0.50 from run to run);
* `enqueue`: time a queued append holds the decision path;
* `durable_append`: time until a durable append is committed (group commit + fsync);
* `inclusion_proof_1m` / `consistency_proof_1m`: proof generation from the stored tree at
  1,000,000 entries (node fetch plus hashing).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.audit import merkle
from interlock.audit.checkpoint import Signer
from interlock.audit.commands import consistency_proof, inclusion_proof
from interlock.audit.log import AuditLog
from interlock.audit.record import encode
from interlock.audit.sqlite import SqliteStore
from interlock.bench import progress, slo
from interlock.bench.stats import Measurement, summarize
from interlock.core import heap
from interlock.core.model import Action, Agent, Operation
from interlock.core.record import DecisionRecord
from interlock.testing import CaptureSink, make_pdp

BATCH = 512
ROUNDS = 5
"""Alternated raw and AuditLog rounds (quick: 2)."""


async def _records(n: int) -> list[DecisionRecord]:
    sink = CaptureSink()
    pdp = make_pdp(sink=sink)
    agent = Agent("reporter", ("analyst",), "alice@example.com", authn="token")
    for i in range(n):
        await pdp.decide(
            Action(
                agent,
                "postgres",
                Operation.READ,
                f"public.t{i % 50}",
                {"tables": [f"public.t{i % 50}"], "columns": ["id", "total"]},
            )
        )
    return list(sink.records)


def _raw(path: Path, rows: list[tuple[int, str, bytes]]) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE r (idx INTEGER PRIMARY KEY, decision_id TEXT, data BLOB)")
    start = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        db.execute("BEGIN")
        db.executemany("INSERT INTO r VALUES (?, ?, ?)", rows[i : i + BATCH])
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed


async def _throughput(path: Path, recs: list[DecisionRecord]) -> tuple[float, list[float]]:
    signer = Signer("bench/audit", Ed25519PrivateKey.generate())
    log = AuditLog(SqliteStore(path), signer, "bench/audit", max_batch=BATCH, checkpoint_interval=0)
    await log.start()
    enqueue: list[float] = []
    start = time.perf_counter()
    clock = time.perf_counter
    for rec in recs:
        t0 = clock()
        await log.append(rec, durable=False)
        enqueue.append(clock() - t0)
        while log.pending > 4 * BATCH:  # noqa: ASYNC110 (polling a counter, not an event)
            # Back-pressure without spinning: a busy loop here would fight the encoding
            # thread for the GIL and measure the contention, not the log.
            await asyncio.sleep(0.001)
    await log.flush()
    elapsed = time.perf_counter() - start
    await log.close()
    return elapsed, enqueue


async def _durable(path: Path, recs: list[DecisionRecord]) -> list[float]:
    signer = Signer("bench/audit", Ed25519PrivateKey.generate())
    log = AuditLog(SqliteStore(path), signer, "bench/audit", checkpoint_interval=0)
    await log.start()
    samples: list[float] = []

    async def one(rec: DecisionRecord) -> None:
        t0 = time.perf_counter()
        await log.append(rec, durable=True)
        samples.append(time.perf_counter() - t0)

    for i in range(0, len(recs), 8):
        await asyncio.gather(*(one(r) for r in recs[i : i + 8]))
    await log.close()
    return samples


def _big_tree(path: Path, size: int) -> None:
    """Store a `size`-record log directly, as the store lays it out (setup, not measured)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    from interlock.audit.sqlitefile import SCHEMA

    db.executescript(SCHEMA)
    front: dict[int, bytes] = {}
    done = 0
    chunk = 50_000
    while done < size:
        n = min(chunk, size - done)
        data = [i.to_bytes(8, "big") for i in range(done, done + n)]
        leaves = [merkle.leaf_hash(d) for d in data]
        new, front = merkle.extend(done, front, leaves)
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO audit_records VALUES (?, ?, ?, ?)",
            [(done + k, str(done + k), d, leaves[k]) for k, d in enumerate(data)],
        )
        db.executemany(
            "INSERT INTO audit_nodes VALUES (?, ?, ?)",
            [x for x in new if x[0] >= merkle.TILE_LEVEL],
        )
        db.execute("COMMIT")
        done += n
    db.execute("UPDATE audit_head SET size = ?", (size,))
    db.close()


async def _proofs(path: Path, size: int, n: int) -> tuple[list[float], list[float]]:
    store = SqliteStore(path)
    await store.open()
    rng = random.Random(7)
    incl: list[float] = []
    cons: list[float] = []
    for _ in range(n):
        i = rng.randrange(size)
        t0 = time.perf_counter()
        await inclusion_proof(store, i, size)
        incl.append(time.perf_counter() - t0)
        a = rng.randrange(1, size)
        t0 = time.perf_counter()
        await consistency_proof(store, a, size)
        cons.append(time.perf_counter() - t0)
    await store.close()
    return incl, cons


def run(quick: bool = False) -> dict[str, Any]:
    n = 2000 if quick else 20_000
    tree = 1_000_000
    with tempfile.TemporaryDirectory(prefix="interlock-bench-") as tmp:
        root = Path(tmp)
        progress.plan(5)
        progress.step(f"{n} decision records")
        recs = asyncio.run(_records(n))
        # As `interlock up` does once it serves: what start-up built (here also the
        # bench's own imports and its input records, which a serving process would not
        # hold) leaves the collector's view, so full collections do not walk it.
        heap.settle()
        t0 = time.perf_counter()
        rows = [(i, r.decision.decision_id, encode(r)) for i, r in enumerate(recs)]
        encode_us = (time.perf_counter() - t0) / n * 1e6
        rounds = 2 if quick else ROUNDS
        progress.step(f"raw SQLite and AuditLog appends, {rounds} alternated rounds")
        raw_runs: list[float] = []
        ours_runs: list[float] = []
        enqueue: list[float] = []
        for r in range(rounds):
            raw_runs.append(_raw(root / f"raw{r}.db", rows))
            took, waits = asyncio.run(_throughput(root / f"audit{r}.db", recs))
            ours_runs.append(took)
            enqueue.extend(waits)
            for leftover in root.glob(f"*{r}.db*"):
                leftover.unlink()
        raw_s, ours_s = statistics.median(raw_runs), statistics.median(ours_runs)
        ratios = [a / b for a, b in zip(raw_runs, ours_runs, strict=True)]
        progress.step("durable appends")
        durable = asyncio.run(_durable(root / "durable.db", recs[: 400 if quick else 2000]))
        progress.step(f"building a {tree:,}-entry tree")
        _big_tree(root / "big.db", tree)
        progress.step("inclusion and consistency proofs")
        incl, cons = asyncio.run(_proofs(root / "big.db", tree, 200 if quick else 2000))
    heap.release()

    raw = Measurement("sqlite_raw_batched", "rec/s", n, 0, 0, 0, round(n / raw_s, 1))
    ours = Measurement("append_throughput", "rec/s", n, 0, 0, 0, round(n / ours_s, 1))
    ours.baseline = raw.name
    ours.notes["ratio_to_raw"] = round(statistics.median(ratios), 3)
    ours.notes["round_ratios"] = [round(x, 3) for x in ratios]
    ours.notes["record_bytes"] = round(sum(len(r[2]) for r in rows) / n)
    ours.notes["encode_us_per_record"] = round(encode_us, 1)
    ours.notes["raw_us_per_row"] = round(raw_s / n * 1e6, 1)
    enq = summarize("enqueue", enqueue)
    dur = summarize("durable_append", durable, unit="ms")
    inc = summarize("inclusion_proof_1m", incl)
    con = summarize("consistency_proof_1m", cons)
    checks = [
        slo.check("audit.append_ratio", ours.notes["ratio_to_raw"]),
        slo.check("audit.enqueue_p99_us", enq.p99),
        slo.check("audit.proof_p99_us", inc.p99),
    ]
    return {
        "suite": "audit",
        "measurements": [m.to_json() for m in (raw, ours, enq, dur, inc, con)],
        "checks": checks,
        "latency_groups": [
            {"title": "time an append holds a decision", "series": ["enqueue"]},
            {"title": "durable append (group commit + fsync)", "series": ["durable_append"]},
            {
                "title": "proofs from a 1,000,000-entry tree",
                "series": ["inclusion_proof_1m", "consistency_proof_1m"],
            },
        ],
    }
