"""Verifying a log: records against signed checkpoints. Pure: the caller feeds the data.

`LogVerifier` recomputes the tree from the records in index order, checks every
checkpoint's signature under the trusted key, compares each checkpoint's root with the
recomputed one, and checks leaf hashes the store kept, when given them, to name the first
record that differs. It never trusts anything the log says about itself except through a
signature.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from interlock.audit import merkle
from interlock.audit.checkpoint import Checkpoint, CheckpointError, Verifier, open_checkpoint


@dataclass(frozen=True, slots=True)
class Finding:
    index: int | None
    message: str

    def __str__(self) -> str:
        where = f"record {self.index}: " if self.index is not None else ""
        return where + self.message


@dataclass
class Report:
    records: int = 0
    checkpoints: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first_bad_index(self) -> int | None:
        indices = [f.index for f in self.findings if f.index is not None]
        return min(indices) if indices else None


class LogVerifier:
    """Feed records in index order with `feed`, then call `finish`."""

    def __init__(self, verifier: Verifier, notes: Iterable[str], origin: str | None = None):
        self.report = Report()
        self._checkpoints: dict[int, Checkpoint] = {}
        for note in notes:
            try:
                cp = open_checkpoint(note, verifier)
            except CheckpointError as exc:
                size = note.split("\n")[1] if note.count("\n") > 1 else "?"
                self._find(None, f"checkpoint at size {size}: {exc}")
                continue
            if origin is not None and cp.origin != origin:
                self._find(
                    None, f"checkpoint at size {cp.size}: origin {cp.origin!r}, expected {origin!r}"
                )
                continue
            seen = self._checkpoints.get(cp.size)
            if seen is not None and seen.root != cp.root:
                self._find(None, f"two checkpoints sign different roots for size {cp.size}")
            self._checkpoints[cp.size] = cp
        self.report.checkpoints = len(self._checkpoints)
        self._size = 0
        self._front: dict[int, bytes] = {}
        self._good_until = 0
        self._leaf_mismatch_reported = False

    def _find(self, index: int | None, message: str) -> None:
        if len(self.report.findings) < 100:
            self.report.findings.append(Finding(index, message))

    @property
    def checkpoints(self) -> dict[int, Checkpoint]:
        return self._checkpoints

    def feed(self, index: int, data: bytes, stored_leaf: bytes | None = None) -> None:
        if index != self._size:
            if index > self._size:
                self._find(
                    self._size,
                    f"missing ({index - self._size} record(s) absent before index {index})",
                )
            else:
                self._find(index, "appears twice or out of order")
            return
        leaf = merkle.leaf_hash(data)
        if stored_leaf is not None and stored_leaf != leaf and not self._leaf_mismatch_reported:
            self._leaf_mismatch_reported = True
            self._find(
                index,
                "does not match the leaf hash stored for it (record changed, or records reordered)",
            )
        _, self._front = merkle.extend(self._size, self._front, [leaf])
        self._size += 1
        cp = self._checkpoints.get(self._size)
        if cp is not None:
            root = merkle.root_from(self._size, _as_nodes(self._size, self._front))
            if root != cp.root:
                self._find(
                    None,
                    f"records {self._good_until}..{self._size - 1} do not match the "
                    f"signed checkpoint at size {self._size} (changed, removed or "
                    "reordered)",
                )
            else:
                self._good_until = self._size

    def finish(self) -> Report:
        self.report.records = self._size
        beyond = sorted(s for s in self._checkpoints if s > self._size)
        if beyond:
            self._find(
                self._size,
                f"log truncated: {self._size} records, but a signed checkpoint covers {beyond[-1]}",
            )
        if not self._checkpoints:
            self._find(None, "no checkpoint signed by the trusted key")
        return self.report

    def root(self) -> bytes:
        return merkle.root_from(self._size, _as_nodes(self._size, self._front))


def _as_nodes(size: int, front: dict[int, bytes]) -> dict[merkle.NodeKey, bytes]:
    return {(level, idx): front[level] for level, idx in merkle.frontier_keys(size)}
