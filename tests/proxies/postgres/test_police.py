"""Property: whatever a client sends, no statement reaches the server undecided.

Drives the session core's per-message enforcement (`session.Session.enforce`, its needs
answered by a real PDP) with random message sequences (no network; the server side is
not needed to decide what is forwarded) and checks every Query and Parse that would be
forwarded.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.approvals.request import Verdict
from interlock.classify.sql import Catalog, SqlClassifier
from interlock.core.model import Agent, Effect
from interlock.core.pdp import PDP
from interlock.proxies.postgres import messages as m
from interlock.proxies.postgres.codec import MAX_CLIENT_MESSAGE, FrontendReader
from interlock.proxies.postgres.relay import Downstream
from interlock.proxies.postgres.results import ResultTracker
from interlock.proxies.postgres.session import (
    Decide,
    Hold,
    Need,
    PostureNow,
    Refuse,
    Session,
    Settle,
    drive,
)
from interlock.testing import CaptureSink, make_pdp
from tests.proxies.postgres.test_relay import chunked

FRAGMENTS = [
    "select id from orders",
    "select name from payroll",
    "select * from payroll",
    "drop table orders",
    "copy orders to program 'x'",
    "set role postgres",
    "DO $$ begin end $$",
    "select pg_read_file('/etc/passwd')",
    "select 1 /* ; */",
    "insert into orders values (1)",
    "with d as (delete from orders returning *) select 1",
    "select $x$;$x$",
    "select 'a;b'",
    "garbage here",
    "",
    ";",
    "begin",
    "commit",
]
sql_text = st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=3).map("; ".join)
messages = st.lists(
    st.one_of(
        st.builds(m.Query, sql_text),
        st.builds(m.Parse, st.sampled_from(["", "s1", "s2"]), sql_text, st.just(())),
        st.builds(
            m.Bind,
            st.sampled_from(["", "p1"]),
            st.sampled_from(["", "s1"]),
            st.just(()),
            st.just(()),
            st.just(()),
        ),
        st.builds(m.Execute, st.sampled_from(["", "p1"]), st.just(0)),
        st.just(m.Sync()),
        st.just(m.Flush()),
        st.builds(m.FunctionCall, st.binary(max_size=8)),
    ),
    max_size=8,
)


class Policed:
    """A session core whose needs a real PDP answers, as the proxy's driver does (a
    hold is answered as an expired one: no person is asked here)."""

    def __init__(self) -> None:
        self.sink = CaptureSink()
        self.pdp: PDP = make_pdp(sink=self.sink)
        self.classifier = SqlClassifier(Catalog.from_config({"public.payroll.name": ["pii"]}))
        self.core = Session(
            Agent("reporter", authn="token"),
            "app",
            Downstream(ResultTracker(), {}, "I"),
            self.classifier.classify,
            lambda action: (self.pdp.policy.current, self.pdp.mode(action)[0]),
            max_message=MAX_CLIENT_MESSAGE,
        )
        self.flushed: list[bytes] = []
        """What the core sent ahead while it waited for the server (`Settle`)."""

    async def answer(self, need: Need) -> object:
        if isinstance(need, Settle):
            # No server here: nothing ends, so the core must act as if it never will.
            self.flushed.append(need.flush)
            return None
        if isinstance(need, Decide):
            return await self.pdp.decide(need.action)
        if isinstance(need, PostureNow):
            return await self.pdp.store.posture(need.agent_id, self.pdp.clock())
        if isinstance(need, Refuse):
            return await self.pdp.refuse(need.action, need.reason)
        assert isinstance(need, Hold)
        return Verdict(False, None, "approval request expired")

    async def police(self, msg: m.Message) -> bytes:
        """The bytes sent upstream for one client message."""
        replaced = await drive(self.core.enforce(msg), self.answer)
        return msg.encode() if replaced is None else replaced


@settings(max_examples=150, deadline=None)
@given(messages)
def test_no_statement_is_forwarded_without_an_allow_decision(msgs: list[Any]) -> None:
    policed = Policed()
    sink = policed.sink

    async def run() -> bytes:
        return b"".join([await policed.police(msg) for msg in msgs])

    forwarded = asyncio.run(run())
    reader = FrontendReader()
    reader.in_startup = False
    reader.feed(forwarded)
    allows = sum(1 for r in sink.records if r.decision.effect is Effect.ALLOW)
    sent: list[Any] = []
    while (msg := reader.next()) is not None:
        sent.append(msg)
    # The proxy asks the server to describe a portal it has no description of, right
    # before executing it (so masking knows where each column comes from).
    for i, extra in enumerate(sent):
        if isinstance(extra, m.Describe):
            following = sent[i + 1]
            assert isinstance(following, m.Execute)
            assert (extra.kind, extra.name) == ("P", following.portal)
    sent = [x for x in sent if not isinstance(x, m.Describe)]
    # The proxy ends an open extended batch with a Sync of its own before a Query (or a
    # FunctionCall's refusal, a Query): after an error the server would skip the Query.
    extended = (m.Parse, m.Bind, m.Describe, m.Execute, m.Close, m.Flush)
    aligned: list[Any] = []
    open_batch = False
    at = 0
    for msg in msgs:
        if isinstance(msg, (m.Query, m.FunctionCall)) and open_batch:
            assert isinstance(sent[at], m.Sync), "a Sync of the proxy's own ends the batch"
            at += 1
        if isinstance(msg, (m.Query, m.FunctionCall, m.Sync)):
            open_batch = False
        elif isinstance(msg, extended):
            open_batch = True
        aligned.append(sent[at])
        at += 1
    assert at == len(sent)
    sent = aligned
    assert len(sent) == len(msgs), "one message forwarded per message received"
    forwarded_decided = 0
    for original, out in zip(msgs, sent, strict=True):
        if isinstance(out, (m.Query, m.Parse)):
            if out.sql.startswith("SELECT 1 FROM pg_catalog.interlock_denied_"):
                continue
            assert isinstance(original, (m.Query, m.Parse))
            assert out.sql == original.sql
            classification = policed.classifier.classify(out.sql)
            flags = classification.flags
            assert not flags & {
                "unparsed",
                "copy_program",
                "sensitive_setting",
                "risky_function",
                "do_block",
            }, out.sql
            if classification.statements:
                assert classification.operation.value in ("read", "write"), out.sql
                forwarded_decided += 1
        else:
            assert not isinstance(original, m.FunctionCall), "function calls are refused"
    assert forwarded_decided <= allows, "every forwarded statement had an allow decision"


def _normalised(data: bytes) -> list[Any]:
    """The messages in `data`, denial markers (a per-session nonce) made comparable."""
    reader = FrontendReader()
    reader.in_startup = False
    reader.feed(data)
    out: list[Any] = []
    while (msg := reader.next()) is not None:
        if isinstance(msg, (m.Query, m.Parse)):
            msg = replace(msg, sql=re.sub(r"interlock_denied_[0-9a-f]{16}_", "N_", msg.sql))
        if isinstance(msg, m.Parse):
            msg = replace(msg, name=re.sub(r"interlock_refused_[0-9a-f]{16}_", "R_", msg.name))
        out.append(msg)
    return out


@settings(max_examples=100, deadline=None)
@given(messages, st.lists(st.integers(min_value=1, max_value=64), max_size=6))
def test_the_relay_forwards_what_policing_each_message_would(
    msgs: list[Any], cuts: list[int]
) -> None:
    """The byte-range relay (`Session.receive`), fed the same messages cut anywhere,
    sends upstream exactly what policing message by message does (whose safety the test
    above proves): one write per read, and a message no decision changed goes as it came."""
    data = b"".join(msg.encode() for msg in msgs)
    chunks = chunked(data, cuts)

    async def per_message() -> bytes:
        policed = Policed()
        return b"".join([await policed.police(msg) for msg in msgs])

    async def relayed() -> bytes:
        policed = Policed()
        sent = []
        for chunk in chunks:
            out, _ = await drive(policed.core.receive(chunk), policed.answer)
            sent.append(b"".join(policed.flushed) + out)
            policed.flushed.clear()
        assert policed.core.frontend.buffered == 0
        return b"".join(sent)

    expected, got = asyncio.run(per_message()), asyncio.run(relayed())
    assert _normalised(got) == _normalised(expected)
    if b"interlock_denied_" not in expected:
        assert got == expected
