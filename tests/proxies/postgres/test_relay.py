"""Property: the byte-range relay sends the client what decoding every message would.

`Downstream` forwards most server messages by type and length without reading them. Fed
random server message sequences (cut at random points) against random pending work
(queries and executes with masks and watches, describes, syncs, the proxy's own
queries), it must send exactly the bytes, collect exactly the values, and end in exactly
the state that decoding, tracking and re-encoding each message does.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.proxies.postgres import messages as m
from interlock.proxies.postgres.codec import BackendReader, ProtocolError
from interlock.proxies.postgres.relay import Downstream, Pieces
from interlock.proxies.postgres.results import MaskPlan, Prepared, ResultTracker, Watch

PII = frozenset({"pii"})
ORIGINS = {(100, 1): PII}
MARKER = "interlock_denied_0123456789abcdef_1"
PLANS = [MaskPlan(), MaskPlan(PII, PII), MaskPlan(PII, frozenset(), (PII, frozenset()))]
WATCHES = [None, Watch("d1", ((0, PII),))]

fields = st.lists(
    st.builds(
        m.Field,
        st.just("c"),
        st.sampled_from([0, 100]),
        st.sampled_from([1, 2]),
        st.just(25),
        st.just(-1),
        st.just(-1),
        st.just(0),
    ),
    min_size=1,
    max_size=3,
)
value = st.one_of(st.none(), st.sampled_from([b"ann", b"42", b""]))
server_messages = st.lists(
    st.one_of(
        st.builds(m.RowDescription, fields.map(tuple)),
        st.builds(m.DataRow, st.lists(value, min_size=1, max_size=3).map(tuple)),
        st.just(m.CommandComplete("SELECT 1")),
        st.sampled_from([m.Raw(kind, b"") for kind in (b"1", b"2", b"3", b"n", b"I", b"s", b"c")]),
        st.just(m.Raw(b"t", b"\0\0")),
        st.just(m.Raw(b"H", b"\0\0\1\0\0")),
        st.just(m.Raw(b"d", b"ann\n")),
        st.just(m.ParameterStatus("TimeZone", "UTC")),
        st.sampled_from([m.error("boom"), m.error(f'relation "pg_catalog.{MARKER}" missing')]),
        st.just(m.NoticeResponse({"S": "NOTICE", "M": "ann"})),
        st.builds(m.ReadyForQuery, st.sampled_from("ITE")),
    ),
    max_size=14,
)
pending = st.lists(
    st.tuples(
        st.sampled_from(["query", "describe", "injected_describe", "execute", "sync", "own"]),
        st.integers(0, len(PLANS) - 1),
        st.integers(0, len(WATCHES) - 1),
        st.integers(0, 1),
    ),
    max_size=6,
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` as reads of the given sizes, the rest in one last read."""
    chunks, at = [], 0
    for cut in cuts:
        chunks.append(data[at : at + cut])
        at += cut
    return [*chunks, data[at:]]


def _tracker(spec: list[tuple[str, int, int, int]]) -> ResultTracker:
    """A tracker with `spec`'s work pending (built afresh for each side of the test)."""
    statements = [Prepared(PLANS[1], WATCHES[1]), Prepared(PLANS[0], mask=frozenset())]
    results = ResultTracker(ORIGINS, frozenset({100}))
    for what, plan, watch, which in spec:
        if what == "query":
            results.sent_query([PLANS[plan]], [WATCHES[watch]])
        elif what in ("describe", "injected_describe"):
            results.sent_describe(statements[which], injected=what == "injected_describe")
        elif what == "execute":
            results.sent_execute(statements[which])
        elif what == "sync":
            results.sent_sync()
        else:
            results.sent_injected("SET TRANSACTION READ ONLY")
    return results


def _decoded(results: ResultTracker, data: bytes) -> tuple[bytes, str]:
    """What the proxy did before byte ranges: decode, track and re-encode everything."""
    relay = Downstream(results, {MARKER: "denied"}, "I")
    reader, out, status = BackendReader(), [], "I"
    reader.feed(data)
    while (msg := reader.next()) is not None:
        if isinstance(msg, m.ReadyForQuery):
            status = msg.status
        forward = results.backend(msg)
        if forward is None:
            continue
        if isinstance(forward, m.ErrorResponse):
            forward = relay._rewrite(forward)
        out.append(forward.encode())
    return b"".join(out), status


def _outcome(run: Any) -> Any:
    try:
        return run()
    except ProtocolError as exc:
        return ("refused", str(exc))


@settings(max_examples=300, deadline=None)
@given(pending, server_messages, st.lists(st.integers(1, 40), max_size=5))
def test_byte_ranges_send_what_decoding_every_message_would(
    spec: list[tuple[str, int, int, int]], msgs: list[Any], cuts: list[int]
) -> None:
    data = b"".join(msg.encode() for msg in msgs)
    chunks = chunked(data, cuts)
    before, after = _tracker(spec), _tracker(spec)

    def relayed() -> tuple[bytes, str]:
        relay = Downstream(after, {MARKER: "denied"}, "I")
        sent = b"".join(relay.receive(chunk) for chunk in chunks)
        assert relay.reader.buffered == 0
        return sent, relay.status

    expected = _outcome(lambda: _decoded(before, data))
    got = _outcome(relayed)
    assert got == expected
    if not isinstance(expected[0], str):
        assert after.seen == before.seen
        assert after.idle == before.idle
        assert after.injected_errors == before.injected_errors


def test_a_read_whose_messages_all_pass_is_one_slice() -> None:
    buf = bytearray(b"aaaabbbbcccc")
    out = Pieces(buf)
    out.forward(0, 4)
    out.forward(4, 8)
    out.add(b"XY")
    out.forward(8, 12)
    assert out.take() == b"aaaabbbbXYcccc"
    assert out._out == []


@pytest.mark.parametrize("gap", [(0, 4, 8, 12), (4, 8, 0, 4)])
def test_ranges_with_a_gap_are_not_merged(gap: tuple[int, int, int, int]) -> None:
    buf = bytearray(b"aaaabbbbcccc")
    out = Pieces(buf)
    out.forward(gap[0], gap[1])
    out.forward(gap[2], gap[3])
    assert out.take() == bytes(buf[gap[0] : gap[1]] + buf[gap[2] : gap[3]])


def _field(table: int) -> m.Field:
    return m.Field("c", table, 1, 25, -1, -1, 0)


@pytest.mark.parametrize(
    ("first", "second", "masked"),
    [((0,), (100,), True), ((100,), (0,), False), ((100,), (100,), True), ((0,), (0,), False)],
)
def test_a_statement_described_again_is_masked_by_its_newest_description(
    first: tuple[int, ...], second: tuple[int, ...], masked: bool
) -> None:
    """Drivers describe before every execution; the relay skips decoding a description
    it has seen, never one that changed (a table altered between two executions)."""
    statement = Prepared(PLANS[0])
    results = ResultTracker(ORIGINS, frozenset({100}))
    relay = Downstream(results, {}, "I")
    for fields in (first, second):
        results.sent_describe(statement)
        results.sent_execute(statement)
        results.sent_sync()
        description = m.RowDescription(tuple(_field(t) for t in fields))
        sent = relay.receive(
            description.encode() + m.DataRow((b"ann",)).encode() + m.ReadyForQuery("I").encode()
        )
    assert (m.DataRow((None,)).encode() in sent) is masked
    assert (m.DataRow((b"ann",)).encode() in sent) is not masked


def test_what_the_server_sent_after_the_login_is_relayed() -> None:
    """Bytes the login read past its ReadyForQuery (a notice, a parameter change) stay in
    its reader; the relay takes that reader over and forwards them with the next read."""
    login = BackendReader()
    notice = m.NoticeResponse({"S": "NOTICE", "M": "hello"}).encode()
    login.feed(m.ReadyForQuery("I").encode() + notice)
    assert isinstance(login.next(), m.ReadyForQuery)
    relay = Downstream(ResultTracker(), {}, "I", login)
    change = m.ParameterStatus("TimeZone", "UTC").encode()
    assert relay.receive(change) == notice + change


def test_a_simple_query_repeated_is_masked_by_its_own_plan_and_the_newest_catalog() -> None:
    """A repeated simple query's description is resolved once, then reused only while the
    plan, the bytes and the catalog are all the same."""
    results = ResultTracker({}, frozenset())
    relay = Downstream(results, {}, "I")
    answer = (
        m.RowDescription((_field(100),)).encode()
        + m.DataRow((b"ann",)).encode()
        + m.ReadyForQuery("I").encode()
    )
    masked = []
    for plan, origins in [(0, {}), (0, {}), (2, {}), (0, {}), (0, ORIGINS), (0, {})]:
        results.origins = origins
        results.sent_query([PLANS[plan]])
        masked.append(m.DataRow((None,)).encode() in relay.receive(answer))
    assert masked == [False, False, True, False, True, False]
