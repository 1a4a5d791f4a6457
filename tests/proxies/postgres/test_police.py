"""Property: whatever a client sends, no statement reaches the server undecided.

Drives the proxy's per-message policing (`PostgresProxy._police`) with random message
sequences (no network; the server side is not needed to decide what is forwarded) and
checks every Query and Parse that would be forwarded.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.classify.sql import Catalog, SqlClassifier
from interlock.config import AgentConfig, PostgresConfig
from interlock.core.model import Agent, Effect
from interlock.proxies.postgres import messages as m
from interlock.proxies.postgres.codec import FrontendReader
from interlock.proxies.postgres.server import PostgresProxy, _Session
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


def proxy_and_session() -> tuple[PostgresProxy, _Session, CaptureSink]:
    sink = CaptureSink()
    pdp = make_pdp(sink=sink)
    proxy = PostgresProxy(
        PostgresConfig(listen="127.0.0.1:0", approval_timeout=0.001),
        {"reporter": AgentConfig(token="reporter-token-0123456789")},
        pdp,
        SqlClassifier(Catalog.from_config({"public.payroll.name": ["pii"]})),
    )
    session: Any = _Session(Agent("reporter", authn="token"), "app", None, None, 1, 2)  # type: ignore[arg-type]  # policing never touches the connections
    return proxy, session, sink


@settings(max_examples=150, deadline=None)
@given(messages)
def test_no_statement_is_forwarded_without_an_allow_decision(msgs: list[Any]) -> None:
    proxy, session, sink = proxy_and_session()

    async def run() -> bytes:
        return b"".join([await proxy._police(session, msg) for msg in msgs])

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
    assert len(sent) == len(msgs), "one message forwarded per message received"
    forwarded_decided = 0
    for original, out in zip(msgs, sent, strict=True):
        if isinstance(out, (m.Query, m.Parse)):
            if out.sql.startswith("SELECT 1 FROM pg_catalog.interlock_denied_"):
                continue
            assert isinstance(original, (m.Query, m.Parse))
            assert out.sql == original.sql
            classification = proxy.classifier.classify(out.sql)
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
        out.append(msg)
    return out


@settings(max_examples=100, deadline=None)
@given(messages, st.lists(st.integers(min_value=1, max_value=64), max_size=6))
def test_the_relay_forwards_what_policing_each_message_would(
    msgs: list[Any], cuts: list[int]
) -> None:
    """The byte-range relay (`_from_client`), fed the same messages cut anywhere, sends
    upstream exactly what policing message by message does (whose safety the test above
    proves): one write per read, and a message no decision changed goes as it came."""
    data = b"".join(msg.encode() for msg in msgs)
    chunks = chunked(data, cuts)

    async def per_message() -> bytes:
        proxy, session, _ = proxy_and_session()
        return b"".join([await proxy._police(session, msg) for msg in msgs])

    async def relayed() -> bytes:
        proxy, session, _ = proxy_and_session()
        reader = FrontendReader()
        reader.in_startup = False
        sent = [(await proxy._from_client(session, reader, chunk))[0] for chunk in chunks]
        assert reader.buffered == 0
        return b"".join(sent)

    expected, got = asyncio.run(per_message()), asyncio.run(relayed())
    assert _normalised(got) == _normalised(expected)
    if b"interlock_denied_" not in expected:
        assert got == expected
