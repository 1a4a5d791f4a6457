"""Outstanding leases, in memory and in a journal on disk.

Every lease interlock takes is appended to `<data_dir>/credentials/leases.jsonl` (and
fsynced) before the credentials are used, and a removal line is appended once it is
revoked. A crash leaves lines without their removal: the next start reads them and
revokes those leases, so no dynamic role outlives the instance that made it. A torn
last line (a crash mid-write) is ignored; what it named was never used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

JOURNAL = "leases.jsonl"


@dataclass(frozen=True, slots=True)
class Lease:
    lease_id: str
    agent: str
    purpose: str
    """What it is for: `postgres` (one client session)."""


class LeaseBook:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = directory / JOURNAL
        self._leases: dict[str, Lease] = {}

    def leftover(self) -> list[Lease]:
        """Leases a previous run took and never recorded revoking."""
        found: dict[str, Lease] = {}
        try:
            lines = self.path.read_text("utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []
        for line in lines:
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
        with tmp.open("w", encoding="utf-8") as f:
            for lease in keep:
                f.write(_line("add", lease) + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o600)
        tmp.replace(self.path)
        self._leases = {lease.lease_id: lease for lease in keep}

    def add(self, lease: Lease) -> None:
        self._append(_line("add", lease))
        self._leases[lease.lease_id] = lease

    def remove(self, lease_id: str) -> None:
        if self._leases.pop(lease_id, None) is not None:
            self._append(json.dumps({"op": "del", "id": lease_id}))

    def of_agent(self, agent: str) -> list[Lease]:
        return [lease for lease in self._leases.values() if lease.agent == agent]

    def all(self) -> list[Lease]:
        return list(self._leases.values())

    def _append(self, line: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)


def _line(op: str, lease: Lease) -> str:
    return json.dumps({"op": op, "id": lease.lease_id, "agent": lease.agent, "for": lease.purpose})
