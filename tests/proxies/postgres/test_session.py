"""The session core on bytes alone: client bytes in, upstream bytes and needs out.

No PDP, no sockets: each need the core yields (`Decide`, `Hold`, `PostureNow`, `Refuse`)
is answered from a script, and the test reads what would go upstream, and, through the
same core's `from_server`, what the client would be told. What must hold: nothing goes
upstream before its decision, a denial fails on the server and comes back as the
denial, a restriction or a changed policy that arrives after Parse still stops the
Execute, a store that cannot say the posture refuses, and the read-only wall is put up
and taken down at the right moments.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from interlock.approvals.request import Verdict
from interlock.classify.sql import Catalog, SqlClassifier
from interlock.core.context import NORMAL, Posture
from interlock.core.model import Action, Agent, Decision, Effect, Obligation, Risk, Tier
from interlock.core.modes import Mode
from interlock.errors import StateError
from interlock.proxies.postgres import messages as m
from interlock.proxies.postgres.codec import FrontendReader, ProtocolError
from interlock.proxies.postgres.relay import Downstream
from interlock.proxies.postgres.results import ResultTracker
from interlock.proxies.postgres.session import (
    READ_ONLY_SESSION,
    READ_ONLY_TRANSACTION,
    READ_WRITE_SESSION,
    CopyAnswered,
    Decide,
    Hold,
    Need,
    PostureNow,
    Refuse,
    Session,
    Settle,
    Steps,
)

CLASSIFIER = SqlClassifier(Catalog.from_config({"public.payroll.name": ["pii"]}))
LOW = Risk(0, Tier.LOW)
Answer = Callable[[Need], Any]


def decision(effect: Effect, *reasons: str, masks: tuple[str, ...] = ()) -> Decision:
    obligations = (Obligation("mask", {"labels": list(masks)}),) if masks else ()
    return Decision(f"d-{effect.value}", effect, LOW, "v1", reasons, (), obligations)


class Policy:
    """Stands for a compiled policy: the core compares it by identity, reads its version."""

    def __init__(self, version: str) -> None:
        self.version = version


class Stamp:
    """The policy and mode the core reads before deciding: changed by the test."""

    def __init__(self) -> None:
        self.policy: Any = Policy("v1")
        self.mode = Mode.ENFORCE

    def __call__(self, action: Action) -> tuple[Any, Mode]:
        return self.policy, self.mode


def core(stamp: Stamp | None = None, read_only: bool = False) -> Session:
    return Session(
        Agent("reporter", authn="token"),
        "app",
        Downstream(ResultTracker(), {}, "I"),
        CLASSIFIER.classify,
        stamp or Stamp(),
        max_message=1 << 20,
        read_only=read_only,
        nonce="0123456789abcdef",
    )


def run(steps: Steps[Any], answer: Answer) -> tuple[Any, list[Need]]:
    """Drive `steps` to the end, each need answered by `answer` (an exception it returns
    is thrown in, as the driver throws a store's StateError); the result and the needs."""
    needs: list[Need] = []
    try:
        need = next(steps)
        while True:
            needs.append(need)
            got = answer(need)
            need = steps.throw(got) if isinstance(got, Exception) else steps.send(got)
    except StopIteration as done:
        return done.value, needs


def allowing(need: Need) -> Any:
    if isinstance(need, Decide):
        return decision(Effect.ALLOW)
    if isinstance(need, PostureNow):
        return NORMAL
    raise AssertionError(f"not expected: {need}")


def sent(data: bytes) -> list[m.Message]:
    reader = FrontendReader()
    reader.in_startup = False
    reader.feed(data)
    out = []
    while (msg := reader.next()) is not None:
        out.append(msg)
    return out


def extended(sql: str, name: str = "s1") -> bytes:
    return (
        m.Parse(name, sql, ()).encode()
        + m.Bind("", name, (), (), ()).encode()
        + m.Execute("", 0).encode()
        + m.Sync().encode()
    )


def in_a_block(s: Session) -> None:
    """The server's end of the batch sent so far, inside a transaction block (status T):
    the portals bound in it live on, so an Execute in a later batch may run them."""
    s.from_server(m.ReadyForQuery("T").encode())


def test_an_allowed_read_goes_as_the_bytes_it_came_in_after_one_decision() -> None:
    s = core()
    data = m.Query("select id from orders").encode() + m.Query("select 1").encode()
    (out, ended), needs = run(s.receive(data), allowing)
    assert (out, ended) == (data, False)
    assert [type(n) for n in needs] == [Decide, Decide]
    assert isinstance(needs[0], Decide)
    assert needs[0].action.target == "public.orders"


def test_nothing_is_sent_before_its_decision_and_a_denial_fails_on_the_server() -> None:
    s = core()
    steps = s.receive(m.Query("drop table orders").encode())
    first = next(steps)
    assert isinstance(first, Decide), "the decision is asked for before anything is returned"
    try:
        steps.send(decision(Effect.DENY, "no drops"))
    except StopIteration as done:
        out, _ = done.value
    (query,) = sent(out)
    assert isinstance(query, m.Query)
    assert query.sql == "SELECT 1 FROM pg_catalog.interlock_denied_0123456789abcdef_1"
    missing = 'relation "pg_catalog.interlock_denied_0123456789abcdef_1" does not exist'
    told, failed = s.from_server(m.error(missing).encode() + m.ReadyForQuery("I").encode())
    assert failed == []
    assert told.endswith(m.ReadyForQuery("I").encode())
    assert b"interlock: no drops (decision d-deny)" in told
    assert b"interlock_denied" not in told, "the marker never reaches the client"


def test_a_partial_message_waits_for_the_rest_and_asks_nothing() -> None:
    s = core()
    data = m.Query("select id from orders").encode()
    (out, _), needs = run(s.receive(data[:7]), allowing)
    assert (out, needs) == (b"", [])
    (out, _), needs = run(s.receive(data[7:]), allowing)
    assert out == data
    assert len(needs) == 1


def test_bind_and_sync_pass_without_a_decision() -> None:
    s = core()
    run(s.receive(m.Parse("s1", "select id from orders", ()).encode()), allowing)
    data = m.Bind("p1", "s1", (), (), ()).encode() + m.Sync().encode()
    (out, _), needs = run(s.receive(data), allowing)
    assert (out, needs) == (data, [])
    assert s.portals["p1"].statement == "s1"


def test_execute_rechecks_the_posture_read_after_it_arrived() -> None:
    s = core()
    run(s.receive(extended("select id from orders")), allowing)
    isolated = Posture(isolated=True)

    def answer(need: Need) -> Any:
        return isolated if isinstance(need, PostureNow) else allowing(need)

    data = m.Bind("", "s1", (), (), ()).encode() + m.Execute("", 0).encode()
    (out, _), needs = run(s.receive(data), answer)
    assert [type(n) for n in needs] == [PostureNow]
    bind, parse = sent(out)
    assert isinstance(bind, m.Bind)
    assert isinstance(parse, m.Parse), "the Execute is replaced by a failing statement"
    assert "interlock_denied_" in parse.sql
    assert "isolated" in s.downstream.denials[parse.sql.rsplit(".", 1)[1]]


def test_a_store_that_cannot_say_the_posture_refuses_the_execute() -> None:
    s = core()
    run(s.receive(extended("select id from orders")), allowing)
    in_a_block(s)

    def answer(need: Need) -> Any:
        if isinstance(need, PostureNow):
            return StateError("state store unreachable")
        if isinstance(need, Refuse):
            assert need.reason == "state store unreachable"
            return decision(Effect.DENY, need.reason)
        return allowing(need)

    (out, _), needs = run(s.receive(m.Execute("", 0).encode()), answer)
    assert [type(n) for n in needs] == [PostureNow, Refuse]
    (parse,) = sent(out)
    assert isinstance(parse, m.Parse)
    assert "interlock_denied_" in parse.sql


def test_a_changed_mode_or_policy_decides_the_execute_again() -> None:
    stamp = Stamp()
    s = core(stamp)
    run(s.receive(extended("select id from orders")), allowing)
    in_a_block(s)
    (out, _), needs = run(s.receive(m.Execute("", 0).encode()), allowing)
    assert [type(n) for n in needs] == [PostureNow], "same stamp: no new decision"
    stamp.policy = Policy("v2")  # a reload
    denied = decision(Effect.DENY, "reloaded policy says no")

    def answer(need: Need) -> Any:
        return denied if isinstance(need, Decide) else allowing(need)

    (out, _), needs = run(s.receive(m.Execute("", 0).encode()), answer)
    assert [type(n) for n in needs] == [Decide]
    (parse,) = sent(out)
    assert isinstance(parse, m.Parse)
    assert "interlock_denied_" in parse.sql
    assert "reloaded policy says no" in next(iter(s.downstream.denials.values()))
    # Refused once: every later Execute is decided (and recorded) again.
    (_, _), needs = run(s.receive(m.Execute("", 0).encode()), answer)
    assert Decide in [type(n) for n in needs]


def test_changed_masks_refuse_a_statement_prepared_under_the_old_ones() -> None:
    stamp = Stamp()
    s = core(stamp)
    run(s.receive(extended("select name from payroll")), allowing)
    in_a_block(s)
    stamp.mode = Mode.SHADOW

    def answer(need: Need) -> Any:
        if isinstance(need, Decide):
            return decision(Effect.ALLOW, masks=("pii",))
        return allowing(need)

    (out, _), _ = run(s.receive(m.Execute("", 0).encode()), answer)
    (parse,) = sent(out)
    assert isinstance(parse, m.Parse)
    assert "its masks changed" in next(iter(s.downstream.denials.values()))


@pytest.mark.parametrize(("approved", "forwarded"), [(True, True), (False, False)])
def test_a_held_statement_goes_only_once_approved(approved: bool, forwarded: bool) -> None:
    s = core()
    data = m.Query("delete from orders").encode()

    def answer(need: Need) -> Any:
        if isinstance(need, Decide):
            return decision(Effect.APPROVE, "needs a person")
        assert isinstance(need, Hold)
        assert need.sql == "delete from orders"
        return Verdict(approved, "alice" if approved else None, "ok" if approved else "expired")

    (out, _), needs = run(s.receive(data), answer)
    assert [type(n) for n in needs] == [Decide, Hold]
    assert (out == data) is forwarded
    if not forwarded:
        assert "held for approval: expired" in next(iter(s.downstream.denials.values()))


def test_function_calls_are_refused_without_asking() -> None:
    s = core()
    (out, _), needs = run(s.receive(m.FunctionCall(b"\0\0\0\1").encode()), allowing)
    assert needs == []
    (query,) = sent(out)
    assert isinstance(query, m.Query)
    assert "interlock_denied_" in query.sql


def test_terminate_ends_the_session_and_what_follows_it_is_not_sent() -> None:
    s = core()
    data = m.Terminate().encode() + m.Query("drop table orders").encode()
    (out, ended), needs = run(s.receive(data), allowing)
    assert (out, ended, needs) == (m.Terminate().encode(), True, [])


def test_an_authentication_message_after_login_is_a_protocol_violation() -> None:
    s = core()
    with pytest.raises(ProtocolError):
        run(s.receive(m.AuthResponse(b"secret").encode()), allowing)


def test_the_read_only_wall_goes_up_when_idle_and_its_answer_is_not_relayed() -> None:
    s = core(read_only=True)
    data = m.Query("select id from orders").encode()
    (out, _), _ = run(s.receive(data), allowing)
    wall, _ = sent(out)
    assert wall == m.Query(READ_ONLY_SESSION)
    assert out.endswith(data)
    assert s.read_only_applied
    answers = (
        m.CommandComplete("SET").encode()
        + m.ReadyForQuery("I").encode()
        + m.CommandComplete("SELECT 0").encode()
        + m.ReadyForQuery("I").encode()
    )
    told, failed = s.from_server(answers)
    assert failed == []
    assert told == m.CommandComplete("SELECT 0").encode() + m.ReadyForQuery("I").encode()
    s.read_only = False
    assert s.wall() == m.Query(READ_WRITE_SESSION).encode()
    assert not s.read_only_applied


def test_inside_a_transaction_the_wall_covers_the_running_one_and_retries_after() -> None:
    s = core()
    s.downstream.status = "T"
    s.read_only = True
    assert s.wall() == m.Query(READ_ONLY_TRANSACTION).encode()
    assert not s.read_only_applied, "the session default follows once the block ends"
    told, failed = s.from_server(
        m.error("cannot set transaction read-only mode").encode() + m.ReadyForQuery("E").encode()
    )
    assert failed
    assert "read-only" in failed[0]
    assert told == b"", "the answer to the proxy's own query is not the client's"
    assert s.wall() == b"", "a failed block runs nothing until it ends"


def test_a_wall_is_not_sent_while_answers_are_outstanding() -> None:
    s = core()
    run(s.receive(m.Query("select id from orders").encode()), allowing)
    s.read_only = True
    assert s.wall() == b"", "the transaction state it depends on is not known yet"
    s.from_server(m.CommandComplete("SELECT 0").encode() + m.ReadyForQuery("I").encode())
    assert s.wall() == m.Query(READ_ONLY_SESSION).encode()


def test_a_message_over_the_limit_is_refused_before_it_is_buffered() -> None:
    s = core()
    head = b"Q" + (2 << 20).to_bytes(4, "big")
    with pytest.raises(ProtocolError):
        run(s.receive(head), allowing)


def ready(s: Session, *, failed: bool = False) -> None:
    """The server ends one batch (with an error first when `failed`)."""
    data = m.error("boom").encode() if failed else b""
    s.from_server(data + m.ReadyForQuery("I").encode())


def test_a_name_parsed_once_cannot_be_parsed_again() -> None:
    """The server would keep the old statement and fail the Parse; the proxy must not
    take the new text for what the name runs."""
    s = core()
    run(s.receive(m.Parse("s1", "select id from orders", ()).encode()), allowing)
    (out, _), needs = run(s.receive(m.Parse("s1", "select 1", ()).encode()), allowing)
    assert needs == [], "refused without a decision"
    (parse,) = sent(out)
    assert isinstance(parse, m.Parse)
    assert parse.name.startswith("interlock_refused_"), "the client's name is not touched"
    assert "already parsed" in s.downstream.denials[parse.sql.rsplit(".", 1)[1]]
    decided = s.actions["s1"]
    assert decided.action.target == "public.orders", "the name keeps what it holds"


def test_a_name_prepared_in_sql_cannot_be_parsed_or_executed() -> None:
    s = core()
    run(s.receive(m.Query("prepare s2 as select id from orders").encode()), allowing)
    (out, _), _ = run(s.receive(m.Parse("s2", "select 1", ()).encode()), allowing)
    (parse,) = sent(out)
    assert isinstance(parse, m.Parse)
    assert parse.name.startswith("interlock_refused_")
    data = m.Bind("", "s2", (), (), ()).encode() + m.Execute("", 0).encode()
    (out, _), needs = run(s.receive(data), allowing)
    assert needs == []
    _, refused = sent(out)
    assert isinstance(refused, m.Parse)
    assert "was not decided by interlock" in s.downstream.denials[refused.sql.rsplit(".", 1)[1]]


def test_an_unbound_portal_runs_nothing() -> None:
    s = core()
    (out, _), needs = run(s.receive(m.Execute("cursor_from_sql", 0).encode()), allowing)
    assert needs == []
    (refused,) = sent(out)
    assert isinstance(refused, m.Parse)
    assert "not bound through interlock" in next(iter(s.downstream.denials.values()))


def test_a_portal_runs_the_decision_it_was_bound_with() -> None:
    """The unnamed statement parsed again after a Bind: the portal still runs what it
    was bound to, so its Execute is checked against that statement's decision."""
    stamp = Stamp()
    s = core(stamp)
    run(s.receive(m.Parse("", "select id from orders", ()).encode()), allowing)
    run(s.receive(m.Bind("p1", "", (), (), ()).encode()), allowing)
    run(s.receive(m.Parse("", "select name from payroll", ()).encode()), allowing)
    stamp.policy = Policy("v2")
    asked: list[Action] = []

    def answer(need: Need) -> Any:
        if isinstance(need, Decide):
            asked.append(need.action)
        return allowing(need)

    run(s.receive(m.Execute("p1", 0).encode()), answer)
    assert [a.target for a in asked] == ["public.orders"]


def test_a_bind_after_the_unnamed_parse_s_batch_waits_for_how_it_ended() -> None:
    s = core()
    first = m.Parse("", "select id from orders", ()).encode() + m.Sync().encode()
    then = m.Bind("", "", (), (), ()).encode() + m.Execute("", 0).encode()
    steps = s.receive(first + then)
    needs: list[Need] = []
    need = next(steps)
    while not isinstance(need, Settle):
        needs.append(need)
        need = steps.send(allowing(need))
    assert need.batch == 1
    assert need.flush == first, "what the server must answer is sent before the wait"
    ready(s, failed=True)  # the Parse's batch failed: it may not have taken effect
    try:
        need = steps.send(None)
        while True:
            need = steps.send(allowing(need))
    except StopIteration as done:
        out, _ = done.value
    bind, refused = sent(out)
    assert isinstance(bind, m.Bind)
    assert isinstance(refused, m.Parse), "the Execute is refused: nothing decided to run"
    assert "not decided by interlock" in next(iter(s.downstream.denials.values()))


def test_an_unnamed_parse_whose_batch_succeeded_runs_without_waiting() -> None:
    s = core()
    run(s.receive(m.Parse("", "select id from orders", ()).encode() + m.Sync().encode()), allowing)
    ready(s)
    data = m.Bind("", "", (), (), ()).encode() + m.Execute("", 0).encode()
    (out, _), needs = run(s.receive(data), allowing)
    assert [type(n) for n in needs] == [PostureNow], "no Settle: the end is known"
    assert out.endswith(m.Execute("", 0).encode())


def test_within_one_batch_a_bind_does_not_wait() -> None:
    """An error in the batch skips the Bind too, so it cannot run what a failed Parse
    left behind."""
    s = core()
    data = (
        m.Parse("", "select id from orders", ()).encode()
        + m.Bind("", "", (), (), ()).encode()
        + m.Execute("", 0).encode()
    )
    (out, _), needs = run(s.receive(data), allowing)
    assert Settle not in [type(n) for n in needs]
    assert out.endswith(m.Execute("", 0).encode())


def denial(s: Session, out: bytes) -> str:
    """The reason of the one refusal in `out`."""
    refused = [x for x in sent(out) if isinstance(x, (m.Parse, m.Query)) and "interlock_" in x.sql]
    assert len(refused) == 1, sent(out)
    return s.downstream.denials[refused[0].sql.rsplit(".", 1)[1]]


def test_a_query_inside_an_open_batch_gets_a_sync_of_the_proxy_s_own_first() -> None:
    """After an error the server skips everything up to Sync, a Query included, with no
    ReadyForQuery for it: counted as a batch, it would shift every later one (and the
    masks of later results) by one. With the proxy's Sync ahead, the Query always runs."""
    s = core()
    data = m.Bind("", "nosuch", (), (), ()).encode() + m.Query("select 1").encode()
    (out, _), _ = run(s.receive(data + m.Sync().encode()), allowing)
    bind, sync, query, client_sync = sent(out)
    assert isinstance(bind, m.Bind)
    assert isinstance(sync, m.Sync)
    assert isinstance(query, m.Query)
    assert isinstance(client_sync, m.Sync)
    assert s.sent_batches == 3
    # The server: the Bind fails, the proxy's Sync ends the batch, the Query runs, the
    # client's Sync ends an empty batch.
    told, _ = s.from_server(
        m.error('prepared statement "nosuch" does not exist').encode()
        + m.ReadyForQuery("I").encode()
        + m.CommandComplete("SELECT 1").encode()
        + m.ReadyForQuery("I").encode()
        + m.ReadyForQuery("I").encode()
    )
    assert told.count(m.ReadyForQuery("I").encode()) == 2, "the proxy's own is not passed on"
    assert s.downstream.readies == s.sent_batches
    assert s.results.idle


def test_a_function_call_inside_an_open_batch_is_refused_after_a_sync() -> None:
    s = core()
    data = m.Parse("", "select 1", ()).encode() + m.FunctionCall(b"\0\0\0\1").encode()
    (out, _), _ = run(s.receive(data), allowing)
    _parse, sync, query = sent(out)
    assert isinstance(sync, m.Sync)
    assert isinstance(query, m.Query)
    assert s.sent_batches == 2


def test_the_read_only_wall_waits_for_an_open_batch_to_end() -> None:
    """Sent inside a batch that failed, the wall's query would be skipped, and the proxy
    would think it in place."""
    s = core(read_only=True)
    s.read_only_applied = True
    run(s.receive(m.Parse("", "select 1", ()).encode()), allowing)
    s.read_only_applied = False
    (out, _), _ = run(s.receive(m.Bind("", "", (), (), ()).encode()), allowing)
    assert sent(out) == [m.Bind("", "", (), (), ())], "no wall inside the batch"
    run(s.receive(m.Sync().encode()), allowing)
    ready(s)
    (out, _), _ = run(s.receive(m.Query("select 1").encode()), allowing)
    assert sent(out)[0] == m.Query(READ_ONLY_SESSION)


@pytest.mark.parametrize(
    "message",
    [
        m.Parse("n" * 64, "select 1", ()),
        m.Bind("p" * 64, "", (), (), ()),
        m.Bind("", "n" * 64, (), (), ()),
        m.Describe("S", "n" * 64),
        m.Execute("p" * 64, 0),
        m.Close("P", "é" * 32),
    ],
)
def test_names_the_server_would_cut_short_are_refused(message: m.Message) -> None:
    """The server knows a statement or portal by its first 63 bytes: two names that
    share them would be one name to it and two to the proxy."""
    s = core()
    (out, _), needs = run(s.receive(message.encode()), allowing)
    assert needs == []
    assert "limited to 63 bytes" in denial(s, out)
    assert s.portals == {}
    assert s.statements == {}
    assert s.named == set()


def test_names_of_63_bytes_are_served() -> None:
    s = core()
    name = "é" * 31 + "n"
    data = (
        m.Parse(name, "select id from orders", ()).encode()
        + m.Bind(name, name, (), (), ()).encode()
    )
    (out, _), _ = run(s.receive(data), allowing)
    assert [type(x) for x in sent(out)] == [m.Parse, m.Bind]
    assert s.portals[name].statement == name


@pytest.mark.parametrize(
    "drop",
    [
        m.Close("S", "s1").encode() + m.Sync().encode(),
        m.Sync().encode(),  # a Parse the server failed: the name is free on the server
    ],
)
def test_sql_prepare_of_a_name_leaves_it_undecided(drop: bytes) -> None:
    """A SQL PREPARE of a name the proxy decided before (closed since, or never created
    on the server) makes it hold another statement: a protocol Bind of it runs nothing."""
    s = core()
    run(s.receive(m.Parse("s1", "select 1", ()).encode() + drop), allowing)
    run(s.receive(m.Query("prepare s1 as select name from payroll").encode()), allowing)
    data = m.Bind("", "s1", (), (), ()).encode() + m.Execute("", 0).encode()
    (out, _), needs = run(s.receive(data), allowing)
    assert needs == []
    assert "not decided by interlock" in denial(s, out)


@pytest.mark.parametrize(
    "drop",
    [
        m.Close("P", "c"),
        m.Query("declare c cursor with hold for select name from payroll"),
        m.Query("close c"),
        m.Query("close all"),
    ],
)
def test_a_portal_closed_or_named_again_in_sql_runs_nothing(drop: m.Message) -> None:
    s = core()
    prepare = m.Parse("s1", "select 1", ()).encode() + m.Bind("c", "s1", (), (), ()).encode()
    run(s.receive(prepare + m.Sync().encode()), allowing)
    in_a_block(s)
    run(
        s.receive(drop.encode() + (m.Sync().encode() if drop.__class__ is m.Close else b"")),
        allowing,
    )
    in_a_block(s)
    (out, _), needs = run(s.receive(m.Execute("c", 0).encode()), allowing)
    assert needs == []
    assert "not bound through interlock" in denial(s, out)


def test_a_portal_outlives_its_batch_only_inside_a_transaction_block() -> None:
    """Outside a block the Sync commits and the server drops the portal; a cursor a
    function opens may take its name. Inside one it lives on (JDBC fetches that way)."""
    for status, runs in (("T", True), ("I", False)):
        s = core()
        bound = m.Parse("s1", "select id from orders", ()).encode()
        bound += m.Bind("c", "s1", (), (), ()).encode() + m.Sync().encode()
        run(s.receive(bound), allowing)
        s.from_server(m.ReadyForQuery(status).encode())
        (out, _), needs = run(s.receive(m.Execute("c", 0).encode()), allowing)
        assert (PostureNow in [type(n) for n in needs]) is runs
        assert ("c" in s.portals) is runs
        if not runs:
            assert "not bound through interlock" in denial(s, out)


def test_an_execute_of_a_portal_from_an_unanswered_batch_waits_for_it() -> None:
    s = core()
    first = m.Parse("s1", "select id from orders", ()).encode()
    first += m.Bind("c", "s1", (), (), ()).encode() + m.Sync().encode()
    steps = s.receive(first + m.Execute("c", 0).encode())
    need = next(steps)
    while not isinstance(need, Settle):
        need = steps.send(allowing(need))
    assert (need.batch, need.flush) == (1, first)
    s.from_server(m.ReadyForQuery("I").encode())  # the batch ended outside a block
    try:
        need = steps.send(None)
        while True:
            need = steps.send(allowing(need))
    except StopIteration as done:
        out, _ = done.value
    assert "not bound through interlock" in denial(s, out)


def test_an_execute_whose_wait_could_not_end_runs_nothing() -> None:
    """The driver could not wait (the server went away): the portal is not trusted."""
    s = core()
    first = m.Parse("s1", "select id from orders", ()).encode()
    first += m.Bind("c", "s1", (), (), ()).encode() + m.Sync().encode()
    (out, _), needs = run(
        s.receive(first + m.Execute("c", 0).encode()),
        lambda need: None if isinstance(need, Settle) else allowing(need),
    )
    assert Settle in [type(n) for n in needs]
    assert "not bound through interlock" in denial(s, out)


@pytest.mark.parametrize(("declare", "fetched"), [("", False), (" with hold", True)])
def test_a_cursor_is_fetched_after_its_transaction_only_if_held(
    declare: str, fetched: bool
) -> None:
    """Without HOLD a cursor ends with its transaction, and a function may open another
    under its name (a refcursor) that the proxy does not see: its FETCH is refused."""
    s = core()
    for sql, status in (
        ("begin", "T"),
        (f"declare c cursor{declare} for select id from orders", "T"),  # noqa: S608
        ("commit", "I"),
    ):
        run(s.receive(m.Query(sql).encode()), allowing)
        s.from_server(m.CommandComplete("X").encode() + m.ReadyForQuery(status).encode())
    (out, _), _ = run(s.receive(m.Query("fetch all from c").encode()), allowing)
    if fetched:
        assert sent(out) == [m.Query("fetch all from c")]
    else:
        assert "not declared through interlock" in denial(s, out)


def test_a_sync_during_copy_data_is_not_counted() -> None:
    """The server ignores Sync during COPY FROM STDIN: no ReadyForQuery answers it."""
    s = core()
    run(s.receive(m.Query("copy orders from stdin").encode()), allowing)
    s.from_server(m.Raw(b"G", b"\0\0\0").encode())  # CopyInResponse: the COPY started
    (out, _), needs = run(s.receive(m.Sync().encode() + m.CopyDone().encode()), allowing)
    assert needs == [], "answered already: no wait"
    assert sent(out) == [m.Sync(), m.CopyDone()]
    assert s.sent_batches == 1, "only the Query is a batch"
    assert s.copy_from is None, "the client ended the data"


def test_a_sync_after_the_server_ended_the_copy_with_an_error_is_counted() -> None:
    """Bad data ends the COPY on the server (an error, then ReadyForQuery), while the
    client may still be sending: a Sync then is the server's to answer again."""
    s = core()
    run(s.receive(m.Query("copy orders from stdin").encode()), allowing)
    s.from_server(m.Raw(b"G", b"\0\0\0").encode())
    run(s.receive(m.CopyData(b"not a row\n").encode()), allowing)
    s.from_server(m.error("invalid input syntax").encode() + m.ReadyForQuery("I").encode())
    (out, _), _ = run(s.receive(m.Sync().encode()), allowing)
    assert sent(out) == [m.Sync()]
    assert s.sent_batches == 2, "the server answers this Sync"


def test_a_sync_after_an_error_ends_an_extended_copy_is_counted() -> None:
    """In the extended protocol the error comes first and the ReadyForQuery only after
    the client's Sync, which the server then answers."""
    s = core()
    copy = m.Parse("", "copy orders from stdin", ()).encode() + m.Bind("", "", (), (), ()).encode()
    run(s.receive(copy + m.Execute("", 0).encode()), allowing)
    s.from_server(m.Raw(b"1", b"").encode() + m.Raw(b"2", b"").encode())
    s.from_server(m.Raw(b"G", b"\0\0\0").encode())
    run(s.receive(m.CopyData(b"not a row\n").encode()), allowing)
    s.from_server(m.error("invalid input syntax").encode())
    (out, _), _ = run(s.receive(m.Sync().encode()), allowing)
    assert sent(out) == [m.Sync()]
    assert s.sent_batches == 1, "the server answers this Sync"


def test_a_sync_before_the_copy_is_answered_waits_for_the_answer() -> None:
    s = core()
    data = m.Query("copy orders from stdin").encode() + m.Sync().encode()
    steps = s.receive(data)
    need = next(steps)
    while not isinstance(need, CopyAnswered):
        need = steps.send(allowing(need))
    assert need.flush == m.Query("copy orders from stdin").encode()
    s.from_server(m.error("relation does not exist").encode() + m.ReadyForQuery("I").encode())
    try:
        steps.send(None)
    except StopIteration as done:
        out, _ = done.value
    assert sent(out) == [m.Sync()]
    assert s.sent_batches == 2, "the COPY failed: the server answers the Sync"


def test_an_approval_is_for_one_run_of_a_prepared_statement() -> None:
    """A person approves `delete from orders where id = $1` once; every later Bind of it
    (other values) is held again, and more rows of the same run are not."""
    s = core()
    holds: list[Hold] = []
    answers = iter([True, False])

    def answer(need: Need) -> Any:
        if isinstance(need, Decide):
            return decision(Effect.APPROVE, "needs a person")
        if isinstance(need, Hold):
            holds.append(need)
            approved = next(answers)
            return Verdict(approved, "alice" if approved else None, "ok" if approved else "no")
        return allowing(need)

    def run_with(value: bytes) -> bytes:
        data = m.Bind("p", "s1", (), (value,), ()).encode() + m.Execute("p", 1).encode()
        (out, _), _ = run(s.receive(data + m.Sync().encode()), answer)
        s.from_server(m.ReadyForQuery("T").encode())
        return out

    run(s.receive(m.Parse("s1", "delete from orders where id = $1", ()).encode()), answer)
    assert len(holds) == 1, "held at Parse, approved"
    assert run_with(b"1").endswith(m.Execute("p", 1).encode() + m.Sync().encode())
    assert len(holds) == 1, "the first run uses that approval"
    (out, _), _ = run(s.receive(m.Execute("p", 1).encode()), answer)
    assert out.endswith(m.Execute("p", 1).encode()), "more rows of the same run"
    assert len(holds) == 1
    out = run_with(b"2")
    assert len(holds) == 2, "another run is held again"
    assert holds[1].sql == "delete from orders where id = $1"
    assert "held for approval: no" in denial(s, out)


SANS_IO = ("session", "relay", "codec", "messages", "results", "copyformat")
IO_MODULES = {"asyncio", "socket", "ssl", "selectors", "uvloop"}


@pytest.mark.parametrize("name", SANS_IO)
def test_the_protocol_core_does_no_io_itself(name: str) -> None:
    """The session core and what it relays with import no I/O module (server.py does
    the I/O), so its tests need nothing but bytes."""
    path = Path(m.__file__).with_name(f"{name}.py")
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & IO_MODULES
