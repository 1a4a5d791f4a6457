"""Which result rows belong to which statement, and which of their columns to mask.

Masking is decided twice. The parse (interlock/classify/sql.py) names labels before the
statement runs, so the policy can deny or hold it; that gives each statement a `MaskPlan`.
The server then says, in every RowDescription, which table column each result column
comes from (table OID and column number, 0 when computed), and the plan is resolved
against that: a column that comes from a labelled table column is masked by that fact,
whatever the SQL looked like; a computed column is masked when the parse attributes
masked labels to it, or cannot attribute its inputs at all while the statement read
masked labels. Unknown lineage counts as labelled, never as clean.

The server answers messages strictly in order. `ResultTracker` keeps one entry per
message that gets an answer the proxy cares about (each simple Query, each Describe and
Execute, each Sync, and queries the proxy sends itself) and consumes them as the answers
stream by. In the extended protocol rows carry no RowDescription; a statement is resolved
by the client's own Describe, and where the client sends none, the proxy sends one and
swallows its answer. Sans-IO: the driver calls `sent_*` for what it forwards and
`backend` for each message that comes back.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Set
from dataclasses import dataclass, field

from interlock.proxies.postgres import messages as m
from interlock.proxies.postgres.codec import (
    ProtocolError,
    decode_data_row,
    decode_row_description,
)
from interlock.proxies.postgres.copyformat import CopyFormat, CopyMasker

log = logging.getLogger(__name__)

Mask = frozenset[int]
"""Output column positions whose values are replaced (by NULL)."""
NO_MASK: Mask = frozenset()
Origins = Mapping[tuple[int, int], frozenset[str]]
"""(table OID, column number) -> labels of that table column, from the database."""
MAX_SEEN = 10_000
"""Labelled values collected between two ReadyForQuery messages, at most."""


@dataclass(frozen=True, slots=True)
class MaskPlan:
    """What the decision says about one statement's results, before the server's answer."""

    hidden: frozenset[str] = frozenset()
    """Labels the decision masks for this agent."""
    decided: frozenset[str] = frozenset()
    """Labels the parse found the statement reads (what the decision was made on)."""
    parsed: tuple[frozenset[str], ...] | None = None
    """Labels per output position by the parse; None (or a short tuple) where unknown."""
    copy: CopyFormat | None = None
    """The row format when the statement is a COPY TO STDOUT whose options were read."""

    @property
    def reads_masked(self) -> bool:
        """The statement reads labels this agent may not see."""
        return bool(self.decided & self.hidden)

    def resolve(
        self, fields: tuple[m.Field, ...], origins: Origins, known: Set[int] = frozenset()
    ) -> Mask:
        """Positions to mask, given the server's description of the result. `known` are
        the relations whose every labelled column is in `origins`: a column the server
        says is exactly one of theirs carries that column's labels and nothing else."""
        unknown_is_hidden = bool(self.decided & self.hidden)
        parsed = self.parsed or ()
        out: set[int] = set()
        for i, f in enumerate(fields):
            if f.table_oid:
                if f.column == 0:
                    # A whole row (`SELECT t FROM payroll t`): the server names the
                    # table with column 0, and the value holds every column of it.
                    origin: frozenset[str] | None = _whole_row(origins, f.table_oid)
                else:
                    origin = origins.get((f.table_oid, f.column))
                if origin is not None and (origin & self.hidden or origin - self.decided):
                    # Masked labels, or labels the decision never saw (the parse missed
                    # them): hidden either way.
                    out.add(i)
                    continue
                if f.table_oid in known:
                    continue  # the value is that column's, whatever the parse guessed
            if i < len(parsed):
                if parsed[i] & self.hidden:
                    out.add(i)
            elif unknown_is_hidden:
                # Computed, or a relation whose labels were not read (a new one, or a
                # system view such as pg_stats that holds other columns' values).
                out.add(i)
        return frozenset(out)

    def resolve_copy(self, columns: int) -> Mask:
        """Positions to mask in COPY TO STDOUT (which has no RowDescription): the parse's
        positions, or every column when they are unknown and masked labels were read."""
        if self.parsed is not None and len(self.parsed) == columns:
            return frozenset(i for i, labels in enumerate(self.parsed) if labels & self.hidden)
        return frozenset(range(columns)) if self.decided & self.hidden else NO_MASK


def _whole_row(origins: Origins, table_oid: int) -> frozenset[str]:
    """Labels of every column of one relation: what a whole-row value of it carries."""
    return frozenset().union(*(labels for (oid, _), labels in origins.items() if oid == table_oid))


ORIGINS_ONLY = MaskPlan()
"""For results no decision planned for: labelled table columns are still masked."""


@dataclass(frozen=True)
class Watch:
    """Labelled output columns of an allowed statement: their values are remembered (as
    fingerprints, by the server) so a later egress carrying them is recognised."""

    decision_id: str
    columns: tuple[tuple[int, frozenset[str]], ...]


@dataclass(eq=False)
class Prepared:
    """A statement (or portal) of the extended protocol: its plan, and its mask once the
    server has described it."""

    plan: MaskPlan
    watch: Watch | None = None
    mask: Mask | None = None
    describing: bool = False
    """A Describe of it is on its way; its answer resolves `mask` before any Execute."""
    described: tuple[bytes, Origins, Set[int]] | None = None
    """The RowDescription `mask` was resolved from, and the catalog it was resolved
    against: the same answer again (drivers describe every execution) changes nothing."""


@dataclass(eq=False)
class _Query:
    plans: list[MaskPlan]
    watches: list[Watch | None]
    index: int = 0
    mask: Mask = NO_MASK
    copy: CopyMasker | None = None


@dataclass(eq=False)
class _Describe:
    target: Prepared | None
    injected: bool


@dataclass(eq=False)
class _Execute:
    target: Prepared
    copy: CopyMasker | None = None


@dataclass(eq=False)
class _Sync:
    injected: bool = False
    """A Sync of the proxy's own: its ReadyForQuery is not passed on."""


@dataclass(eq=False)
class _Injected:
    """A query the proxy sent on its own: every answer to it is swallowed."""

    sql: str
    failed: str | None = None


_Item = _Query | _Describe | _Execute | _Sync | _Injected


@dataclass
class ResultTracker:
    origins: Origins = field(default_factory=dict)
    relations: Set[int] = frozenset()
    """Relations whose labelled columns are all in `origins` (see `MaskPlan.resolve`)."""
    _pending: deque[_Item] = field(default_factory=deque)
    seen: list[tuple[str, frozenset[str], bytes]] = field(default_factory=list)
    """(decision id, labels, value) of labelled values returned since the last take."""
    injected_errors: list[str] = field(default_factory=list)
    """Why queries the proxy sent itself failed (the driver logs and retries them)."""
    _injected_syncs: int = 0
    """Syncs of the proxy's own pending: until none is, a ReadyForQuery needs no look
    at what it ends."""
    _last_result: tuple[MaskPlan, bytes, Origins, Set[int], Mask] | None = None
    """The last simple query's RowDescription, what it was resolved with and to: the same
    statement again (a client repeating it) is not decoded again."""

    @property
    def idle(self) -> bool:
        """Everything sent has been answered, up to its ReadyForQuery."""
        return not self._pending

    # --- what the driver sends --------------------------------------------------------

    def sent_query(self, plans: list[MaskPlan], watches: list[Watch | None] | None = None) -> None:
        self._pending.append(_Query(plans or [ORIGINS_ONLY], watches or []))

    def sent_describe(self, target: Prepared | None, injected: bool = False) -> None:
        if target is not None:
            target.describing = True
        self._pending.append(_Describe(target, injected))

    def sent_execute(self, target: Prepared) -> None:
        self._pending.append(_Execute(target))

    def sent_sync(self, injected: bool = False) -> None:
        self._pending.append(_Sync(injected))
        self._injected_syncs += injected

    def sent_injected(self, sql: str) -> None:
        self._pending.append(_Injected(sql))

    # --- what comes back --------------------------------------------------------------

    def passes(self, kind: int) -> bool:
        """Whether a server message of type `kind` goes to the client unchanged with its
        body unread, the tracker's state moved as `backend` would move it. False: decode
        it and call `backend` (descriptions, errors, ReadyForQuery, rows that are masked
        or watched, anything answering a query of the proxy's own)."""
        front = self._pending[0] if self._pending else None
        if kind in _READ or isinstance(front, _Injected):
            return False
        if kind == _READY:
            if self._injected_syncs and self._closes_injected():
                return False
            self._ready()
            return True
        if kind == _DATA_ROW:
            mask, watch = self._mask_of(front)
            return not mask and watch is None
        if kind == _COPY_DATA:
            return not (isinstance(front, (_Query, _Execute)) and front.copy is not None)
        if kind in _COMPLETES:
            self._completed(front)
        return True

    def described(self, body: bytes) -> bool:
        """Whether the RowDescription with this body answers a simple query or a client's
        Describe (which is then done): it goes to the client unchanged, its mask resolved,
        or kept when the statement was last described with the same bytes against the
        same catalog (then it is not decoded). False: call `backend` with it decoded."""
        front = self._pending[0] if self._pending else None
        if isinstance(front, _Query):
            current = front.plans[min(front.index, len(front.plans) - 1)]
            front.mask = self._query_mask(current, body)
            return True
        if not isinstance(front, _Describe) or front.injected or front.target is None:
            return False
        target = front.target
        known = target.described
        if known != (body, self.origins, self.relations):
            fields = decode_row_description(body).fields
            target.mask = target.plan.resolve(fields, self.origins, self.relations)
            target.described = (body, self.origins, self.relations)
        self._pending.popleft()
        target.describing = False
        return True

    def _query_mask(self, plan: MaskPlan, body: bytes) -> Mask:
        """`plan` resolved against the RowDescription `body` (what `backend` does for a
        simple query's), reused while plan, body and catalog are the last ones."""
        last = self._last_result
        if (
            last is not None
            and last[2] is self.origins
            and last[3] is self.relations
            and last[1] == body
            and last[0] == plan
        ):
            return last[4]
        mask = plan.resolve(decode_row_description(body).fields, self.origins, self.relations)
        self._last_result = (plan, body, self.origins, self.relations, mask)
        return mask

    def backend(self, msg: m.Message) -> m.Message | None:
        """The message to pass to the client (masked where needed), or None to swallow
        it (an answer to something the proxy sent on its own)."""
        front = self._pending[0] if self._pending else None
        if isinstance(front, _Injected):
            return self._injected(front, msg)
        if isinstance(msg, m.Raw):
            kind = msg.kind
            if kind == b"D":
                return self._row(front, msg)
            if kind == b"d":
                return self._copy_data(front, msg)
            if kind == b"H":
                self._copy_out(front, msg)
            elif kind in (b"C", b"I", b"s"):
                self._completed(front)
            elif kind == b"n" and isinstance(front, _Describe):
                self._pending.popleft()
                if front.target is not None:
                    front.target.mask = NO_MASK
                    front.target.describing = False
                return None if front.injected else msg
            elif kind == b"t" and isinstance(front, _Describe) and front.injected:
                return None
            return msg
        if isinstance(msg, m.RowDescription):
            if isinstance(front, _Describe):
                self._pending.popleft()
                if front.target is not None:
                    front.target.mask = front.target.plan.resolve(
                        msg.fields, self.origins, self.relations
                    )
                    front.target.describing = False
                return None if front.injected else msg
            if isinstance(front, _Query):
                current = front.plans[min(front.index, len(front.plans) - 1)]
                front.mask = current.resolve(msg.fields, self.origins, self.relations)
            return msg
        if isinstance(msg, m.CommandComplete):
            self._completed(front)
        elif isinstance(msg, m.ErrorResponse):
            failing = self._plan_of(front)
            self._failed(front)
            if failing is not None and failing.reads_masked:
                return _withheld(msg)
        elif isinstance(msg, m.NoticeResponse):
            noticing = self._plan_of(front)
            if noticing is not None and noticing.reads_masked:
                return m.NoticeResponse(_withheld(msg).fields)
        elif isinstance(msg, m.ReadyForQuery):
            ended = self._ready()
            if isinstance(ended, _Sync) and ended.injected:
                self._injected_syncs -= 1
                return None
        return msg

    @staticmethod
    def _plan_of(front: _Item | None) -> MaskPlan | None:
        if isinstance(front, _Query):
            return front.plans[min(front.index, len(front.plans) - 1)]
        if isinstance(front, _Execute):
            return front.target.plan
        return None

    def _injected(self, front: _Injected, msg: m.Message) -> m.Message | None:
        if isinstance(msg, m.ErrorResponse):
            front.failed = msg.message
        elif isinstance(msg, m.ReadyForQuery):
            self._pending.popleft()
            if front.failed is not None:
                self.injected_errors.append(f"{front.sql}: {front.failed}")
        elif isinstance(msg, m.Raw) and msg.kind in (b"D", b"d", b"H"):
            raise ProtocolError("the server sent rows for a query of the proxy's own")
        return None

    def _mask_of(self, front: _Item | None) -> tuple[Mask, Watch | None]:
        if isinstance(front, _Query):
            watch = front.watches[front.index] if front.index < len(front.watches) else None
            return front.mask, watch
        if isinstance(front, _Execute):
            target = front.target
            if target.mask is None:
                # Never described: no position is known to be clean.
                return _ALL, target.watch
            return target.mask, target.watch
        return NO_MASK, None

    def _row(self, front: _Item | None, msg: m.Raw) -> m.Raw:
        """A DataRow with masked columns set to NULL; labelled values it carries out are
        collected in `seen`."""
        mask, watch = self._mask_of(front)
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

    def _copy_out(self, front: _Item | None, msg: m.Raw) -> None:
        """CopyOutResponse: the stream's format and width; the masker for its rows."""
        if len(msg.body) < 3:
            raise ProtocolError("CopyOutResponse too short")
        binary = msg.body[0] == 1
        columns = int.from_bytes(msg.body[1:3], "big")
        if isinstance(front, _Query):
            plan = front.plans[min(front.index, len(front.plans) - 1)]
        elif isinstance(front, _Execute):
            plan = front.target.plan
        else:
            return
        mask = plan.resolve_copy(columns)
        if not mask:
            masker = None
        elif plan.copy is None:
            # Options not understood: no field boundary is known, so no field is shown.
            masker = CopyMasker(CopyFormat(), binary, columns, _ALL)
        else:
            masker = CopyMasker(plan.copy, binary, columns, mask)
        front.copy = masker

    def _copy_data(self, front: _Item | None, msg: m.Raw) -> m.Raw:
        masker = front.copy if isinstance(front, (_Query, _Execute)) else None
        if masker is None:
            return msg
        return m.Raw(b"d", masker.data(msg.body))

    def take_seen(self) -> list[tuple[str, frozenset[str], bytes]]:
        seen, self.seen = self.seen, []
        return seen

    def _completed(self, front: _Item | None) -> None:
        """CommandComplete, EmptyQueryResponse or PortalSuspended: one statement done."""
        if isinstance(front, _Query):
            front.index += 1
            front.mask = NO_MASK
            front.copy = None
        elif isinstance(front, _Execute):
            self._pending.popleft()

    def _failed(self, front: _Item | None) -> None:
        """ErrorResponse: in a Query the rest of it is skipped (ReadyForQuery closes it);
        in the extended protocol the server discards everything up to Sync, so what is
        pending before it gets no answer and `_ready` drops it."""
        if isinstance(front, _Query):
            front.mask = NO_MASK
            front.copy = None
        elif isinstance(front, (_Execute, _Describe)):
            self._pending.popleft()
            if isinstance(front, _Describe) and front.target is not None:
                front.target.describing = False

    def _ready(self) -> _Item | None:
        """ReadyForQuery closes a Query or a Sync batch (returned); unanswered items
        before it go."""
        while self._pending:
            item = self._pending.popleft()
            if isinstance(item, _Describe) and item.target is not None:
                item.target.describing = False
            if isinstance(item, (_Query, _Sync)):
                return item
        return None

    def _closes_injected(self) -> bool:
        """Whether the next ReadyForQuery ends a Sync of the proxy's own."""
        for item in self._pending:
            if isinstance(item, (_Query, _Sync)):
                return isinstance(item, _Sync) and item.injected
        return False


_READ = frozenset(b"TENntHRK")
"""Server messages `backend` reads: RowDescription, ErrorResponse, NoticeResponse,
NoData, ParameterDescription, CopyOutResponse, and the login's."""
_DATA_ROW, _COPY_DATA, _READY = ord("D"), ord("d"), ord("Z")
_COMPLETES = frozenset(b"CIs")
"""CommandComplete, EmptyQueryResponse, PortalSuspended: one statement done."""
_KEPT_FIELDS = frozenset("SVC")
"""Severity and SQLSTATE: what a client needs to handle an error, and no data."""


def _withheld(msg: m.ErrorResponse | m.NoticeResponse) -> m.ErrorResponse:
    """The error (or notice) of a statement that reads masked data, without its text:
    servers quote values in messages (`invalid input syntax for type integer: "ann"`),
    which would route labelled values around masking."""
    fields = {k: v for k, v in msg.fields.items() if k in _KEPT_FIELDS}
    code = fields.get("C", "")
    fields["M"] = (
        f"interlock: the server's message is withheld because the statement reads masked "
        f"data (SQLSTATE {code})"
    )
    return m.ErrorResponse(fields)


class _AllColumns(frozenset[int]):
    """Every position, whatever the row's width (a result whose lineage is unknown)."""

    def __contains__(self, item: object) -> bool:
        return True

    def __bool__(self) -> bool:
        return True


_ALL: Mask = _AllColumns()
