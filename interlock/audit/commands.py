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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interlock.audit import merkle
from interlock.audit.checkpoint import Verifier
from interlock.audit.cosignature import Quorum
from interlock.audit.merkle import Range
from interlock.audit.store import AuditStore, StoredRecord
from interlock.audit.verify import Finding, LogVerifier, Report
from interlock.core.engine import CompiledPolicy
from interlock.core.policy import DECISION_ENTRYPOINT
from interlock.core.result import parse_result
from interlock.core.signals import RiskModel, score
from interlock.errors import AuditError, PolicyError

CHUNK = 5000
Print = Callable[[str], None]


async def _chunks(store: AuditStore, start: int = 0) -> AsyncIterator[list[StoredRecord]]:
    size = await store.size()
    while start < size:
        end = min(start + CHUNK, size)
        yield await store.records(start, end)
        start = end


async def verify_store(
    store: AuditStore,
    verifier: Verifier,
    origin: str | None,
    *,
    since: str | None = None,
    max_age: float | None = None,
    quorum: Quorum | None = None,
) -> Report:
    """Recompute the tree from every record; check every checkpoint, stored leaf hashes,
    every stored tree node, and consistency proofs built from the stored tree between
    successive checkpoints and from the auditor's kept checkpoint (`since`). A damaged
    store gives findings, never an exception: an auditor needs the diagnosis most then."""
    notes = [note for _, note in await store.checkpoints()]
    check = LogVerifier(verifier, notes, origin, since, quorum)
    size = await store.size()
    async for chunk in _chunks(store):
        if not chunk:
            continue
        leaves = await store.nodes([(0, r.index) for r in chunk])
        built: list[tuple[int, int, bytes]] = []
        for r in chunk:
            built += check.feed(r.index, r.data, leaves.get((0, r.index)))
            named = _decision_id(r.data)
            if named != r.decision_id:
                check.find(
                    r.index,
                    f"indexed under decision id {r.decision_id!r}, but the record is decision "
                    f"{named!r} (`audit show` by id would return the wrong record)",
                )
        await _check_nodes(store, check, built)
    check.gap(size)
    report = check.finish(time.time(), max_age)
    sizes = sorted(s for s in check.checkpoints if s <= size)
    cps = check.checkpoints
    pairs = [(a, b, cps[a].root) for a, b in itertools.pairwise(sizes)]
    kept = check.kept
    if kept is not None and report.since is not None and sizes and kept.size < sizes[-1]:
        pairs.append((kept.size, sizes[-1], kept.root))
    for a, b, first in pairs:
        try:
            proof = await consistency_proof(store, a, b)
        except merkle.MissingNode as exc:
            check.find(None, f"no consistency proof from {a} to {b}: {exc}")
            continue
        if not merkle.verify_consistency(a, b, first, cps[b].root, proof):
            check.find(None, f"stored tree gives no valid consistency proof from {a} to {b}")
    return report


async def _check_nodes(
    store: AuditStore, check: LogVerifier, built: list[tuple[int, int, bytes]]
) -> None:
    """Compare the stored tree nodes with the ones recomputed from the records: a missing
    node is named, and a differing one unless a finding already covers its records (so a
    changed record is reported once, not once per level above it)."""
    mine = {(level, idx): h for level, idx, h in built if level >= merkle.TILE_LEVEL}
    stored = await store.nodes(list(mine))
    for (level, idx), h in sorted(mine.items()):
        lo, hi = idx << level, ((idx + 1) << level) - 1
        got = stored.get((level, idx))
        if got is None:
            check.find(lo, f"stored tree node covering records {lo}..{hi} is missing")
        elif got != h and not any(
            f.index is not None and lo <= f.index <= hi for f in check.report.findings
        ):
            check.find(
                lo, f"records {lo}..{hi} do not match the stored tree (changed or reordered)"
            )


def _decision_id(data: bytes) -> object:
    """The decision id a record states (None if it states none readable)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc.get("decision_id") if isinstance(doc, dict) else None


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
    if not ref.isdigit() and _decision_id(rec.data) != ref:
        # The store's decision id column is not covered by any hash: only the record is.
        raise AuditError(
            f"the store finds {ref} at record {rec.index}, which is decision "
            f"{_decision_id(rec.data)!r}: its index was changed (run `interlock audit verify`)"
        )
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


@dataclass
class Exported:
    records: int = 0
    checkpoints: int = 0
    size: int = 0
    problems: list[str] = field(default_factory=list)
    """What a damaged store could not give: absent record ranges, proofs it cannot build."""


async def export(store: AuditStore, verifier: Verifier, target: Path) -> Exported:
    """Write records, checkpoints and proofs as files an auditor verifies offline.

    A damaged store exports what it has: absent record ranges go to missing.jsonl (so
    line i of records.jsonl need not be leaf i), proofs it cannot build are left out, and
    both are listed in `problems`. A CLI command, not on any serving loop, so plain
    blocking file writes are fine."""
    target.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
    (target / "checkpoints").mkdir(exist_ok=True)
    (target / "proofs").mkdir(exist_ok=True)
    cps = await store.checkpoints()
    out = Exported(checkpoints=len(cps), size=await store.size())
    gaps: list[Range] = []
    with (target / "records.jsonl").open("wb") as f:
        async for chunk in _chunks(store):
            for r in chunk:
                if r.index > out.records + _absent(gaps):
                    gaps.append((out.records + _absent(gaps), r.index))
                f.write(r.data + b"\n")
                out.records += 1
    if out.size > out.records + _absent(gaps):
        gaps.append((out.records + _absent(gaps), out.size))
    with (target / "missing.jsonl").open("w") as f:
        for lo, hi in gaps:
            f.write(json.dumps({"start": lo, "end": hi}) + "\n")
            out.problems.append(f"records {lo}..{hi - 1} missing from the store")
    for s, note in cps:
        (target / "checkpoints" / f"{s:012d}.note").write_text(note, "utf-8")
    sizes = [s for s, _ in cps if s <= out.size]
    with (target / "proofs" / "consistency.jsonl").open("w") as f:
        for a, b in itertools.pairwise(sizes):
            try:
                proof = b64(await consistency_proof(store, a, b))
            except merkle.MissingNode as exc:
                out.problems.append(f"no consistency proof from {a} to {b}: {exc}")
                continue
            f.write(json.dumps({"first": a, "second": b, "proof": proof}) + "\n")
    last = sizes[-1] if sizes else 0
    unprovable: list[int] = []
    with (target / "proofs" / "inclusion.jsonl").open("w") as f:
        for i in range(last):
            try:
                proof = b64(await inclusion_proof(store, i, last))
            except merkle.MissingNode:
                unprovable.append(i)
                continue
            f.write(json.dumps({"index": i, "size": last, "proof": proof}) + "\n")
    if unprovable:
        out.problems.append(
            f"no inclusion proof for {len(unprovable)} record(s) from index {unprovable[0]} "
            "(tree nodes missing)"
        )
    (target / "key.vkey").write_text(verifier.encode() + "\n", "utf-8")
    (target / "README.txt").write_text(
        "interlock audit export\n\n"
        "records.jsonl      one canonical record (RFC 8785) per line; line i is leaf i,\n"
        "                   counting the ranges missing.jsonl lists as absent\n"
        "missing.jsonl      record ranges [start, end) the store no longer had\n"
        "checkpoints/       signed checkpoints (C2SP signed notes), by tree size\n"
        "proofs/            RFC 9162 consistency proofs between successive checkpoints,\n"
        "                   and an inclusion proof of every record in the latest one\n"
        "key.vkey           the log's verifier key, for reference only: verify with the\n"
        "                   key you obtained independently:\n\n"
        "  interlock audit verify --bundle THIS_DIR --key 'NAME+ID+KEY'\n",
        "utf-8",
    )
    return out


def _absent(gaps: list[Range]) -> int:
    return sum(hi - lo for lo, hi in gaps)


def verify_bundle(
    target: Path,
    verifier: Verifier,
    origin: str | None,
    *,
    since: str | None = None,
    max_age: float | None = None,
    quorum: Quorum | None = None,
) -> Report:
    """Verify an export with nothing but its files and the verifier key. The unsigned
    tail's age is measured against the newest record: the export's time is not signed.
    A file that is not what an export writes (a range that is not numbers, a proof that
    is not base64, a note that is not UTF-8) fails the verification with what was wrong,
    never with a traceback."""
    try:
        notes = [p.read_text("utf-8") for p in sorted((target / "checkpoints").glob("*.note"))]
        check = LogVerifier(verifier, notes, origin, since, quorum)
        gaps = [(e["start"], e["end"]) for e in _lines(target / "missing.jsonl")]
        records: dict[int, bytes] = {}
        index = 0
        with (target / "records.jsonl").open("rb") as f:
            for line in f:
                while gaps and gaps[0][0] <= index:
                    index = max(index, gaps.pop(0)[1])
                data = line.rstrip(b"\n")
                records[index] = data
                check.feed(index, data)
                index += 1
        for _, hi in gaps:
            check.gap(hi)
        report = check.finish(None, max_age)
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
                and i in records
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
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OSError) as exc:
        raise AuditError(f"bundle {target} is malformed: {type(exc).__name__}: {exc}") from None


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text("utf-8").splitlines() if x.strip()]


def _unb64(items: list[str]) -> list[bytes]:
    return [base64.b64decode(x) for x in items]


NOT_REPLAYABLE = "not replayable"
"""What replay says of a record no policy decided (`policy_engine` null): a request
refused before the policy ran, or an observation such as a hold's outcome."""


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
    def replayable(self) -> bool:
        return self.replayed != NOT_REPLAYABLE

    @property
    def changed(self) -> bool:
        return self.replayable and self.recorded != self.replayed


async def replay(
    store: AuditStore, agent: str, since: float | None, evaluate: Callable[[dict[str, Any]], str]
) -> list[Replayed]:
    """Re-decide an agent's recorded actions with `evaluate(record) -> effect`; records
    the policy did not decide are listed as not replayable, not re-decided."""
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
                    NOT_REPLAYABLE if rec.get("policy_engine") is None else evaluate(rec),
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
