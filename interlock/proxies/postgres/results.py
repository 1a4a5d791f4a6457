"""Which result rows belong to which statement, so masking hits the right columns.

The server answers messages strictly in order. `ResultTracker` keeps one plan per message
that can produce rows (each statement of a simple Query, each Execute), and the Sync that
closes an extended-protocol batch, and consumes them as the answers stream by. Sans-IO:
the driver calls `sent_*` when it forwards a message and `row_mask` / `completed` for what
comes back.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from interlock.proxies.postgres import messages as m
from interlock.proxies.postgres.codec import decode_data_row

Mask = frozenset[int]
"""Output column positions whose values are replaced (by NULL)."""
NO_MASK: Mask = frozenset()


@dataclass(frozen=True)
class Watch:
    """Labelled output columns of an allowed statement: their values are remembered (as
    fingerprints, by the server) so a later egress carrying them is recognised."""

    decision_id: str
    columns: tuple[tuple[int, frozenset[str]], ...]


MAX_SEEN = 10_000
"""Labelled values collected between two ReadyForQuery messages, at most."""


@dataclass
class _Query:
    masks: list[Mask]
    index: int = 0
    failed: bool = False
    watches: list[Watch | None] = field(default_factory=list)


@dataclass
class _Execute:
    mask: Mask
    watch: Watch | None = None


@dataclass
class _Sync:
    pass


@dataclass
class ResultTracker:
    _pending: deque[_Query | _Execute | _Sync] = field(default_factory=deque)
    seen: list[tuple[str, frozenset[str], bytes]] = field(default_factory=list)
    """(decision id, labels, value) of labelled values returned since the last take."""

    def sent_query(self, masks: list[Mask], watches: list[Watch | None] | None = None) -> None:
        self._pending.append(_Query(masks or [NO_MASK], watches=watches or []))

    def sent_execute(self, mask: Mask, watch: Watch | None = None) -> None:
        self._pending.append(_Execute(mask, watch))

    def sent_sync(self) -> None:
        self._pending.append(_Sync())

    def _current(self) -> tuple[Mask, Watch | None]:
        for item in self._pending:
            if isinstance(item, _Query) and item.failed:
                continue
            if isinstance(item, _Query):
                watch = item.watches[item.index] if item.index < len(item.watches) else None
                return item.masks[min(item.index, len(item.masks) - 1)], watch
            if isinstance(item, _Execute):
                return item.mask, item.watch
            if isinstance(item, _Sync):
                return NO_MASK, None
        return NO_MASK, None

    def _current_mask(self) -> Mask:
        return self._current()[0]

    def row(self, msg: m.Raw) -> m.Raw:
        """A DataRow with masked columns set to NULL; labelled values it carries out are
        collected in `seen`."""
        mask, watch = self._current()
        if not mask and watch is None:
            return msg
        row = decode_data_row(msg.body)
        if watch is not None and len(self.seen) < MAX_SEEN:
            for i, labels in watch.columns:
                value = row.values[i] if i < len(row.values) else None
                if value is not None and i not in mask:
                    self.seen.append((watch.decision_id, labels, bytes(value)))
        if not mask:
            return msg
        values = tuple(None if i in mask else v for i, v in enumerate(row.values))
        return m.Raw(b"D", m.DataRow(values).encode()[5:])

    def take_seen(self) -> list[tuple[str, frozenset[str], bytes]]:
        seen, self.seen = self.seen, []
        return seen

    def copy_data(self, msg: m.Raw) -> m.Raw:
        """A COPY TO STDOUT text line with masked fields set to \\N."""
        mask = self._current_mask()
        if not mask:
            return msg
        line = msg.body
        end = b"\n" if line.endswith(b"\n") else b""
        fields = line[: len(line) - len(end)].split(b"\t")
        masked = b"\t".join(b"\\N" if i in mask else f for i, f in enumerate(fields))
        return m.Raw(b"d", masked + end)

    def completed(self) -> None:
        """CommandComplete, EmptyQueryResponse or PortalSuspended: one statement done."""
        for item in self._pending:
            if isinstance(item, _Query):
                if item.failed:
                    continue
                item.index += 1
                return
            if isinstance(item, _Execute):
                self._pending.remove(item)
                return
            return

    def failed(self) -> None:
        """ErrorResponse: the running statement (and, in a Query, the rest of it) is over;
        a Query still waits for its ReadyForQuery."""
        for item in self._pending:
            if isinstance(item, _Query):
                if item.failed:
                    continue
                item.failed = True
                return
            if isinstance(item, _Execute):
                self._pending.remove(item)
            return

    def ready(self) -> None:
        """ReadyForQuery closes a Query or a Sync batch; unreached Executes are dropped."""
        while self._pending:
            item = self._pending.popleft()
            if isinstance(item, (_Query, _Sync)):
                return
