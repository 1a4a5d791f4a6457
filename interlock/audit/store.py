"""The storage interface of the audit log, shared by every backend.

A store keeps three things: records (index, decision id, canonical bytes), the perfect
subtree hashes of the Merkle tree (`merkle.NodeKey` -> hash) and signed checkpoints.
`append` is the only write that touches the tree, and it is atomic: records, nodes and the
new size commit together or not at all, under a lock that makes concurrent appenders
(several interlock instances on one PostgreSQL) take turns. The tree arithmetic lives in
`merkle.extend`, so every backend builds the same tree.

An immudb (or any other) backend implements this Protocol and passes
tests/audit/test_stores.py. The choice of store for a URL is `factory.open_store`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from interlock.audit.merkle import NodeKey


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
