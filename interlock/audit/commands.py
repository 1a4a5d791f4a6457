"""What `interlock audit ...` does: verify, show, tail, proofs, export, replay.

Each command opens the configured store directly (it can run beside a live `interlock up`:
SQLite in WAL mode and PostgreSQL both allow readers while one process writes).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interlock.audit import merkle
from interlock.audit.checkpoint import Verifier
from interlock.audit.store import AuditStore, StoredRecord
from interlock.audit.verify import Finding, LogVerifier, Report
from interlock.core.engine import CompiledPolicy
from interlock.core.policy import DECISION_ENTRYPOINT
from interlock.core.result import parse_result
from interlock.core.signals import RiskModel, score
from interlock.errors import PolicyError

CHUNK = 5000
Print = Callable[[str], None]


async def _chunks(store: AuditStore, start: int = 0) -> AsyncIterator[list[StoredRecord]]:
    size = await store.size()
    while start < size:
        end = min(start + CHUNK, size)
        yield await store.records(start, end)
        start = end


async def verify_store(store: AuditStore, verifier: Verifier, origin: str | None) -> Report:
    """Recompute the tree from every record; check every checkpoint, stored leaf hashes,
    and consistency proofs between successive checkpoints built from the stored tree."""
    notes = [note for _, note in await store.checkpoints()]
    check = LogVerifier(verifier, notes, origin)
    tile_reported = False
    async for chunk in _chunks(store):
        if not chunk:
            continue
        leaves = await store.nodes([(0, r.index) for r in chunk])
        for r in chunk:
            check.feed(r.index, r.data, leaves.get((0, r.index)))
        bad = await _first_bad_tile(store, chunk)
        span = 1 << merkle.TILE_LEVEL
        known = any(
            f.index is not None and bad is not None and bad <= f.index < bad + span
            for f in check.report.findings
        )
        if bad is not None and not tile_reported and not known:
            tile_reported = True
            check.report.findings.append(
                Finding(
                    bad,
                    f"records {bad}..{bad + span - 1} do not "
                    "match the stored tree (changed or "
                    "reordered)",
                )
            )
    size = await store.size()
    report = check.finish()
    sizes = sorted(s for s in check.checkpoints if s <= size)
    for a, b in itertools.pairwise(sizes):
        proof = await consistency_proof(store, a, b)
        if not merkle.verify_consistency(
            a, b, check.checkpoints[a].root, check.checkpoints[b].root, proof
        ):
            report.findings.append(
                _finding(f"stored tree gives no valid consistency proof from checkpoint {a} to {b}")
            )
    return report


async def _first_bad_tile(store: AuditStore, chunk: list[StoredRecord]) -> int | None:
    """Start of the first whole tile of `chunk` whose stored node differs from the node
    recomputed from the records: localises reordering that kept each row's leaf hash."""
    span = 1 << merkle.TILE_LEVEL
    by_index = {r.index: merkle.leaf_hash(r.data) for r in chunk}
    tiles = sorted(
        {
            i // span
            for i in by_index
            if all((i // span) * span + k in by_index for k in range(span))
        }
    )
    stored = await store.nodes([(merkle.TILE_LEVEL, t) for t in tiles])
    mine = merkle.from_leaves([(merkle.TILE_LEVEL, t) for t in tiles], by_index)
    for t in tiles:
        key = (merkle.TILE_LEVEL, t)
        if key in stored and stored[key] != mine.get(key):
            return t * span
    return None


def _finding(message: str) -> Finding:
    return Finding(None, message)


async def inclusion_proof(store: AuditStore, index: int, size: int) -> list[bytes]:
    ranges = merkle.inclusion_ranges(index, size)
    nodes = await store.nodes(merkle.plan(ranges))
    return [merkle.range_hash(s, e, nodes) for s, e in ranges]


async def consistency_proof(store: AuditStore, first: int, second: int) -> list[bytes]:
    ranges = merkle.consistency_ranges(first, second)
    nodes = await store.nodes(merkle.plan(ranges))
    return [merkle.range_hash(s, e, nodes) for s, e in ranges]


async def root(store: AuditStore, size: int) -> bytes:
    return merkle.root_from(size, await store.nodes(merkle.frontier_keys(size)))


def b64(items: list[bytes]) -> list[str]:
    return [base64.b64encode(x).decode() for x in items]


async def latest_checkpoint(store: AuditStore) -> tuple[int, str] | None:
    cps = await store.checkpoints()
    return cps[-1] if cps else None


async def show(store: AuditStore, ref: str) -> dict[str, Any] | None:
    """A record by decision id or index, with its inclusion proof against the latest
    checkpoint that covers it."""
    rec: StoredRecord | None
    if ref.isdigit():
        found = await store.records(int(ref), int(ref) + 1)
        rec = found[0] if found else None
    else:
        rec = await store.find(ref)
    if rec is None:
        return None
    out: dict[str, Any] = {
        "index": rec.index,
        "record": json.loads(rec.data),
        "leaf_hash": base64.b64encode(merkle.leaf_hash(rec.data)).decode(),
    }
    cps = [(s, n) for s, n in await store.checkpoints() if s > rec.index]
    if cps:
        size, note = cps[-1]
        out["checkpoint"] = note
        out["inclusion_proof"] = {
            "size": size,
            "hashes": b64(await inclusion_proof(store, rec.index, size)),
        }
    return out


async def tail(store: AuditStore, n: int, follow: bool, emit: Print, poll: float = 0.5) -> None:
    size = await store.size()
    start = max(0, size - n)
    while True:
        for r in await store.records(start, size):
            emit(r.data.decode())
            start = r.index + 1
        if not follow:
            return
        await asyncio.sleep(poll)
        size = await store.size()


async def export(store: AuditStore, verifier: Verifier, target: Path) -> dict[str, int]:
    """Write records, checkpoints and proofs as files an auditor verifies offline.

    A CLI command, not on any serving loop, so plain blocking file writes are fine."""
    target.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
    (target / "checkpoints").mkdir(exist_ok=True)
    (target / "proofs").mkdir(exist_ok=True)
    cps = await store.checkpoints()
    size = await store.size()
    count = 0
    with (target / "records.jsonl").open("wb") as f:
        async for chunk in _chunks(store):
            for r in chunk:
                f.write(r.data + b"\n")
                count += 1
    for s, note in cps:
        (target / "checkpoints" / f"{s:012d}.note").write_text(note, "utf-8")
    sizes = [s for s, _ in cps if s <= size]
    with (target / "proofs" / "consistency.jsonl").open("w") as f:
        for a, b in itertools.pairwise(sizes):
            proof = b64(await consistency_proof(store, a, b))
            f.write(json.dumps({"first": a, "second": b, "proof": proof}) + "\n")
    last = sizes[-1] if sizes else 0
    with (target / "proofs" / "inclusion.jsonl").open("w") as f:
        for i in range(last):
            proof = b64(await inclusion_proof(store, i, last))
            f.write(json.dumps({"index": i, "size": last, "proof": proof}) + "\n")
    (target / "key.vkey").write_text(verifier.encode() + "\n", "utf-8")
    (target / "README.txt").write_text(
        "interlock audit export\n\n"
        "records.jsonl      one canonical record (RFC 8785) per line; line i is leaf i\n"
        "checkpoints/       signed checkpoints (C2SP signed notes), by tree size\n"
        "proofs/            RFC 9162 consistency proofs between successive checkpoints,\n"
        "                   and an inclusion proof of every record in the latest one\n"
        "key.vkey           the log's verifier key, for reference only: verify with the\n"
        "                   key you obtained independently:\n\n"
        "  interlock audit verify --bundle THIS_DIR --key 'NAME+ID+KEY'\n",
        "utf-8",
    )
    return {"records": count, "checkpoints": len(cps), "size": size}


def verify_bundle(target: Path, verifier: Verifier, origin: str | None) -> Report:
    """Verify an export with nothing but its files and the verifier key."""
    notes = [p.read_text("utf-8") for p in sorted((target / "checkpoints").glob("*.note"))]
    check = LogVerifier(verifier, notes, origin)
    records: list[bytes] = []
    with (target / "records.jsonl").open("rb") as f:
        for i, line in enumerate(f):
            data = line.rstrip(b"\n")
            records.append(data)
            check.feed(i, data)
    report = check.finish()
    cps = check.checkpoints
    for entry in _lines(target / "proofs" / "consistency.jsonl"):
        a, b = entry["first"], entry["second"]
        if (
            a in cps
            and b in cps
            and not merkle.verify_consistency(
                a, b, cps[a].root, cps[b].root, _unb64(entry["proof"])
            )
        ):
            report.findings.append(_finding(f"consistency proof {a} -> {b} does not verify"))
    bad_inclusion = None
    for entry in _lines(target / "proofs" / "inclusion.jsonl"):
        i, size = entry["index"], entry["size"]
        cp = cps.get(size)
        ok = (
            cp is not None
            and i < len(records)
            and merkle.verify_inclusion(
                i, size, merkle.leaf_hash(records[i]), _unb64(entry["proof"]), cp.root
            )
        )
        if not ok and bad_inclusion is None:
            bad_inclusion = i
    if bad_inclusion is not None:
        report.findings.insert(
            0,
            Finding(
                bad_inclusion, "inclusion proof in the signed checkpoint fails (record changed)"
            ),
        )
    return report


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text("utf-8").splitlines() if x.strip()]


def _unb64(items: list[str]) -> list[bytes]:
    return [base64.b64decode(x) for x in items]


@dataclass(frozen=True)
class Replayed:
    index: int
    decision_id: str
    time: str
    operation: str
    target: str
    recorded: str
    replayed: str
    recorded_version: str

    @property
    def changed(self) -> bool:
        return self.recorded != self.replayed


async def replay(
    store: AuditStore, agent: str, since: float | None, evaluate: Callable[[dict[str, Any]], str]
) -> list[Replayed]:
    """Re-decide an agent's recorded actions with `evaluate(record) -> effect`."""
    out = []
    async for chunk in _chunks(store):
        for r in chunk:
            rec = json.loads(r.data)
            if rec.get("agent", {}).get("id") != agent:
                continue
            if since is not None and _epoch(rec["time"]) < since:
                continue
            out.append(
                Replayed(
                    r.index,
                    rec["decision_id"],
                    rec["time"],
                    rec["action"]["operation"],
                    rec["action"]["target"],
                    rec["effect"],
                    evaluate(rec),
                    rec["policy_version"],
                )
            )
    return out


def _epoch(stamp: str) -> float:
    return time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone


def evaluator(policy: CompiledPolicy) -> Callable[[dict[str, Any]], str]:
    """Re-decide a recorded action under `policy`: the recorded signals are re-scored with
    this bundle's risk model, then the policy is evaluated on the recorded input."""
    model = RiskModel.from_data(policy.data.get("interlock", {}).get("risk", {}))

    def evaluate(rec: dict[str, Any]) -> str:
        signals = {k: float(v) for k, v in rec["risk"]["signals"].items()}
        risk = score(signals, model)
        action = rec["action"]
        doc = {
            "agent": rec["agent"],
            "action": {
                k: action[k]
                for k in ("protocol", "operation", "target", "details", "labels", "threat_matches")
            },
            "context": rec["context"],
            "risk": {"score": risk.score, "tier": risk.tier.value, "signals": signals},
            "time": rec.get("time_features", {}),
        }
        try:
            value = policy.evaluate(DECISION_ENTRYPOINT, doc)
            decision = parse_result(
                value,
                decision_id=rec["decision_id"],
                risk=risk,
                policy_version=policy.version,
                now=0.0,
            )
        except PolicyError:
            return "deny"
        return decision.effect.value

    return evaluate
