"""The SQLite audit file's schema and its one write, without asyncio: shared by the store
(interlock/audit/sqlite.py) and its writer process (interlock/audit/writer.py), which
imports nothing heavier than this."""

from __future__ import annotations

import sqlite3
from collections.abc import Buffer, Collection, Sequence
from itertools import accumulate, pairwise
from pathlib import Path

from interlock.audit import merkle
from interlock.audit.merkle import NodeKey
from interlock.core.canonical import dumps_fast
from interlock.errors import AuditError

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_records (
    idx INTEGER PRIMARY KEY, decision_id TEXT NOT NULL, data BLOB NOT NULL,
    leaf BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS audit_records_decision ON audit_records (decision_id);
CREATE TABLE IF NOT EXISTS audit_nodes (
    level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1), size INTEGER NOT NULL);
INSERT OR IGNORE INTO audit_head (id, size) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    size INTEGER PRIMARY KEY, note TEXT NOT NULL);
"""

INSERT_BATCH = """
INSERT INTO audit_records (idx, decision_id, data, leaf)
SELECT :size + j.key, j.value ->> '$[0]',
       substr(:data, (j.value ->> '$[1]') + 1, j.value ->> '$[2]'),
       substr(:leaves, j.key * 32 + 1, 32)
FROM json_each(:rows) AS j ORDER BY j.key
"""
"""A whole batch in one statement: the records' bytes and leaf hashes travel as two
blobs, cut by offsets, where executemany would go back to Python for every row."""

BUSY_TIMEOUT_S = 5.0
"""How long an append waits for another process's write lock before failing."""


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if missing) the audit file: WAL, fsync on every commit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SCHEMA)
    return db


class Appender:
    """Appends batches to one connection, remembering the tree's right edge between them."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self._head: tuple[int, dict[int, bytes]] | None = None
        """(size, frontier) after this appender's last commit: the next append reuses the
        frontier when the tree has not grown since (no other process appended)."""

    def append(
        self, ids: Sequence[str], lengths: Sequence[int], data: Buffer, recheck: bool = False
    ) -> int:
        """Atomically append records (`data` cut by `lengths`, with decision `ids`); the
        index of the first. `BEGIN IMMEDIATE`: another process appending to the same
        file waits its turn instead of building on a stale tree.

        With `recheck` (the last append's outcome is unknown: its writer died, or the
        log's write timeout gave up on it, possibly after its commit), records the log's
        last RECHECK_WINDOW already holds, same decision id and same bytes, are skipped:
        the log retries what it is unsure of, and must not hold it twice."""
        if len(ids) != len(lengths):
            raise ValueError("one decision id per record")
        view = memoryview(data)
        offsets = list(accumulate(lengths, initial=0))
        if offsets[-1] != len(view):
            raise ValueError("record lengths do not add up to the data")
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            (size,) = db.execute("SELECT size FROM audit_head WHERE id = 1").fetchone()
            size = int(size)
            first_found: int | None = None
            if recheck and ids:
                first_found, ids, lengths, view = _unlogged(db, size, ids, lengths, view)
                offsets = list(accumulate(lengths, initial=0))
                if not ids:
                    db.execute("ROLLBACK")
                    return first_found if first_found is not None else size
            leaves = [merkle.leaf_hash(view[a:b]) for a, b in pairwise(offsets)]
            head = self._head
            if head is not None and head[0] == size:
                front = head[1]
            else:  # the first append, or another process appended since ours
                front = merkle.frontier_from(size, complete(db, merkle.frontier_keys(size)))
            new, front = merkle.extend(size, front, leaves, merkle.TILE_LEVEL)
            rows = dumps_fast(list(zip(ids, offsets, lengths, strict=False)))
            db.execute(
                INSERT_BATCH,
                {"size": size, "data": view, "leaves": b"".join(leaves), "rows": rows},
            )
            db.executemany("INSERT INTO audit_nodes (level, idx, hash) VALUES (?, ?, ?)", new)
            db.execute("UPDATE audit_head SET size = ? WHERE id = 1", (size + len(ids),))
            db.execute("COMMIT")
        except BaseException:
            self._head = None
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._head = (size + len(ids), front)
        return first_found if first_found is not None else size


RECHECK_WINDOW = 8192
"""Records at the log's end a recheck looks through: the batch whose outcome was unknown
(at most the log's `max_batch`, 512 by default) is there unless other processes appended
this many records since."""


def _unlogged(
    db: sqlite3.Connection, size: int, ids: Sequence[str], lengths: Sequence[int], view: memoryview
) -> tuple[int | None, list[str], list[int], memoryview]:
    """The batch without the records the log's tail already holds, and the index of its
    first record if that one is among them."""
    logged = _logged(db, size, ids)
    first_found = None
    keep = []
    for i, (did, (a, b)) in enumerate(
        zip(ids, pairwise(accumulate(lengths, initial=0)), strict=True)
    ):
        at = logged.get((did, bytes(view[a:b])))
        if at is None:
            keep.append((did, view[a:b]))
        elif i == 0:
            first_found = at
    data = memoryview(b"".join(v for _, v in keep)) if len(keep) < len(ids) else view
    return first_found, [d for d, _ in keep], [len(v) for _, v in keep], data


def _logged(db: sqlite3.Connection, size: int, ids: Sequence[str]) -> dict[tuple[str, bytes], int]:
    """(decision id, bytes) -> index of the records among the last RECHECK_WINDOW that
    carry one of `ids`. The bytes are compared as well: one decision can have several
    records under its id (a fail-closed denial after an error, say)."""
    found: dict[tuple[str, bytes], int] = {}
    unique = sorted(set(ids))
    for i in range(0, len(unique), 500):
        chunk = unique[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for idx, did, data in db.execute(
            "SELECT idx, decision_id, data FROM audit_records "  # noqa: S608 (only ?s)
            f"WHERE idx >= ? AND decision_id IN ({marks})",
            (size - RECHECK_WINDOW - len(ids), *chunk),
        ):
            found.setdefault((str(did), bytes(data)), int(idx))
    return found


def complete(db: sqlite3.Connection, keys: Collection[NodeKey]) -> dict[NodeKey, bytes]:
    found = nodes(db, keys)
    missing = [k for k in keys if k not in found]
    if missing:
        raise AuditError(f"audit tree is damaged: nodes {missing[:3]} are missing")
    return found


def nodes(db: sqlite3.Connection, keys: Collection[NodeKey]) -> dict[NodeKey, bytes]:
    """Stored nodes from the node table; low levels computed from the records' leaves."""
    high, low = merkle.split_keys(keys)
    found: dict[NodeKey, bytes] = {}
    for i in range(0, len(high), 400):
        chunk = high[i : i + 400]
        where = " OR ".join(["(level = ? AND idx = ?)"] * len(chunk))
        params = [v for key in chunk for v in key]
        for level, idx, h in db.execute(
            f"SELECT level, idx, hash FROM audit_nodes WHERE {where}",  # noqa: S608 (only ?s)
            params,
        ):
            found[(int(level), int(idx))] = bytes(h)
    if low:
        wanted = sorted(merkle.leaves_needed(low))
        leaves: dict[int, bytes] = {}
        for i in range(0, len(wanted), 500):
            chunk_idx = wanted[i : i + 500]
            marks = ",".join("?" * len(chunk_idx))
            for idx, leaf in db.execute(
                f"SELECT idx, leaf FROM audit_records WHERE idx IN ({marks})",  # noqa: S608
                chunk_idx,
            ):
                leaves[int(idx)] = bytes(leaf)
        found.update(merkle.from_leaves(low, leaves))
    return found
