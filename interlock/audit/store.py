"""The storage interface of the audit log, shared by every backend.

A store keeps three things: records (index, decision id, canonical bytes), the perfect
subtree hashes of the Merkle tree (`merkle.NodeKey` -> hash) and signed checkpoints.
`append` is the only write that touches the tree, and it is atomic: records, nodes and the
new size commit together or not at all, under a lock that makes concurrent appenders
(several interlock instances on one PostgreSQL) take turns. The tree arithmetic lives in
`merkle.extend`, so every backend builds the same tree.

An immudb (or any other) backend implements this Protocol and passes
tests/audit/test_stores.py.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from interlock.audit.merkle import NodeKey
from interlock.errors import ConfigError


@dataclass(frozen=True, slots=True)
class StoredRecord:
    index: int
    decision_id: str
    data: bytes


class AuditStore(Protocol):
    async def open(self) -> None:
        """Connect and create the schema if missing."""
        ...

    async def close(self) -> None: ...

    async def append(self, entries: Sequence[tuple[str, bytes]]) -> int:
        """Atomically append (decision id, canonical record) pairs; return the first index.
        Raises AuditError if nothing was written."""
        ...

    async def size(self) -> int: ...

    async def nodes(self, keys: Collection[NodeKey]) -> dict[NodeKey, bytes]: ...

    async def records(self, start: int, end: int) -> list[StoredRecord]:
        """Records with start <= index < end, in index order (gaps are not filled)."""
        ...

    async def find(self, decision_id: str) -> StoredRecord | None: ...

    async def add_checkpoint(self, size: int, note: str) -> None: ...

    async def checkpoints(self) -> list[tuple[int, str]]:
        """All checkpoints, by tree size."""
        ...


def open_store(url: str, base: Path | None = None, timeout: float | None = None) -> AuditStore:
    """The store for `url`. SQLite follows the usual URL convention: `sqlite:///audit.db`
    is relative (to `base`, the data directory), `sqlite:////var/lib/x.db` absolute.
    `timeout` bounds each PostgreSQL command (default `postgres.COMMAND_TIMEOUT_S`)."""
    if url.startswith("sqlite:///"):
        from interlock.audit.sqlite import SqliteStore

        path = Path(url[len("sqlite:///") :])
        if not path.is_absolute() and base is not None:
            path = base / path
        return SqliteStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        from interlock.audit.postgres import PostgresStore

        return PostgresStore(url) if timeout is None else PostgresStore(url, timeout)
    raise ConfigError(f"audit.store: unsupported URL {url.split(':')[0]}://...")
