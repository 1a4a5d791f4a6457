"""An append-only JSON-lines decision journal: the sink `interlock up` uses until the
verifiable Merkle log (issue 3) replaces it.

Each record is written and fsynced before `append` returns, so an acknowledged decision
survives a crash. It is not tamper-evident; the Merkle log is.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from interlock.core.record import DecisionRecord


class JsonlSink:
    """Appends one JSON object per decision to `path` (created 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = asyncio.Lock()

    async def append(self, record: DecisionRecord) -> None:
        line = json.dumps(record.to_json(), separators=(",", ":")).encode() + b"\n"
        async with self._lock:
            await asyncio.to_thread(self._write, line)

    def _write(self, line: bytes) -> None:
        os.write(self._fd, line)
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)
