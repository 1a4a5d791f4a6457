"""Outstanding leases, in memory and in a journal on disk.

Every lease interlock takes is appended to `<data_dir>/credentials/leases.jsonl` (and
fsynced) before the credentials are used, and a removal line is appended once it is
revoked. A crash leaves lines without their removal: the next start reads them and
revokes those leases, so no dynamic role outlives the instance that made it. A torn
last line (a crash mid-write) is ignored; what it named was never used.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

from interlock.errors import StateError

JOURNAL = "leases.jsonl"
COMPACT_BYTES = 1 << 20
"""Rewrite the journal from what is outstanding once it grows past this."""


@dataclass(frozen=True, slots=True)
class Lease:
    lease_id: str
    agent: str
    purpose: str
    """What it is for: `postgres` (one client session)."""


class JournalBusy(StateError):
    """Another interlock uses this data directory's lease journal."""


class LeaseBook:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory = directory
        self.path = directory / JOURNAL
        self._leases: dict[str, Lease] = {}
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Hold the journal for this process: a second instance on the same data
        directory would revoke the first one's live leases as leftovers."""
        fd = os.open(self.directory / (JOURNAL + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise JournalBusy(f"{self.directory} is in use by another interlock") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def leftover(self) -> list[Lease]:
        """Leases a previous run took and never recorded revoking."""
        found: dict[str, Lease] = {}
        try:
            lines = self.path.read_text("utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []
        for line in lines:
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                if doc["op"] == "add":
                    found[doc["id"]] = Lease(str(doc["id"]), str(doc["agent"]), str(doc["for"]))
                elif doc["op"] == "del":
                    found.pop(doc["id"], None)
            except (ValueError, KeyError, TypeError):
                continue
        return list(found.values())

    def reset(self, keep: list[Lease]) -> None:
        """Start a fresh journal holding `keep` (leases not yet revoked)."""
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, "".join(_line("add", lease) + "\n" for lease in keep).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(self.path)
        self._sync_directory()
        self._leases = {lease.lease_id: lease for lease in keep}

    def add(self, lease: Lease) -> None:
        self._append(_line("add", lease))
        self._leases[lease.lease_id] = lease

    def remove(self, lease_id: str) -> None:
        if self._leases.pop(lease_id, None) is not None:
            self._append(json.dumps({"op": "del", "id": lease_id}))
            if self.path.stat().st_size > COMPACT_BYTES:
                self.reset(list(self._leases.values()))

    def of_agent(self, agent: str) -> list[Lease]:
        return [lease for lease in self._leases.values() if lease.agent == agent]

    def all(self) -> list[Lease]:
        return list(self._leases.values())

    def _append(self, line: str) -> None:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            # A line starts on a fresh line even after a torn write: the torn one is
            # ignored on reading, this one is not merged into it.
            _write_all(fd, ("\n" + line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            self._sync_directory()

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _line(op: str, lease: Lease) -> str:
    return json.dumps({"op": op, "id": lease.lease_id, "agent": lease.agent, "for": lease.purpose})
