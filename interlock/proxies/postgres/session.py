"""The client-to-server half of a session without I/O: client bytes in, upstream bytes
out, and on the way the decisions they need, asked for rather than fetched.

`Session.receive` is a generator. It yields what only the outside can answer (`Decide`
an action, `Hold` one for a human, the agent's posture now, `Refuse` and record), is sent
each answer, and returns the bytes to write upstream for one read and whether the client
ended the session. The asyncio driver (`server.py`) answers with the PDP; tests answer
with plain values, on bytes alone (`tests/proxies/postgres/test_session.py`). Everything
a decision changes lives here: the statements and portals and the decisions they rest
on, the cursors and their mask plans, the denial markers, the read-only wall. It is the
counterpart of `relay.Downstream`, which does the same for what the server sends.

Enforcement keeps the server in charge of protocol state. A denied statement is not
dropped: it is replaced by one that fails at parse analysis on the server
(`SELECT 1 FROM pg_catalog.interlock_denied_<nonce>_<n>`, a relation no one can create),
and `Downstream` rewrites the server's error into the denial on its way back. So the
client sees exactly what PostgreSQL does after any error, in order with the responses to
the messages around it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, TypeVar

from interlock.approvals.request import Verdict
from interlock.classify.sql import SqlClassification, SqlStatement
from interlock.core.context import Posture
from interlock.core.enforcement import posture_veto
from interlock.core.engine import CompiledPolicy
from interlock.core.model import Action, Agent, Decision, Effect, Obligation
from interlock.core.modes import Mode
from interlock.errors import StateError
from interlock.proxies.postgres import messages as m
from interlock.proxies.postgres.codec import FrontendReader, ProtocolError, bind_names
from interlock.proxies.postgres.codec import decode_frontend as decode
from interlock.proxies.postgres.copyformat import copy_format
from interlock.proxies.postgres.relay import Downstream, Pieces
from interlock.proxies.postgres.results import (
    ORIGINS_ONLY,
    MaskPlan,
    Prepared,
    ResultTracker,
    Watch,
)

_T = TypeVar("_T")

READ_ONLY_SESSION = "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"
READ_ONLY_TRANSACTION = "SET TRANSACTION READ ONLY"
READ_WRITE_SESSION = "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"
"""The database's own wall behind a read_only posture (and its removal on restore)."""
_BIND, _SYNC, _TERMINATE = ord("B"), ord("S"), ord("X")
_EXECUTE = ord("E")
_EXTENDED = (m.Parse, m.Bind, m.Describe, m.Execute, m.Close, m.Flush)
"""They open a batch that Sync ends."""
_COPY_FROM_STDIN = re.compile(r"\bfrom\s+stdin\b", re.IGNORECASE)
_WITH_HOLD = re.compile(r"(?<!out)\s+hold\b", re.IGNORECASE)
MAX_NAME_BYTES = 63
"""PostgreSQL keys prepared statements and portals on their first NAMEDATALEN-1 bytes:
two longer names that share them are one name to the server. Longer names are refused."""


@dataclass(frozen=True, slots=True)
class Decide:
    """Decide `action` (answered with its `Decision`)."""

    action: Action


@dataclass(frozen=True, slots=True)
class Hold:
    """Hold `sql` for a person's answer (answered with the `Verdict`). The driver ends the
    session instead when the client goes away meanwhile."""

    decision: Decision
    action: Action
    sql: str


@dataclass(frozen=True, slots=True)
class PostureNow:
    """The agent's posture, read after the message arrived (answered with a `Posture`,
    or `StateError` thrown in when the store cannot say)."""

    agent_id: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """Deny `action` without the policy and record it (answered with the `Decision`)."""

    action: Action
    reason: str


@dataclass(frozen=True, slots=True)
class Settle:
    """Send `flush` upstream, then wait until the server has finished batch number
    `batch` (its ReadyForQuery has reached `Downstream`; answered with None). Asked when a
    statement's identity on the server depends on how an earlier batch ended."""

    batch: int
    flush: bytes


@dataclass(frozen=True, slots=True)
class CopyAnswered:
    """Send `flush` upstream, then wait until the server has answered the COPY FROM
    STDIN sent last: it started copying (CopyInResponse), failed, or skipped it (an
    error earlier in its batch). Answered with None."""

    flush: bytes


Need = Decide | Hold | PostureNow | Refuse | Settle | CopyAnswered
Steps = Generator[Need, Any, _T]
"""What `Session.receive` and its parts yield, are sent, and return."""
Stamp = Callable[[Action], tuple[CompiledPolicy, Mode]]
"""The policy in force and the mode `action` is decided in: the PDP's memory, no I/O."""
Classify = Callable[[str], SqlClassification]


async def drive[T](steps: Steps[T], answer: Callable[[Need], Awaitable[object]]) -> T:
    """Run `steps` to their end, awaiting `answer` for each need (a `StateError` it
    raises is thrown in: the core decides what a store that cannot answer means)."""
    try:
        need = next(steps)
        while True:
            try:
                got = await answer(need)
            except StateError as exc:
                need = steps.throw(exc)
            else:
                need = steps.send(got)
    except StopIteration as done:
        result: T = done.value
        return result
    finally:
        steps.close()


@dataclass(slots=True)
class Portal:
    """A portal as it was bound: the server runs what it was bound to, even if its
    statement's name is parsed again before the Execute."""

    statement: str
    prepared: Prepared
    """Its statement's results (the mask plan, the description)."""
    decided: Decided | None
    """Its statement's decision; None: not decided by interlock, so it runs nothing."""
    batch: int
    """The batch it was bound in: a transaction that ends after it drops it."""
    approved: bool = False
    """Its run of a statement held for approval was approved (more rows of the same
    run, after PortalSuspended, need no new answer)."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """A SQL cursor declared through the proxy: the plan its FETCHes get."""

    plan: MaskPlan
    hold: bool
    """Declared WITH HOLD: it outlives its transaction."""
    batch: int
    """The batch its DECLARE was sent in: without HOLD, a transaction that ends after it
    drops it."""


@dataclass(frozen=True, slots=True)
class Decided:
    """A prepared statement's decision and what it rested on. A decision made at Parse
    must not outlive them: a statement let through in shadow mode must stop once the
    agent is enforced, one a reloaded policy denies must stop, and one whose masks the
    new decision changes cannot run on the plan made for the old ones."""

    action: Action
    mode: Mode | None
    """The mode it was decided in; None after a refusal at Execute (decide each time)."""
    policy: CompiledPolicy
    """The compiled policy it was decided under (compared by identity)."""
    obligations: tuple[Obligation, ...]
    held: str | None = None
    """The SQL text a person approved, when the decision was to hold it: the approval is
    for one run. Its first Bind and Execute use it; every later Bind of the statement
    (other values for its parameters) is held again."""


class Session:
    """One client's session after login, without sockets: what each client read becomes
    upstream, and the state the decisions left behind."""

    def __init__(
        self,
        agent: Agent,
        database: str,
        downstream: Downstream,
        classify: Classify,
        stamp: Stamp,
        *,
        max_message: int,
        read_only: bool = False,
        nonce: str | None = None,
    ) -> None:
        self.agent = agent
        self.database = database
        self.downstream = downstream
        """The server-to-client half, with the result tracker and the denials in flight."""
        self.classify = classify
        self.stamp = stamp
        self.frontend = FrontendReader(max_message)
        self.frontend.in_startup = False
        self.nonce = nonce or secrets.token_hex(8)
        """In every denial marker: a client cannot name a marker it has not seen."""
        self.seq = 0
        self.statements: dict[str, Prepared] = {}
        self.actions: dict[str, Decided] = {}
        """How each prepared statement was decided: Execute re-checks posture, and
        decides again when what the decision rested on has changed since Parse."""
        self.portals: dict[str, Portal] = {}
        """The portals bound through interlock that the server may still hold."""
        self.named: set[str] = set()
        """Statement names the server may hold: every named Parse forwarded, every SQL
        PREPARE. The server refuses to parse such a name again and keeps the old
        statement, so the proxy refuses it too instead of taking the new text for what
        the name will run."""
        self.sent_batches = 0
        """Messages sent upstream that end with a ReadyForQuery (a Query, a Sync): the
        number of the batch the next message belongs to, less one (`Downstream.readies`
        counts the same batches as they end)."""
        self.in_batch = False
        """Whether extended-protocol messages were sent since the last Sync or Query. In
        such a batch an error makes the server skip everything up to Sync, a Query
        included, which then gets no ReadyForQuery: a Query (the client's, or the
        proxy's own) goes upstream only after a Sync of the proxy's own."""
        self._unnamed: int | None = None
        """The batch of the last unnamed Parse forwarded, until it is known to have taken
        effect: if its batch failed the server may hold the unnamed statement before it,
        or none."""
        self.cursors: dict[str, Cursor] = {}
        """SQL cursors declared through the proxy, with the plan their rows need."""
        self.copy_from: tuple[int, int, int] | None = None
        """While a COPY FROM STDIN the proxy sent may still be taking the client's data:
        the server's counts of CopyInResponse and of errors before it, and its batch.
        During COPY the server ignores Sync and Flush (no ReadyForQuery), and waits for
        data, so nothing may wait on it."""
        self.copy_statements: set[str] = set()
        """Prepared statements that are a COPY FROM STDIN (their Execute starts one)."""
        self._copy_in = False
        """Whether the statement `_checked` last let through holds a COPY FROM STDIN."""
        self.spent: set[str] = set()
        """Statements held for approval whose approval a run has used."""
        self.read_only = read_only
        """Whether the upstream session should refuse writes itself (read_only posture)."""
        self.read_only_applied = False
        """Whether it does, as far as the proxy has told it."""

    @property
    def results(self) -> ResultTracker:
        return self.downstream.results

    @property
    def status(self) -> str:
        return self.downstream.status

    def denial_sql(self, reason: str) -> str:
        """A statement that fails on the server, its error rewritten into `reason`."""
        self.seq += 1
        marker = f"interlock_denied_{self.nonce}_{self.seq}"
        self.downstream.denials[marker] = reason
        return f"SELECT 1 FROM pg_catalog.{marker}"  # noqa: S608 (hex nonce and a counter)

    # --- what the server sends ------------------------------------------------------

    def from_server(self, data: bytes) -> tuple[bytes, list[str]]:
        """The bytes for the client, and why the read-only wall failed, if it did (it is
        then not in place, and is tried again before the client's next message)."""
        out = self.downstream.receive(data)
        if self._unnamed is not None and self.downstream.readies >= self._unnamed:
            self._settle_unnamed()
        results = self.downstream.results
        failed: list[str] = []
        if results.injected_errors:
            failed = list(results.injected_errors)
            results.injected_errors.clear()
            self.read_only_applied = False
        return out, failed

    # --- what the client sends ------------------------------------------------------

    def receive(self, data: bytes) -> Steps[tuple[bytes, bool]]:
        """What to send upstream for one read from the client, and whether it ended with
        Terminate. Messages the decisions left alone go as the byte ranges they arrived
        in, one write for the whole read."""
        frontend = self.frontend
        frontend.feed(data)
        buf = frontend.data
        out = Pieces(buf)
        if self.read_only != self.read_only_applied:
            out.add(self.wall())
        while (frame := frontend.next_frame()) is not None:
            kind, start, end = frame
            if kind == _BIND:
                # Only its names matter: its statement was decided at Parse.
                self.in_batch = True
                portal, statement = bind_names(buf, start + 5, end)
                if too_long(portal) or too_long(statement):
                    out.add(self.refused(name_too_long(portal, statement)))
                    continue
                if statement == "" and self._unsettled():
                    if self.copy_from is None:
                        yield from self._settle(out.take())
                    else:
                        self._settle_unnamed()  # no waiting during COPY: undecided
                self.bound(portal, statement)
                self.cursors.pop(portal, None)
                out.forward(start, end)
                continue
            if kind == _SYNC:
                if self._copy_unanswered():
                    yield from self._copy_answered(out.take())
                elif self.copy_from is not None:
                    yield from self._copy_answered(b"")
                if self._copying():
                    out.forward(start, end)  # ignored by the server during COPY
                    continue
                self.results.sent_sync()
                self.sent_batches += 1
                self.in_batch = False
                out.forward(start, end)
                continue
            msg = decode(bytes((kind,)), bytes(buf[start + 5 : end]))
            if kind == _TERMINATE:
                out.forward(start, end)
                return out.take(), True
            if kind == _EXECUTE and isinstance(msg, m.Execute) and self._waits(msg.portal):
                # Sent ahead, so the server can finish what the wait is for.
                yield from self._settle_portal(msg.portal, out.take())
            replaced = yield from self.enforce(msg)
            if replaced is None:
                out.forward(start, end)
            else:
                out.add(replaced)
        return out.take(), False

    def wall(self) -> bytes:
        """What makes the upstream session match the posture now (b"" when nothing is
        to be done yet, or nothing at all: it waits for the end of an open batch too)."""
        if self.in_batch:
            return b""
        return self._wall() if self.read_only else self._unwall()

    def end_batch(self) -> bytes:
        """A Sync of the proxy's own, ending the client's open batch before a Query (its
        ReadyForQuery is not passed on). Without it, a Query after an error in the batch
        would be skipped by the server with no ReadyForQuery, and every batch counted
        after it would be off by one."""
        self.results.sent_sync(injected=True)
        self.sent_batches += 1
        self.in_batch = False
        return m.Sync().encode()

    def refused(self, why: str) -> bytes:
        """A message that fails on the server in order, its error rewritten into `why`
        (the rest of the batch is then skipped, as after any error). A named Parse, so
        neither the unnamed statement nor any of the client's names is touched."""
        throwaway = f"interlock_refused_{self.nonce}_{self.seq + 1}"
        return m.Parse(throwaway, self.denial_sql(why), ()).encode()

    def _wall(self) -> bytes:
        """The query that makes the upstream session refuse writes itself, sent ahead of
        the client's next message once everything before has been answered (so the
        transaction state it depends on is known); b"" when there is nothing to do yet.

        Outside a transaction block the session default changes (it would be undone if
        set inside a block that rolls back); inside one, the running transaction becomes
        read-only too, and the default follows once the block ends."""
        if self.read_only_applied or not self.results.idle:
            return b""
        if self.status == "I":
            self.read_only_applied = True
            sql = READ_ONLY_SESSION
        elif self.status == "T":
            sql = READ_ONLY_TRANSACTION
        else:
            return b""  # a failed block runs nothing until it ends
        self.results.sent_injected(sql)
        self.sent_batches += 1
        return m.Query(sql).encode()

    def _unwall(self) -> bytes:
        """The default back to read-write once the posture no longer says read_only."""
        if not self.read_only_applied or not self.results.idle or self.status != "I":
            return b""
        self.read_only_applied = False
        self.results.sent_injected(READ_WRITE_SESSION)
        self.sent_batches += 1
        return m.Query(READ_WRITE_SESSION).encode()

    def enforce(self, msg: m.Message) -> Steps[bytes | None]:
        """What to send upstream instead of one client message, or None to forward it
        as it arrived: the decision and enforcement point of every client message."""
        results = self.results
        if isinstance(msg, m.Query):
            ahead = self.end_batch() if self.in_batch else b""
            sql, plans, _, watches = yield from self._checked(msg.sql)
            if sql is None and self._copy_in:
                self._copy_started()
            results.sent_query(plans, watches)
            self.sent_batches += 1
            if sql is None:
                return ahead + msg.encode() if ahead else None
            return ahead + m.Query(sql).encode()
        if isinstance(msg, _EXTENDED):
            self.in_batch = True
        if isinstance(msg, m.Parse):
            if too_long(msg.name):
                return self.refused(name_too_long(msg.name))
            if msg.name in self.named:
                # The server keeps the statement it has under this name and fails the
                # Parse; the portal bound next would run the old text.
                why = f"prepared statement {msg.name!r} was already parsed in this session"
                return self.refused(why)
            sql, plans, decided, watches = yield from self._checked(msg.sql)
            self.statements[msg.name] = Prepared(
                plans[0] if plans else ORIGINS_ONLY, watches[0] if watches else None
            )
            self.actions.pop(msg.name, None)
            self.spent.discard(msg.name)  # a new approval, if any, is for a new run
            if decided is not None:
                self.actions[msg.name] = decided
            if sql is not None:
                return m.Parse(msg.name, sql, msg.param_types).encode()
            if self._copy_in:
                self.copy_statements.add(msg.name)
            else:
                self.copy_statements.discard(msg.name)
            if msg.name:
                self.named.add(msg.name)
            else:
                self._unnamed = self.sent_batches + 1
            return None
        if isinstance(msg, m.Bind):
            if too_long(msg.portal) or too_long(msg.statement):
                return self.refused(name_too_long(msg.portal, msg.statement))
            if msg.statement == "" and self._unsettled():
                if self.copy_from is None:
                    yield from self._settle(b"")
                else:
                    self._settle_unnamed()
            self.bound(msg.portal, msg.statement)
            self.cursors.pop(msg.portal, None)
        elif isinstance(msg, m.Describe):
            if too_long(msg.name):
                return self.refused(name_too_long(msg.name))
            if msg.kind == "S":
                target = self.statements.get(msg.name)
            else:
                described = self.portals.get(msg.name)
                target = described.prepared if described is not None else None
            results.sent_describe(target)
        elif isinstance(msg, m.Close):
            if too_long(msg.name):
                return self.refused(name_too_long(msg.name))
            # The name stays in `named`: the proxy does not parse it again.
            if msg.kind == "S":
                self.statements.pop(msg.name, None)
                self.actions.pop(msg.name, None)
            else:
                self.portals.pop(msg.name, None)
                self.cursors.pop(msg.name, None)
        elif isinstance(msg, m.Execute):
            if too_long(msg.portal):
                return self.refused(name_too_long(msg.portal))
            if self._unsure(msg.portal):
                yield from self._settle_portal(msg.portal, b"")
            bound = self.portals.get(msg.portal)
            if bound is None:
                # A portal interlock did not see bound (a cursor DECLAREd in SQL, say),
                # or one its transaction has ended since: what it would run was not
                # decided here.
                prepared = Prepared(ORIGINS_ONLY)
                veto: str | None = f"portal {msg.portal!r} was not bound through interlock"
            else:
                prepared = bound.prepared
                veto = yield from self._approved(bound)
                if veto is None:
                    veto = yield from self._posture_veto(msg.portal, bound.statement, bound.decided)
            if veto is not None:
                results.sent_execute(prepared)
                # Fails on the server in order, like any denial; Execute's answer is the error.
                return m.Parse("", self.denial_sql(veto)).encode()
            if bound is not None and bound.statement in self.copy_statements:
                self._copy_started()
            if prepared.mask is None and not prepared.describing:
                # The rows would come without a description: ask for it first, so the
                # server says where each column comes from.
                results.sent_describe(prepared, injected=True)
                results.sent_execute(prepared)
                return m.Describe("P", msg.portal).encode() + msg.encode()
            results.sent_execute(prepared)
        elif isinstance(msg, m.Sync):
            if self.copy_from is not None:
                yield from self._copy_answered(b"")
            if not self._copying():
                results.sent_sync()
                self.sent_batches += 1
                self.in_batch = False
        elif isinstance(msg, (m.CopyDone, m.CopyFail)):
            self.copy_from = None
        elif isinstance(msg, m.FunctionCall):
            ahead = self.end_batch() if self.in_batch else b""
            results.sent_query([ORIGINS_ONLY])
            self.sent_batches += 1
            reason = "the function-call protocol message is not allowed"
            return ahead + m.Query(self.denial_sql(reason)).encode()
        elif isinstance(msg, m.AuthResponse):
            raise ProtocolError("authentication message after login")
        return None

    def _unsettled(self) -> bool:
        """Whether the unnamed statement a Bind would use was parsed in an earlier batch
        whose end the server has not reported yet (within one batch an error skips the
        Bind too, so only a later batch can run what a failed Parse left behind)."""
        return self._unnamed is not None and self._unnamed <= self.sent_batches

    def _settle(self, pending: bytes) -> Steps[None]:
        """Before a Bind of the unnamed statement: send `pending`, wait for the end of
        the batch it was parsed in, and keep it only if that batch did not fail. (Not
        during a COPY FROM STDIN: the server waits for data there, so the end is taken
        as unknown and the statement as undecided.)"""
        yield Settle(self._unnamed or 0, pending)
        self._settle_unnamed()

    def _settle_unnamed(self) -> None:
        """After the unnamed Parse's batch: if it failed, or its end is still unknown
        (the driver could not wait), the server holds the statement before it or none,
        so the proxy holds none: an Execute of it is refused as undecided."""
        batch, self._unnamed = self._unnamed, None
        if batch is None:
            return
        if self.downstream.readies < batch or batch in self.downstream.failed:
            self.statements.pop("", None)
            self.actions.pop("", None)

    def bound(self, portal: str, statement: str) -> None:
        """Bind: the portal's rows get its statement's plan, and its Execute the
        statement's decision and posture check, as they are now."""
        prepared = self.statements.get(statement) or Prepared(ORIGINS_ONLY)
        decided = self.actions.get(statement)
        self.portals[portal] = Portal(statement, prepared, decided, self.sent_batches + 1)

    def _unsure(self, portal: str) -> bool:
        """Whether `portal` was bound in an earlier batch: a transaction that ended
        since dropped it, and the server may hold another portal by that name now (a
        cursor a function opened)."""
        bound = self.portals.get(portal)
        return bound is not None and bound.batch <= self.sent_batches

    def _copying(self) -> bool:
        """Whether the server is taking COPY data now: it answered the COPY FROM STDIN
        with CopyInResponse, the client has not ended the data, and the server has not
        ended the COPY with an error (bad data) or finished its batch since."""
        if self.copy_from is None:
            return False
        started, batch, errors = self.copy_from
        down = self.downstream
        return down.copy_ins > started and down.errors == errors and down.readies < batch

    def _copy_unanswered(self) -> bool:
        """Whether the server has not yet answered the COPY FROM STDIN sent last: no
        CopyInResponse since, its batch not ended, and no error in its batch yet (in the
        extended protocol that error skips the rest, Execute included, up to the Sync)."""
        if self.copy_from is None:
            return False
        down = self.downstream
        started, batch, _ = self.copy_from
        if down.copy_ins > started or down.readies >= batch:
            return False
        return not (down.readies == batch - 1 and down.error_open)

    def _copy_started(self) -> None:
        """The COPY FROM STDIN just let through (a Query, or an Execute of one)."""
        down = self.downstream
        self.copy_from = (down.copy_ins, self.sent_batches + 1, down.errors)

    def _copy_answered(self, pending: bytes) -> Steps[None]:
        """Before a Sync while a COPY FROM STDIN may be running: whether the server will
        count it depends on whether the COPY started, so wait for its answer (sent at
        once: a CopyInResponse or an error). If it failed or was skipped, or its answer
        could not be waited for, the COPY is taken as not running."""
        if self._copy_unanswered():
            yield CopyAnswered(pending)
        if self.copy_from is not None and self.downstream.copy_ins == self.copy_from[0]:
            self.copy_from = None

    def _waits(self, portal: str) -> bool:
        """Whether an Execute of `portal` must wait for the server first (see
        `_settle_portal`; never during a COPY FROM STDIN, which waits for data)."""
        return (
            self._unsure(portal)
            and self.downstream.readies < self.sent_batches
            and self.copy_from is None
        )

    def _settle_portal(self, portal: str, pending: bytes) -> Steps[None]:
        """Before the Execute of a portal from an earlier batch: when the server has not
        finished the batches before this one, send `pending` and wait for them. Then
        forget the portal if a transaction ended after its Bind, or if their end is
        still unknown (the driver could not wait): its Execute runs nothing."""
        down = self.downstream
        if down.readies < self.sent_batches and self.copy_from is None:
            yield Settle(self.sent_batches, pending)
        bound = self.portals.get(portal)
        if bound is not None and (
            down.readies < self.sent_batches or down.last_idle >= bound.batch
        ):
            del self.portals[portal]

    def _posture_veto(
        self, portal: str, statement: str, decided: Decided | None
    ) -> Steps[str | None]:
        """A restriction that arrived after Parse still stops the Execute, and so does
        the decision made again when the agent's mode or the policy changed since. A
        portal whose statement interlock did not decide (refused at Parse, or prepared
        where interlock could not follow it) runs nothing."""
        if decided is None:
            return f"statement {statement!r} of portal {portal!r} was not decided by interlock"
        action = decided.action
        policy, mode = self.stamp(action)
        if mode is not decided.mode or policy is not decided.policy:
            # Allowed on the same terms: it runs on, under the new stamp. Not: no mode
            # is kept, so every later Execute is decided (and recorded) again.
            decision: Decision = yield Decide(action)
            same = decision.effect is Effect.ALLOW
            same = same and decision.obligations == decided.obligations
            kept = mode if same else None
            restamped = replace(decided, mode=kept, policy=policy)
            if self.actions.get(statement) is decided:
                self.actions[statement] = restamped
            self.portals[portal].decided = restamped
            if not same:
                why = f"decided again since it was prepared ({mode.value} mode, policy "
                why += f"{policy.version[:12]}): "
                if decision.effect is Effect.ALLOW:
                    return why + "its masks changed; prepare it again"
                return why + explain(decision)
        try:
            posture: Posture = yield PostureNow(self.agent.id)
        except StateError as exc:
            refused: Decision = yield Refuse(action, str(exc))
            return explain(refused)
        if posture.normal:
            return None
        return posture_veto(action, posture)

    def _approved(self, bound: Portal) -> Steps[str | None]:
        """Why a run of a statement held for approval may not go, or None. The approval
        given at Parse covers the first run; a later Bind (other parameter values) is
        held again, since a person approved one run, not every row it could reach."""
        decided = bound.decided
        if decided is None or decided.held is None or bound.approved:
            return None
        if bound.statement not in self.spent:
            self.spent.add(bound.statement)
            bound.approved = True
            return None
        decision: Decision = yield Decide(decided.action)
        if decision.effect is Effect.APPROVE:
            verdict: Verdict = yield Hold(decision, decided.action, decided.held)
            if not verdict.approved:
                return f"held for approval: {verdict.reason or 'denied'}; {explain(decision)}"
        elif decision.effect is not Effect.ALLOW:
            return explain(decision)
        bound.approved = True
        return None

    def _checked(
        self, sql: str
    ) -> Steps[tuple[str | None, list[MaskPlan], Decided | None, list[Watch | None]]]:
        """(None, a mask plan per statement, how it was decided) when `sql` may go
        through; else (the replacement that fails with the denial, [], None)."""
        self._copy_in = False
        classification = self.classify(sql)
        if not classification.statements:
            return None, [ORIGINS_ONLY], None, []
        action = self.action(classification)
        # Read before deciding: a reload meanwhile makes the stamp old, never too new.
        policy, mode = self.stamp(action)
        decision: Decision = yield Decide(action)
        held: str | None = None
        if decision.effect is Effect.APPROVE:
            verdict: Verdict = yield Hold(decision, action, sql)
            if not verdict.approved:
                why = f"held for approval: {verdict.reason or 'denied'}; {explain(decision)}"
                return self.denial_sql(why), [ORIGINS_ONLY], None, []
            held = sql
        elif decision.effect is not Effect.ALLOW:
            return self.denial_sql(explain(decision)), [ORIGINS_ONLY], None, []
        hidden = frozenset(
            label
            for o in decision.obligations
            if o.type == "mask"
            for label in o.params.get("labels", ())
        )
        plans: list[MaskPlan] = []
        watches: list[Watch | None] = []
        for statement in classification.statements:
            watches.append(watch(statement, decision.decision_id))
            if statement.kind == "fetch":
                # A cursor's rows are masked as its DECLARE said; a cursor interlock did
                # not see declared (a refcursor from a function, say) is refused.
                cursor = self.cursors.get(statement.name or "")
                if (
                    cursor is not None
                    and not cursor.hold
                    and self.downstream.last_idle >= cursor.batch
                ):
                    # Its transaction ended: the server dropped it.
                    del self.cursors[statement.name or ""]
                    cursor = None
                if cursor is None:
                    why = (
                        f"cursor {statement.name!r} was not declared through interlock "
                        f"(decision {decision.decision_id})"
                    )
                    return self.denial_sql(why), [ORIGINS_ONLY], None, []
                plans.append(cursor.plan)
                continue
            plan, refusal = mask_plan(statement, hidden)
            if refusal is not None:
                why = f"{refusal} (decision {decision.decision_id})"
                return self.denial_sql(why), [ORIGINS_ONLY], None, []
            if statement.kind == "declare" and statement.name is not None:
                # DECLARE itself returns no rows; its FETCHes get the plan. A protocol
                # Execute of its name runs the cursor, not what was bound before.
                hold = _WITH_HOLD.search(statement.text) is not None
                self.cursors[statement.name] = Cursor(plan, hold, self.sent_batches + 1)
                self.portals.pop(statement.name, None)
                plan = ORIGINS_ONLY
            elif statement.kind == "prepare" and statement.name is not None:
                # SQL-level: its decision is not kept, so a protocol Bind of the name
                # is undecided (whatever the name held before, closed or not).
                self.named.add(statement.name)
                self.statements.pop(statement.name, None)
                self.actions.pop(statement.name, None)
            elif statement.kind == "close" and statement.name == "all":
                self.cursors.clear()
                self.portals.clear()
            elif statement.kind == "close" and statement.name is not None:
                self.cursors.pop(statement.name, None)
                self.portals.pop(statement.name, None)
            elif statement.kind == "copy" and _COPY_FROM_STDIN.search(statement.text):
                self._copy_in = True
            plans.append(plan)
        decided = Decided(action, mode, policy, decision.obligations, held)
        return None, plans, decided, watches

    def action(self, cls: SqlClassification) -> Action:
        first = cls.statements[0]
        target = next(iter(sorted(first.writes or first.reads)), "") or self.database
        # Frozen already (once per classification): Action does not freeze it again.
        details = MappingProxyType({"database": self.database, **cls.frozen_details()})
        return Action(self.agent, "postgres", cls.operation, target, details, labels=cls.labels)


def too_long(name: str) -> bool:
    """Whether the server would know `name` by a prefix of it (see MAX_NAME_BYTES)."""
    return len(name) > MAX_NAME_BYTES // 4 and len(name.encode()) > MAX_NAME_BYTES


def name_too_long(*names: str) -> str:
    longest = max(names, key=lambda n: len(n.encode()))
    return (
        f"statement and portal names are limited to {MAX_NAME_BYTES} bytes (the server "
        f"would know {longest[:20]!r}... by its first {MAX_NAME_BYTES})"
    )


def watch(statement: SqlStatement, decision_id: str) -> Watch | None:
    """Labelled output columns to fingerprint (named columns only: a star's positions are
    not known here)."""
    if not statement.labels or not statement.output_labels:
        return None
    columns = tuple((i, labels) for i, labels in enumerate(statement.output_labels) if labels)
    return Watch(decision_id, columns) if columns else None


def mask_plan(statement: SqlStatement, hidden: frozenset[str]) -> tuple[MaskPlan, str | None]:
    """How to mask `statement`'s results, or why it cannot be masked (and so is refused).

    Rows are masked by the server's description of them (`MaskPlan.resolve`), so a star
    is fine. COPY TO STDOUT comes without one: its positions must come from the parse,
    and its options must be readable to find the fields in its rows. (The text read is
    the first of the statement's shape: `copy_format` takes no number, so it reads the
    same options in any text of that shape.)"""
    masked = statement.labels & hidden
    plan = MaskPlan(hidden, statement.labels, statement.output_labels)
    stored = statement.written_labels & hidden
    if stored:
        return plan, (
            f"values of masked columns ({', '.join(sorted(stored))}) may not be stored: "
            "they would be readable unmasked afterwards"
        )
    if statement.kind != "copy" or not masked:
        return plan, None
    if statement.output_labels is None:
        return plan, f"masking {', '.join(sorted(masked))} needs the result columns named, not *"
    fmt = copy_format(statement.text)
    if fmt is None:
        return plan, (
            f"masking {', '.join(sorted(masked))} in COPY needs options interlock can read "
            "(FORMAT text, csv or binary; one-character DELIMITER, QUOTE, ESCAPE; NULL)"
        )
    return MaskPlan(hidden, statement.labels, statement.output_labels, fmt), None


def explain(decision: Decision) -> str:
    """A denial's text for the client: the reasons, and the decision to look up."""
    why = "; ".join(decision.reasons) or decision.effect.value
    return f"{why} (decision {decision.decision_id})"
