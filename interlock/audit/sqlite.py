"""The embedded audit store: one SQLite file in WAL mode, fsynced on every commit.

All database work runs on one dedicated thread (SQLite connections are not shareable
across threads, and a second thread would only contend for the write lock). Appends take
`BEGIN IMMEDIATE`, so another process appending to the same file waits its turn instead
of building on a stale tree.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from interlock.audit import merkle
from interlock.audit.merkle import NodeKey
from interlock.audit.store import StoredRecord
from interlock.errors import AuditError

T = TypeVar("T")

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
blobs, cut by offsets. sqlite3's executemany takes the GIL back for every row, and
while the log's encoding thread holds it each of those waits can last a switch interval
(5 ms); one statement runs with the GIL released from start to end."""

BUSY_TIMEOUT_S = 5.0
"""How long an append waits for another process's write lock before failing."""


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._pool: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._pool is None or self._db is None:
            raise AuditError("audit store is not open")
        db = self._db
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn, db)
        except sqlite3.Error as exc:
            raise AuditError(f"sqlite audit store {self.path}: {exc}") from exc

    async def open(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="audit-sqlite")
        loop = asyncio.get_running_loop()

        def connect() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
            return db

        try:
            self._db = await loop.run_in_executor(self._pool, connect)
        except sqlite3.Error as exc:
            raise AuditError(f"cannot open sqlite audit store {self.path}: {exc}") from exc
        self.path.chmod(0o600)

    async def close(self) -> None:
        if self._db is not None and self._pool is not None:
            db = self._db
            await asyncio.get_running_loop().run_in_executor(self._pool, db.close)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._db = self._pool = None

    async def append(self, entries: Sequence[tuple[str, bytes]]) -> int:
        def work(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            try:
                (size,) = db.execute("SELECT size FROM audit_head WHERE id = 1").fetchone()
                front = merkle.frontier_from(size, _complete(db, merkle.frontier_keys(size)))
                leaves = [merkle.leaf_hash(d) for _, d in entries]
                new, _ = merkle.extend(size, front, leaves)
                db.execute(INSERT_BATCH, _packed(size, entries, leaves))
                db.executemany(
                    "INSERT INTO audit_nodes (level, idx, hash) VALUES (?, ?, ?)",
                    [n for n in new if n[0] >= merkle.TILE_LEVEL],
                )
                db.execute("UPDATE audit_head SET size = ? WHERE id = 1", (size + len(entries),))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return int(size)

        return await self._run(work)

    async def size(self) -> int:
        return await self._run(
            lambda db: int(db.execute("SELECT size FROM audit_head WHERE id = 1").fetchone()[0])
        )

    async def nodes(self, keys: Collection[NodeKey]) -> dict[NodeKey, bytes]:
        return await self._run(lambda db: _nodes(db, keys))

    async def records(self, start: int, end: int) -> list[StoredRecord]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT idx, decision_id, data FROM audit_records WHERE idx >= ? AND idx < ? "
                "ORDER BY idx",
                (start, end),
            ).fetchall()
        )
        return [StoredRecord(int(i), str(d), bytes(b)) for i, d, b in rows]

    async def find(self, decision_id: str) -> StoredRecord | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT idx, decision_id, data FROM audit_records WHERE decision_id = ? "
                "ORDER BY idx LIMIT 1",
                (decision_id,),
            ).fetchone()
        )
        return None if row is None else StoredRecord(int(row[0]), str(row[1]), bytes(row[2]))

    async def add_checkpoint(self, size: int, note: str) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO audit_checkpoints (size, note) VALUES (?, ?)", (size, note)
            )
        )

    async def checkpoints(self) -> list[tuple[int, str]]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT size, note FROM audit_checkpoints ORDER BY size"
            ).fetchall()
        )
        return [(int(s), str(n)) for s, n in rows]


def _complete(db: sqlite3.Connection, keys: Collection[NodeKey]) -> dict[NodeKey, bytes]:
    found = _nodes(db, keys)
    missing = [k for k in keys if k not in found]
    if missing:
        raise AuditError(f"audit tree is damaged: nodes {missing[:3]} are missing")
    return found


def _packed(
    size: int, entries: Sequence[tuple[str, bytes]], leaves: Sequence[bytes]
) -> dict[str, Any]:
    """Parameters of INSERT_BATCH: first index, the records' bytes and leaf hashes
    concatenated, and [decision id, offset, length] per record as JSON."""
    rows = []
    offset = 0
    for did, data in entries:
        rows.append([did, offset, len(data)])
        offset += len(data)
    return {
        "size": size,
        "data": b"".join(d for _, d in entries),
        "leaves": b"".join(leaves),
        "rows": json.dumps(rows),
    }


def _nodes(db: sqlite3.Connection, keys: Collection[NodeKey]) -> dict[NodeKey, bytes]:
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
