"""ResultTracker without a server: which rows get which mask, and what is swallowed."""

from __future__ import annotations

from interlock.proxies.postgres import messages as m
from interlock.proxies.postgres.codec import decode_data_row
from interlock.proxies.postgres.results import (
    ORIGINS_ONLY,
    MaskPlan,
    Prepared,
    ResultTracker,
)

PAYROLL = 16400
ORIGINS = {(PAYROLL, 2): frozenset({"pii"})}
"""payroll.name (column 2) carries pii."""


def field(name: str, table: int = 0, column: int = 0) -> m.Field:
    return m.Field(name, table, column, 25, -1, -1, 0)


def row(*values: bytes | None) -> m.Raw:
    return m.Raw(b"D", m.DataRow(values).encode()[5:])


def values(msg: m.Message | None) -> tuple[bytes | None, ...]:
    assert isinstance(msg, m.Raw)
    return decode_data_row(msg.body).values


def test_origin_masks_a_column_whatever_the_plan_says() -> None:
    t = ResultTracker(ORIGINS)
    t.sent_query([ORIGINS_ONLY, ORIGINS_ONLY])
    t.backend(m.RowDescription((field("id", PAYROLL, 1), field("c", PAYROLL, 2))))
    assert values(t.backend(row(b"1", b"ann"))) == (b"1", None)
    t.backend(m.CommandComplete("SELECT 1"))
    t.backend(m.RowDescription((field("c", PAYROLL, 2),)))
    assert values(t.backend(row(b"ann"))) == (None,), "second statement, same rule"
    t.backend(m.CommandComplete("SELECT 1"))
    assert t.backend(m.ReadyForQuery("I")) is not None
    assert t.idle


def test_computed_columns_of_unknown_lineage_are_masked_when_masked_labels_were_read() -> None:
    plan = MaskPlan(hidden=frozenset({"pii"}), decided=frozenset({"pii"}), parsed=None)
    t = ResultTracker(ORIGINS, frozenset({PAYROLL}))
    t.sent_query([plan])
    t.backend(m.RowDescription((field("id", PAYROLL, 1), field("u"))))
    assert values(t.backend(row(b"1", b"x"))) == (b"1", None)


def test_columns_of_relations_whose_labels_were_not_read_count_as_unknown() -> None:
    """A relation the catalog did not read (created since, or a system view such as
    pg_stats, whose columns hold other columns' values) is no clean source."""
    plan = MaskPlan(hidden=frozenset({"pii"}), decided=frozenset({"pii"}), parsed=None)
    stats = 12000
    t = ResultTracker(ORIGINS, frozenset({PAYROLL}))
    t.sent_query([plan])
    t.backend(m.RowDescription((field("id", PAYROLL, 1), field("histogram_bounds", stats, 9))))
    assert values(t.backend(row(b"1", b"{ann,bob}"))) == (b"1", None)


def test_a_whole_row_carries_every_label_of_its_relation() -> None:
    """`SELECT p FROM payroll p`: the server names the table with column 0."""
    plan = MaskPlan(hidden=frozenset({"pii"}), decided=frozenset({"pii"}), parsed=None)
    t = ResultTracker(ORIGINS, frozenset({PAYROLL}))
    t.sent_query([plan, ORIGINS_ONLY])
    t.backend(m.RowDescription((field("p", PAYROLL, 0),)))
    assert values(t.backend(row(b"(1,ann)"))) == (None,)
    t.backend(m.CommandComplete("SELECT 1"))
    t.backend(m.RowDescription((field("p", PAYROLL, 0),)))
    assert values(t.backend(row(b"(1,ann)"))) == (None,), "labels the parse missed"


def test_an_exempt_agent_sees_what_was_decided_but_not_what_the_parse_missed() -> None:
    seen = MaskPlan(hidden=frozenset(), decided=frozenset({"pii"}), parsed=None)
    missed = MaskPlan(hidden=frozenset(), decided=frozenset(), parsed=None)
    for plan, expected in ((seen, b"ann"), (missed, None)):
        t = ResultTracker(ORIGINS)
        t.sent_query([plan])
        t.backend(m.RowDescription((field("c", PAYROLL, 2),)))
        assert values(t.backend(row(b"ann"))) == (expected,)


def test_an_execute_never_described_shows_no_column() -> None:
    t = ResultTracker(ORIGINS)
    t.sent_execute(Prepared(ORIGINS_ONLY))
    assert values(t.backend(row(b"1", b"2"))) == (None, None)


def test_a_describe_resolves_the_statement_for_later_executes() -> None:
    t = ResultTracker(ORIGINS)
    stmt = Prepared(ORIGINS_ONLY)
    t.sent_describe(stmt)
    t.sent_sync()
    assert t.backend(m.Raw(b"t", b"\0\0")) is not None, "the client's describe is answered"
    assert t.backend(m.RowDescription((field("id", PAYROLL, 1), field("n", PAYROLL, 2))))
    t.backend(m.ReadyForQuery("I"))
    t.sent_execute(stmt)
    t.sent_execute(stmt)
    t.sent_sync()
    assert values(t.backend(row(b"1", b"ann"))) == (b"1", None)
    t.backend(m.CommandComplete("SELECT 1"))
    assert values(t.backend(row(b"2", b"bob"))) == (b"2", None)


def test_answers_to_the_proxys_own_describe_and_queries_are_swallowed() -> None:
    t = ResultTracker(ORIGINS)
    stmt = Prepared(ORIGINS_ONLY)
    t.sent_describe(stmt, injected=True)
    t.sent_execute(stmt)
    t.sent_sync()
    assert t.backend(m.RowDescription((field("n", PAYROLL, 2),))) is None
    assert values(t.backend(row(b"ann"))) == (None,)
    t.backend(m.CommandComplete("SELECT 1"))
    t.backend(m.ReadyForQuery("I"))
    t.sent_injected("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    assert t.backend(m.CommandComplete("SET")) is None
    assert t.backend(m.ReadyForQuery("I")) is None
    assert t.idle
    assert t.injected_errors == []


def test_a_failed_query_of_the_proxys_own_is_reported_not_shown() -> None:
    t = ResultTracker()
    t.sent_injected("SET TRANSACTION READ ONLY")
    assert t.backend(m.error("boom", "XX000")) is None
    assert t.backend(m.ReadyForQuery("T")) is None
    assert t.injected_errors == ["SET TRANSACTION READ ONLY: boom"]


def test_an_error_in_a_batch_drops_what_the_server_skipped() -> None:
    t = ResultTracker(ORIGINS)
    first, second = Prepared(ORIGINS_ONLY), Prepared(ORIGINS_ONLY)
    t.sent_describe(first)
    t.sent_execute(first)
    t.sent_describe(second)
    t.sent_sync()
    t.backend(m.error("syntax error", "42601"))
    t.backend(m.ReadyForQuery("I"))
    assert t.idle
    assert not first.describing
    assert not second.describing
