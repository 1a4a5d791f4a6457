"""The classifier's reading of names and strings, checked against the real PostgreSQL 15:
for generated spellings, what the server answers is what `normalise` and `fold` say."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interlock.classify.sql import Catalog, Routine, SqlClassifier
from interlock.classify.sqlfunctions import BUILTIN_FUNCTIONS
from interlock.classify.sqlident import LexError, fold, normalise, qualified_name, quote_literal
from interlock.core.model import Operation
from tests.classify.test_sql_classes import (
    FORBIDDEN,
    FORBIDDEN_SHAPES,
    LABELS,
    forbidden_statement,
    labelled_read,
)
from tests.classify.test_sqlident import unicode_escaped
from tests.services import Postgres

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def conn(postgres: Postgres) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A superuser connection to a database of this module's own, with the labelled
    table `payroll` of test_sql_classes (ssn, salary) in it."""
    name = "classify_" + os.urandom(5).hex()
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    with psycopg.connect(postgres.dsn(name), autocommit=True) as c:
        c.execute("create table payroll (id int, ssn text, salary int, name text)")
        c.execute("insert into payroll values (1, '123-45-6789', 1000, 'Ann')")
        yield c


def _resolved(spelling: str) -> str:
    """The name `spelling` denotes, as the classifier reads it."""
    plain = normalise(spelling)
    if plain.startswith('"'):
        return plain[1:-1].replace('""', '"')
    return fold(plain)


_LETTERS = "abcXYZ_éÉßΣσ€"
_QUOTABLE = _LETTERS + " \"'.!\\+0"


@st.composite
def _spelling(draw: st.DrawFn) -> str:
    how = draw(st.sampled_from(["unquoted", "quoted", "u&", "uescape"]))
    if how == "unquoted":
        return "x" + draw(st.text(st.sampled_from(_LETTERS), max_size=40))
    name = draw(st.text(st.sampled_from(_QUOTABLE), min_size=1, max_size=40))
    if how == "quoted":
        return '"' + name.replace('"', '""') + '"'
    escape = "\\" if how == "u&" else draw(st.sampled_from(list("!#~*%")))
    choices = draw(st.lists(st.integers(0, 2), min_size=len(name), max_size=len(name)))
    text = unicode_escaped(name, escape, choices).replace('"', '""')
    clause = "" if escape == "\\" else f" UESCAPE '{escape}'"
    return f'U&"{text}"{clause}'


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_spelling())
def test_names_resolve_as_the_server_resolves_them(
    conn: psycopg.Connection[tuple[object, ...]], spelling: str
) -> None:
    try:
        expected = _resolved(spelling)
    except LexError:
        with pytest.raises(psycopg.Error):
            conn.execute(f"select 1 as {spelling}")
        return
    cur = conn.execute(f"select 1 as {spelling}")
    assert cur.description is not None
    assert cur.description[0].name == expected


@st.composite
def _string(draw: st.DrawFn) -> tuple[str, str]:
    """(spelling, value) of a string literal."""
    value = draw(st.text(st.sampled_from("ab'\\\"é€ \n$"), max_size=20))
    how = draw(st.sampled_from(["plain", "e", "u&", "dollar", "continued"]))
    if how == "e":
        body = "".join(
            f"\\x{ord(c):02x}"
            if ord(c) < 0x80 and draw(st.booleans())
            else f"\\u{ord(c):04x}"
            if draw(st.booleans())
            else "\\\\"
            if c == "\\"
            else "''"
            if c == "'"
            else c
            for c in value
        )
        return f"E'{body}'", value
    if how == "u&":
        body = "".join(
            f"\\{ord(c):04x}" if draw(st.booleans()) else "\\\\" if c == "\\" else c for c in value
        ).replace("'", "''")
        return f"U&'{body}'", value
    if how == "dollar":
        return f"$q${value}$q$" if "$q" not in value else quote_literal(value), value
    if how == "continued":
        cut = draw(st.integers(0, len(value)))
        left, right = quote_literal(value[:cut]), quote_literal(value[cut:])
        return f"{left}{draw(st.sampled_from(['\n', ' -- c\n ', '\n\t']))}{right}", value
    return quote_literal(value), value


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_string())
def test_strings_read_as_the_server_reads_them(
    conn: psycopg.Connection[tuple[object, ...]], case: tuple[str, str]
) -> None:
    spelling, value = case
    plain = normalise(f"select {spelling}")
    row = conn.execute(f"select {spelling}").fetchone()
    assert row is not None
    assert row[0] == value
    assert plain == f"select {quote_literal(value)}"


def test_builtin_function_names_are_the_servers(postgres: Postgres) -> None:
    """BUILTIN_FUNCTIONS is PostgreSQL 15's pg_catalog and information_schema, exactly."""
    with psycopg.connect(postgres.dsn("template1"), autocommit=True) as c:
        rows = c.execute(
            "select distinct proname::text from pg_proc p join pg_namespace n "
            "on n.oid = p.pronamespace where nspname in ('pg_catalog', 'information_schema')"
        ).fetchall()
    assert {str(r[0]) for r in rows} == BUILTIN_FUNCTIONS


def test_a_volatile_user_function_is_exec_and_really_writes(
    conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    """The case of issue 18: `SELECT zap()` looks like a read and updates a table."""
    conn.execute("create table if not exists zapped (n int); truncate zapped")
    conn.execute(
        "create or replace function zap() returns int volatile language sql "
        "as 'insert into zapped values (1) returning n'"
    )
    rows = conn.execute(
        "select n.nspname::text, p.proname::text, p.provolatile::text, p.prosecdef, "
        "l.lanname::text, p.prokind::text from pg_proc p "
        "join pg_namespace n on n.oid = p.pronamespace "
        "join pg_language l on l.oid = p.prolang where p.proname = 'zap'"
    ).fetchall()
    routines = [Routine(*map(str, r[:3]), bool(r[3]), str(r[4]), str(r[5])) for r in rows]
    classifier = SqlClassifier(Catalog(routines={"zap": tuple(routines)}, routines_known=True))
    assert classifier.classify("SELECT zap()").operation is Operation.EXEC
    conn.execute("SELECT zap()")
    assert conn.execute("select count(*) from zapped").fetchone() == (1,)


LONG = "names_probe" + "x" * 52
"""63 bytes: the longest name the server keeps."""


@pytest.mark.parametrize(
    "text",
    [
        "names_probe",
        "NAMES_PROBE",
        " public . names_probe ",
        'public."names_probe"',
        '"Names Probe"',
        'PUBLIC."Names Probe"',
        '"NAMES_PROBE"',
        LONG + "_cut_by_the_server",
    ],
)
def test_table_names_in_strings_resolve_as_regclass_does(
    conn: psycopg.Connection[tuple[object, ...]], text: str
) -> None:
    """table_to_xml('...') names its table as regclass reads the string."""
    for name in ("names_probe", '"Names Probe"', LONG):
        conn.execute(f"create table if not exists {name} (a int)")
    row = conn.execute(
        "select n.nspname::text, c.relname::text from pg_class c "
        "join pg_namespace n on n.oid = c.relnamespace where c.oid = to_regclass(%s)",
        (text,),
    ).fetchone()
    parts = qualified_name(text)
    if row is None:
        assert parts[-1] not in ("names_probe", "Names Probe", LONG)
    else:
        assert ("public", *parts)[-2:] == (row[0], row[1])


FORBIDDEN_BUT_RUNNABLE = [
    "SELECT U&\"pg\\005Fread\\005Ffile\"('/etc/hostname')",
    "select U&\"pg!005fread!005ffile\" UESCAPE '!' ('/etc/hostname')",
    "select ('/etc/hostname'::text).pg_read_file",
    "select pg_catalog.PG_READ_FILE(E'/etc/\\x68ostname')",
    "select 1 -- the server ends this comment here:\r, pg_read_file('/etc/hostname')",
    "select * from ts_stat('select to_tsvector(pg_read_file(''/etc/hostname''))')",
    "select query_to_xml('select pg_ls_dir(''.'')', true, false, '')",
    "select length(U&'\\0070g_read_file') where pg_read_file('/etc/hostname') is not null",
]


@pytest.mark.parametrize("sql", FORBIDDEN_BUT_RUNNABLE)
def test_spellings_the_server_runs_are_the_ones_denied(
    conn: psycopg.Connection[tuple[object, ...]], sql: str
) -> None:
    """Each spelling really runs a forbidden function on PostgreSQL 15 (so the test is
    about something), and the classifier sees it."""
    flags = SqlClassifier().classify(sql).flags
    assert flags & {"risky_function", "dynamic_sql", "unparsed"}, flags
    assert conn.execute(sql).fetchall()


def test_a_respelled_labelled_column_is_the_column(
    conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    conn.execute("create table if not exists staff (id int, ssn text)")
    conn.execute("truncate staff; insert into staff values (1, '123-45-6789')")
    classifier = SqlClassifier(Catalog.from_config({"public.staff.ssn": ["pii"]}))
    for sql in (
        'SELECT U&"\\0073sn" FROM staff',
        "select U&\"!0073!+000073n\" uescape '!' from STAFF",
        'select "s""" from (select ssn as "s""" from staff) x',
        "select c from staff as t(a, c)",
        "select v from staff p, jsonb_each_text(to_jsonb(p)) as j(k, v) where k = 'ssn'",
        "select p.to_jsonb ->> 'ssn' from staff p",
    ):
        assert conn.execute(sql).fetchall() == [("123-45-6789",)], sql
        (statement,) = classifier.classify(sql).statements
        assert "pii" in statement.labels, sql
        assert statement.output_labels is None or "pii" in statement.output_labels[0], sql


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(forbidden_statement(("pg_read_file",), "'/etc/hostname'", FORBIDDEN_SHAPES))
def test_generated_forbidden_spellings_run_on_the_server_and_are_denied(
    conn: psycopg.Connection[tuple[object, ...]], sql: str
) -> None:
    """The differential: every generated spelling reads the file on the real server, and
    every one is denied."""
    assert SqlClassifier().classify(sql).flags & FORBIDDEN, sql
    conn.execute(sql).fetchall()


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(labelled_read())
def test_generated_labelled_reads_return_the_value_and_carry_the_label(
    conn: psycopg.Connection[tuple[object, ...]], case: tuple[str, frozenset[str]]
) -> None:
    """The differential for labels: whatever the spelling, the server returns the
    labelled value, and the classifier says the statement reads it and where."""
    sql, labels = case
    (statement,) = SqlClassifier(Catalog.from_config(LABELS)).classify(sql).statements
    assert labels <= statement.labels, sql
    assert statement.output_labels is None or any(
        labels <= out for out in statement.output_labels
    ), sql
    rows = conn.execute(sql).fetchall()
    assert any(v in str(rows) for v in ("123-45-6789", "1000")), (sql, rows)
