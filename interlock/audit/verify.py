"""Verifying a log: records against signed checkpoints. Pure: the caller feeds the data.

`LogVerifier` recomputes the tree from the records in index order, checks every
checkpoint's signature under the trusted key, compares each checkpoint's root with the
recomputed one, and checks leaf hashes the store kept, when given them, to name the first
record that differs. It never trusts anything the log says about itself except through a
signature.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from interlock.audit import merkle
from interlock.audit.checkpoint import Checkpoint, CheckpointError, Verifier, open_checkpoint
from interlock.audit.cosignature import Quorum, witnessed_by


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
    signed: int = 0
    """Size of the latest signed checkpoint the records reach: records past it are the
    unsigned tail, which nothing but the host vouches for."""
    tail_age: float | None = None
    """Seconds from the first unsigned record's time to `now` (None: no tail)."""
    since: int | None = None
    """Size of the auditor's kept checkpoint the log was proved consistent with."""
    witnessed: int | None = None
    """Size of the latest checkpoint cosigned by the required quorum of witnesses."""
    witnesses: list[str] = field(default_factory=list)
    """The witnesses whose cosignatures on that checkpoint verify."""
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def unsigned(self) -> int:
        return self.records - self.signed

    @property
    def first_bad_index(self) -> int | None:
        indices = [f.index for f in self.findings if f.index is not None]
        return min(indices) if indices else None

    def proved(self) -> list[str]:
        """What a passing verification proved, one statement a line."""
        covered = f"records 0..{self.signed - 1}" if self.signed else "no records"
        lines = [f"signed: {covered} (checkpoint at size {self.signed})"]
        if self.tail_age is None:
            lines.append("unsigned tail: none")
        else:
            lines.append(
                f"unsigned tail: {self.unsigned} record(s) from index {self.signed}, "
                f"oldest {self.tail_age:.0f} s old"
            )
        if self.since is not None:
            lines.append(f"consistent with your checkpoint at size {self.since}")
        if self.witnessed is not None:
            lines.append(
                f"witnessed: checkpoint at size {self.witnessed} cosigned by "
                + ", ".join(self.witnesses)
            )
        return lines


CLOCK_SKEW_S = 300.0
"""How far ahead of the verifier's clock (or, for an export, of its newest record) the
first unsigned record may be dated: clocks of different hosts differ."""


def record_time(data: bytes) -> float | None:
    """The epoch time a canonical record states, or None if it states none readable."""
    try:
        stamp = json.loads(data)["time"]
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class LogVerifier:
    """Feed records in index order with `feed`, then call `finish`.

    `since` is a checkpoint the auditor kept from earlier: the log must still contain its
    tree as a prefix, else the host rolled back or forked the history that auditor saw."""

    def __init__(
        self,
        verifier: Verifier,
        notes: Iterable[str],
        origin: str | None = None,
        since: str | None = None,
        quorum: Quorum | None = None,
    ):
        self.report = Report()
        self.quorum = quorum
        self._checkpoints: dict[int, Checkpoint] = {}
        self._notes: dict[int, str] = {}
        for note in notes:
            cp = self._open(note, verifier, origin, "checkpoint")
            if cp is None:
                continue
            self._notes[cp.size] = note
            seen = self._checkpoints.get(cp.size)
            if seen is not None and seen.root != cp.root:
                self.find(None, f"two checkpoints sign different roots for size {cp.size}")
            self._checkpoints[cp.size] = cp
        self.kept = None if since is None else self._open(since, verifier, origin, "your")
        self.report.checkpoints = len(self._checkpoints)
        self._size = 0
        self._next = 0
        self._front: dict[int, bytes] = {}
        self._good_until = 0
        self._leaf_mismatch_reported = False
        self._stamps: dict[int, bytes] = {}
        self._last: bytes | None = None
        self._forked = False

    def _open(
        self, note: str, verifier: Verifier, origin: str | None, what: str
    ) -> Checkpoint | None:
        try:
            cp = open_checkpoint(note, verifier)
        except CheckpointError as exc:
            size = note.split("\n")[1] if note.count("\n") > 1 else "?"
            self.find(None, f"{what} checkpoint at size {size}: {exc}")
            return None
        if origin is not None and cp.origin != origin:
            self.find(
                None,
                f"{what} checkpoint at size {cp.size}: origin {cp.origin!r}, expected {origin!r}",
            )
            return None
        return cp

    def find(self, index: int | None, message: str) -> None:
        if len(self.report.findings) < 100:
            self.report.findings.append(Finding(index, message))

    @property
    def checkpoints(self) -> dict[int, Checkpoint]:
        return self._checkpoints

    @property
    def next_index(self) -> int:
        """The index after the last record fed."""
        return self._next

    def feed(
        self, index: int, data: bytes, stored_leaf: bytes | None = None
    ) -> list[tuple[int, int, bytes]]:
        """Check one record; return the tree nodes it completes (level, index, hash), or
        nothing once a gap stopped the tree from being recomputed."""
        if index < self._next:
            self.find(index, "appears twice or out of order")
            return []
        if index > self._next:
            self.gap(index)
        self._next = index + 1
        self._last = data
        if index in self._checkpoints or index == 0:
            self._stamps[index] = data
        if self._size != index:
            return []
        leaf = merkle.leaf_hash(data)
        if stored_leaf is not None and stored_leaf != leaf and not self._leaf_mismatch_reported:
            self._leaf_mismatch_reported = True
            self.find(
                index,
                "does not match the leaf hash stored for it (record changed, or records reordered)",
            )
        new, self._front = merkle.extend(self._size, self._front, [leaf])
        self._size += 1
        cp = self._checkpoints.get(self._size)
        if cp is not None:
            if self.root() != cp.root:
                self.find(
                    None,
                    f"records {self._good_until}..{self._size - 1} do not match the "
                    f"signed checkpoint at size {self._size} (changed, removed or "
                    "reordered)",
                )
            else:
                self._good_until = self._size
        if self.kept is not None and self.kept.size == self._size and self.root() != self.kept.root:
            self._forked = True
            self.find(
                None,
                f"fork: the log's first {self._size} records do not hash to the root of the "
                f"checkpoint you kept at size {self._size}: this is a different history "
                "from the one you saw",
            )
        return new

    def gap(self, upto: int) -> None:
        """Records from the next expected index up to `upto` are absent."""
        if upto > self._next:
            self.find(
                self._next,
                f"missing: records {self._next}..{upto - 1} absent ({upto - self._next} record(s))",
            )
            self._next = upto

    def finish(self, now: float | None = None, max_age: float | None = None) -> Report:
        """Close the report. With `max_age`, an unsigned tail whose first record is older
        than that (against `now`, default: the newest record's time) is a finding."""
        self.report.records = self._next
        beyond = sorted(s for s in self._checkpoints if s > self._next)
        if beyond:
            self.find(
                self._next,
                f"log truncated: {self._next} records, but a signed checkpoint covers {beyond[-1]}",
            )
        unchecked = sorted(s for s in self._checkpoints if self._size < s <= self._next)
        if unchecked:
            self.find(
                None,
                f"{len(unchecked)} checkpoint(s) from size {unchecked[0]} cannot be checked: "
                "records before them are missing",
            )
        if not self._checkpoints:
            self.find(None, "no checkpoint signed by the trusted key")
        self._check_kept()
        self._check_quorum()
        self.report.signed = max((s for s in self._checkpoints if s <= self._next), default=0)
        if self.report.unsigned and not beyond:
            self._check_tail(now, max_age)
        return self.report

    def _check_kept(self) -> None:
        kept = self.kept
        if kept is None:
            return
        latest = max(self._checkpoints, default=0)
        before = len(self.report.findings)
        ours = self._checkpoints.get(kept.size)
        if ours is not None and ours.root != kept.root:
            self.find(
                None,
                f"split view: the log signs a different root for size {kept.size} than the "
                "checkpoint you kept",
            )
        if kept.size > self._next:
            self.find(
                self._next,
                f"rolled back: {self._next} records, but the checkpoint you kept covers "
                f"{kept.size}",
            )
        elif latest < kept.size:
            self.find(
                None,
                f"rolled back: the log's latest signed checkpoint is at size {latest}, older "
                f"than the one you kept at {kept.size} (later checkpoints were removed)",
            )
        elif kept.size > self._size:
            self.find(None, f"cannot prove consistency with your checkpoint at size {kept.size}")
        if not self._forked and len(self.report.findings) == before:
            self.report.since = kept.size

    def _check_quorum(self) -> None:
        """The latest checkpoint must carry the quorum's cosignatures: without them only
        the host vouches that it is the history every other client is shown."""
        q = self.quorum
        if q is None or not self._notes:
            return
        latest = max(self._notes)
        names, problems = witnessed_by(self._notes[latest], q.keys)
        for problem in problems:
            self.find(None, f"checkpoint at size {latest}: {problem}")
        if len(names) < q.k:
            self.find(
                None,
                f"not witnessed: the latest checkpoint (size {latest}) is cosigned by "
                f"{len(names)} of the {len(q.keys)} witnesses you trust, {q.k} required "
                "(no outside party vouches that others see this history: a split view or "
                "a rewritten log looks like this)",
            )
            return
        self.report.witnessed, self.report.witnesses = latest, names

    def _check_tail(self, now: float | None, max_age: float | None) -> None:
        signed = self.report.signed
        first = self._stamps.get(signed)
        first_time = record_time(first) if first is not None else None
        if now is None and self._last is not None:
            now = record_time(self._last)
        if first_time is None or now is None:
            self.find(signed, "unsigned tail: the first unsigned record states no time")
            return
        if first_time > now + CLOCK_SKEW_S:
            # Its age would read as 0 for as long as the date is ahead: a host that
            # rewrote the tail (its checkpoints deleted) kept it "young" that way.
            self.find(
                signed,
                f"unsigned tail: the first unsigned record is dated "
                f"{first_time - now:.0f} s in the future: its age cannot be measured",
            )
            return
        age = max(0.0, now - first_time)
        self.report.tail_age = age
        # A bound of 0 (checkpoints off: the log signs when it stops) allows no tail at all.
        if max_age is not None and (age > max_age or max_age == 0):
            self.find(
                signed,
                f"unsigned tail: {self.report.unsigned} record(s) after the latest signed "
                f"checkpoint (size {signed}), the oldest {age:.0f} s old, past the "
                f"{max_age:g} s bound: nothing signed covers them (checkpoints removed, "
                "or the log stopped signing)",
            )

    def root(self) -> bytes:
        return merkle.root_from(self._size, _as_nodes(self._size, self._front))


def _as_nodes(size: int, front: dict[int, bytes]) -> dict[merkle.NodeKey, bytes]:
    return {(level, idx): front[level] for level, idx in merkle.frontier_keys(size)}
