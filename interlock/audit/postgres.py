"""The shared audit store on PostgreSQL (asyncpg), for several interlock instances.

Appenders serialise on the single `audit_head` row (`SELECT ... FOR UPDATE`), so two
instances appending at once each extend the tree the other left, and a crash mid-append
rolls the whole batch back. Each append is one transaction with three array inserts.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import asyncpg

from interlock.audit import merkle
from interlock.audit.merkle import NodeKey
from interlock.audit.store import StoredRecord
from interlock.errors import AuditError

SCHEMA_LOCK = 0x696E746C  # "intl": serialises schema creation between instances
SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_records (
    idx BIGINT PRIMARY KEY, decision_id TEXT NOT NULL, data BYTEA NOT NULL,
    leaf BYTEA NOT NULL);
CREATE INDEX IF NOT EXISTS audit_records_decision ON audit_records (decision_id);
CREATE TABLE IF NOT EXISTS audit_nodes (
    level INT NOT NULL, idx BIGINT NOT NULL, hash BYTEA NOT NULL, PRIMARY KEY (level, idx));
CREATE TABLE IF NOT EXISTS audit_head (
    id INT PRIMARY KEY CHECK (id = 1), size BIGINT NOT NULL);
INSERT INTO audit_head (id, size) VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS audit_checkpoints (size BIGINT PRIMARY KEY, note TEXT NOT NULL);
"""
NODES_QUERY = """
SELECT n.level, n.idx, n.hash FROM audit_nodes n
JOIN unnest($1::int[], $2::bigint[]) AS k(level, idx) ON n.level = k.level AND n.idx = k.idx
"""
COMMAND_TIMEOUT_S = 10.0


class PostgresStore:
    def __init__(self, dsn: str, command_timeout: float = COMMAND_TIMEOUT_S) -> None:
        self.dsn = dsn
        self.command_timeout = command_timeout
        """Bounds each command, the wait for a pooled connection, and the rollback of a
        write cut short by the log's `write_timeout`: nothing waits on a frozen database
        for more than a few multiples of it."""
        self._pool: asyncpg.Pool | None = None

    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise AuditError("audit store is not open")
        return self._pool

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=4, command_timeout=self.command_timeout
            )
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
                await conn.execute(SCHEMA)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise AuditError(f"cannot open postgres audit store: {exc}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def append(self, entries: Sequence[tuple[str, bytes]]) -> int:
        try:
            async with self._p().acquire(timeout=self.command_timeout) as conn, conn.transaction():
                size = int(
                    await conn.fetchval("SELECT size FROM audit_head WHERE id = 1 FOR UPDATE")
                )
                keys = merkle.frontier_keys(size)
                found = await _nodes(conn, keys)
                if len(found) != len(keys):
                    raise AuditError("audit tree is damaged: frontier nodes are missing")
                front = merkle.frontier_from(size, found)
                leaves = [merkle.leaf_hash(d) for _, d in entries]
                new, _ = merkle.extend(size, front, leaves)
                high = [n for n in new if n[0] >= merkle.TILE_LEVEL]
                await conn.execute(
                    "INSERT INTO audit_records (idx, decision_id, data, leaf) "
                    "SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::bytea[])",
                    [size + i for i in range(len(entries))],
                    [e[0] for e in entries],
                    [e[1] for e in entries],
                    leaves,
                )
                await conn.execute(
                    "INSERT INTO audit_nodes (level, idx, hash) "
                    "SELECT * FROM unnest($1::int[], $2::bigint[], $3::bytea[])",
                    [n[0] for n in high],
                    [n[1] for n in high],
                    [n[2] for n in high],
                )
                await conn.execute(
                    "UPDATE audit_head SET size = $1 WHERE id = 1", size + len(entries)
                )
                return size
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise AuditError(f"postgres audit store: {exc}") from exc

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        try:
            async with self._p().acquire(timeout=self.command_timeout) as conn:
                return list(await conn.fetch(query, *args))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise AuditError(f"postgres audit store: {exc}") from exc

    async def size(self) -> int:
        rows = await self._fetch("SELECT size FROM audit_head WHERE id = 1")
        return int(rows[0]["size"])

    async def nodes(self, keys: Collection[NodeKey]) -> dict[NodeKey, bytes]:
        try:
            async with self._p().acquire(timeout=self.command_timeout) as conn:
                return await _nodes(conn, list(keys))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise AuditError(f"postgres audit store: {exc}") from exc

    async def records(self, start: int, end: int) -> list[StoredRecord]:
        rows = await self._fetch(
            "SELECT idx, decision_id, data FROM audit_records WHERE idx >= $1 AND idx < $2 "
            "ORDER BY idx",
            start,
            end,
        )
        return [StoredRecord(int(r["idx"]), r["decision_id"], bytes(r["data"])) for r in rows]

    async def find(self, decision_id: str) -> StoredRecord | None:
        rows = await self._fetch(
            "SELECT idx, decision_id, data FROM audit_records WHERE decision_id = $1 "
            "ORDER BY idx LIMIT 1",
            decision_id,
        )
        if not rows:
            return None
        r = rows[0]
        return StoredRecord(int(r["idx"]), r["decision_id"], bytes(r["data"]))

    async def add_checkpoint(self, size: int, note: str) -> None:
        await self._fetch(
            "INSERT INTO audit_checkpoints (size, note) VALUES ($1, $2) "
            "ON CONFLICT (size) DO UPDATE SET note = EXCLUDED.note",
            size,
            note,
        )

    async def checkpoints(self) -> list[tuple[int, str]]:
        rows = await self._fetch("SELECT size, note FROM audit_checkpoints ORDER BY size")
        return [(int(r["size"]), r["note"]) for r in rows]


async def _nodes(conn: Any, keys: Collection[NodeKey]) -> dict[NodeKey, bytes]:
    """Stored nodes from the node table; low levels computed from the records' leaves."""
    high, low = merkle.split_keys(keys)
    found: dict[NodeKey, bytes] = {}
    if high:
        rows = await conn.fetch(NODES_QUERY, [k[0] for k in high], [k[1] for k in high])
        found = {(int(r["level"]), int(r["idx"])): bytes(r["hash"]) for r in rows}
    if low:
        rows = await conn.fetch(
            "SELECT idx, leaf FROM audit_records WHERE idx = ANY($1)",
            sorted(merkle.leaves_needed(low)),
        )
        found.update(merkle.from_leaves(low, {int(r["idx"]): bytes(r["leaf"]) for r in rows}))
    return found
