"""The four classifier classes of issue 18, as tables of respellings and as properties:
server files, names as the server reads them, SQL in strings, user functions."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.classify.sql import Catalog, Routine, SqlClassification, SqlClassifier
from interlock.core.bundle import bundled_policy_dir
from interlock.core.context import Posture
from interlock.core.enforcement import posture_veto
from interlock.core.model import Action, Agent, Operation

FORBIDDEN = frozenset(
    json.loads((bundled_policy_dir() / "data.json").read_text())["interlock"]["policy"][
        "forbidden_flags"
    ]["postgres"]
)
LABELS = {
    "public.payroll.ssn": ["pii", "restricted"],
    "public.payroll.salary": ["financial"],
    "hr.People.Email": ["pii"],
}
ROUTINES = {
    "zap": (Routine("public", "zap", "v", False, "sql", "f"),),
    "calm": (Routine("public", "calm", "s", False, "c", "f"),),
    "lower": (
        Routine("pg_catalog", "lower", "i", False, "internal", "f"),
        Routine("public", "lower", "v", True, "plpgsql", "f"),
    ),
    "upper": (Routine("pg_catalog", "upper", "i", False, "internal", "f"),),
    "owned": (Routine("app", "owned", "s", True, "sql", "f"),),
    "nvl": (Routine("public", "nvl", "v", False, "plpgsql", "f"),),
}
C = SqlClassifier(Catalog.from_config(LABELS))
KNOWN = SqlClassifier(
    Catalog(Catalog.from_config(LABELS).labels, routines=ROUTINES, routines_known=True)
)


def denied(result: SqlClassification) -> bool:
    return bool(result.flags & FORBIDDEN)


# --- class 1: server-side files, programs, large objects, other servers ----------------

SERVER_FILE_STATEMENTS = [
    "COPY (SELECT 1) TO '/tmp/x'",
    "copy payroll(name) from '/etc/hostname'",
    "COPY payroll TO '/tmp/x' WITH (FORMAT csv)",
    "copy payroll to '/tmp/x' csv header",
    "COPY BINARY payroll TO '/tmp/x'",
    "copy payroll to $$/tmp/x$$",
    "copy payroll to E'/tmp/\\x78'",
    "copy payroll to U&'/tmp/\\0078'",
    "copy payroll from '/tmp/x' where ssn is null",
    "copy /* c */ payroll -- c\n to\n'/tmp/x'",
    "COPY payroll FROM PROGRAM 'id'",
    "copy (select 1) to program 'id'",
    "select pg_read_file('/etc/hostname')",
    "select pg_catalog.pg_read_file('/etc/hostname')",
    "select PG_CATALOG.PG_READ_BINARY_FILE('/etc/hostname')",
    'select "pg_catalog"."pg_read_file"(\'/etc/hostname\')',
    "select * from pg_ls_dir('.')",
    "select pg_ls_logdir()",
    "select * from pg_ls_waldir()",
    "select pg_ls_tmpdir()",
    "select pg_ls_archive_statusdir()",
    "select pg_stat_file('postgresql.conf')",
    "select pg_current_logfile()",
    "select pg_file_write('/tmp/x', 'y', false)",
    "select pg_file_rename('/tmp/x', '/tmp/y')",
    "select pg_file_unlink('/tmp/x')",
    "select pg_logdir_ls()",
    "select lo_import('/etc/hostname')",
    "select lo_export(1234, '/tmp/x')",
    "select lo_open(1234, 262144)",
    "select loread(0, 10)",
    "select lowrite(0, 'x')",
    "select lo_get(1234)",
    "select lo_put(1234, 0, 'x')",
    "select lo_create(0)",
    "select lo_creat(-1)",
    "select lo_unlink(1234)",
    "select lo_truncate(0, 1)",
    "select lo_from_bytea(0, 'x')",
    "select lo_lseek(0, 0, 0)",
    "select dblink('dbname=x', 'select 1')",
    "select dblink_exec('dbname=x', 'delete from t')",
    "select dblink_connect('c', 'dbname=x')",
    "select * from pg_hba_file_rules",
    "select * from pg_catalog.pg_file_settings",
    "select data from pg_largeobject",
    "LOAD '/tmp/evil.so'",
    "load 'auto_explain'",
    "select get_raw_page('payroll', 0)",
    "select x from generate_series(1, 2) x where pg_read_file('/x') is not null",
    "with t as (select pg_read_file('/x') f) select f from t",
    "select (select pg_read_file('/x'))",
    "select 1 union select length(pg_read_file('/x'))",
    "select ('/etc/hostname'::text).pg_read_file",
    "select t.pg_read_file from (select '/etc/hostname'::text) t(pg_read_file)",
    "call p(pg_read_file('/x'))",
    "copy payroll from stdin where pg_read_file('/x') is null",
    "select pg_background_launch('select 1')",
    "select 1 # 2, pg_read_file('/x')",
]


@pytest.mark.parametrize("sql", SERVER_FILE_STATEMENTS)
def test_server_side_file_access_is_forbidden(sql: str) -> None:
    assert denied(C.classify(sql)), C.classify(sql).flags


@pytest.mark.parametrize(
    "sql",
    [
        "copy payroll to stdout",
        "COPY payroll (name) TO STDOUT WITH (FORMAT csv, HEADER)",
        "copy (select name from payroll) to stdout csv",
        "copy payroll from stdin",
        "COPY payroll FROM STDIN (FORMAT binary)",
    ],
)
def test_copy_through_the_client_stays_allowed(sql: str) -> None:
    result = C.classify(sql)
    assert "copy" in result.flags
    assert not denied(result), result.flags


@pytest.mark.parametrize(
    ("sql", "operation", "labels"),
    [
        ("COPY BINARY payroll TO STDOUT", Operation.READ, {"pii", "financial"}),
        ("copy payroll to stdout with binary", Operation.READ, {"pii", "financial"}),
        ("copy public.payroll from stdin", Operation.WRITE, set()),
        ("COPY BINARY payroll FROM STDIN", Operation.WRITE, set()),
        ("copy payroll (ssn) to stdout (format csv, force_quote (ssn))", Operation.READ, {"pii"}),
    ],
)
def test_copy_direction_and_labels_whatever_the_layout(
    sql: str, operation: Operation, labels: set[str]
) -> None:
    result = C.classify(sql)
    assert result.operation is operation
    assert labels <= result.labels


@pytest.mark.parametrize(
    "sql", ["insert into lo_data (a) values (1)", "select dblink_url from servers"]
)
def test_tables_and_columns_named_like_a_family_are_not_calls(sql: str) -> None:
    assert not denied(C.classify(sql))


# --- class 2: names as the server reads them -------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        'SELECT U&"\\0073sn" FROM payroll',
        'select U&"\\+000073sn" from payroll',
        "select U&\"!0073!0073n\" UESCAPE '!' from payroll",
        'select "SSN" from payroll',
        "select SSN from PAYROLL",
        'select "ssn" from "public"."payroll"',
        'select p.U&"s\\0073n" from payroll p',
        'select * from U&"p\\0061yroll"',
        'select ssn from payroll as U&"p"',
        'select "Email" from hr."People"',
        "select email from HR.PEOPLE",
    ],
)
def test_respelled_names_still_carry_their_labels(sql: str) -> None:
    result = C.classify(sql)
    assert {"pii"} <= result.labels, result


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT U&\"pg\\005Fread\\005Ffile\"('/etc/hostname')",
        "select U&\"pg!005Fread!005Ffile\" UESCAPE '!' ('/etc/hostname')",
        "select \"PG_READ_FILE\"('/etc/hostname')",
        "select pg_catalog.U&\"pg_ls_di\\0072\"('.')",
        "select U&\"lo\\005fimport\"('/etc/hostname')",
        "select set_config(U&'rol\\0065', 'x', false)",
        "select set_config(E'\\x72ole', 'x', false)",
        "select set_config($$role$$, 'x', false)",
        "select set_config('ro'\n'le', 'x', false)",
        'SET U&"rol\\0065" = x',
        'set "Search_Path" to evil',
        "SET SCHEMA 'evil'",
        "set names 'latin1'",
        "RESET default_transaction_read_only",
        "SET LOCAL default_transaction_read_only = off",
        "select 1; SET SESSION AUTHORIZATION bob",
    ],
)
def test_respelled_forbidden_names_are_still_forbidden(sql: str) -> None:
    assert denied(C.classify(sql)), C.classify(sql)


def test_unqualified_tables_may_be_any_schemas() -> None:
    """The default search_path starts with "$user": `payroll` may be app.payroll."""
    classifier = SqlClassifier(Catalog.from_config({"app.payroll.ssn": ["pii"]}))
    assert classifier.classify("select ssn from payroll").labels == {"pii"}
    assert classifier.classify("select ssn from public.payroll").labels == frozenset()
    assert classifier.classify("select table_to_xml('payroll', true, false, '')").labels == {"pii"}


def test_identifiers_are_truncated_like_the_server() -> None:
    catalog = Catalog.from_config({"public.t." + "c" * 63: ["pii"]})
    long_name = "c" * 63 + "_ignored_by_the_server"
    result = SqlClassifier(catalog).classify(f"select {long_name} from t")  # noqa: S608
    assert result.labels == {"pii"}


# --- class 3: SQL in strings, whole tables, unattributable outputs ---------------------


@pytest.mark.parametrize(
    ("sql", "labels"),
    [
        ("select * from ts_stat('select ssn::tsvector from payroll')", {"pii"}),
        ("select * from ts_stat($$select salary::text::tsvector from payroll$$)", {"financial"}),
        ("select query_to_xml('select ssn from payroll', true, false, '')", {"pii"}),
        ("select query_to_xmlschema('select ssn from payroll', true, false, '')", {"pii"}),
        (
            "select ts_rewrite('a'::tsquery, 'select ssn::tsquery, ''b''::tsquery from payroll')",
            {"pii"},
        ),
        (
            "select query_to_xml('select query_to_xml(''select ssn from payroll'', true, "
            "false, '''')', true, false, '')",
            {"pii"},
        ),
        ("select table_to_xml('payroll', true, false, '')", {"pii", "financial"}),
        ("select table_to_xml('public.payroll'::regclass, true, false, '')", {"pii", "financial"}),
        ("select table_to_xml_and_xmlschema(U&'p\\0061yroll', true, false, '')", {"pii"}),
        ("select schema_to_xml('public', true, false, '')", {"pii", "financial"}),
        ("select database_to_xml(true, false, '')", {"pii", "financial"}),
        ("SELECT ssn FROM payroll UNION ALL SELECT 'x'", {"pii"}),
        ("select 'x' intersect select ssn from payroll", {"pii"}),
        ("select c from payroll as t(a, b, c)", {"pii"}),
        ("select t.c from payroll t(a, b, c)", {"pii"}),
        ("select x from payroll p, lateral (select p.ssn as x) s", {"pii"}),
        ("select x from payroll p join lateral (select p.ssn) s(x) on true", {"pii"}),
        ("with d(x) as (select ssn from payroll) select x from d", {"pii"}),
        ("select row_to_json(p) from payroll p", {"pii"}),
        ("select ssn(p) from payroll p", {"pii"}),
        ("select (p).ssn from payroll p", {"pii"}),
        ("select p::text from payroll p", {"pii"}),
        ("select (select ssn from payroll limit 1)", {"pii"}),
        ("select array(select ssn from payroll)", {"pii"}),
        ("select most_common_vals from pg_stats where tablename = 'payroll'", {"pii"}),
        ("select p.to_jsonb from payroll p", {"pii", "financial"}),
        ("select payroll.row_to_json from payroll", {"pii", "financial"}),
        ("select v from payroll p, jsonb_each_text(to_jsonb(p)) as j(k, v)", {"pii"}),
        ("select ssn into t2 from payroll", {"pii"}),
        ("select ssn from payroll, generate_series(1, 2)", {"pii"}),
        ("select ssn from payroll, (select 1) s", {"pii"}),
    ],
)
def test_everything_a_statement_may_read_is_in_its_labels(sql: str, labels: set[str]) -> None:
    result = C.classify(sql)
    assert not denied(result), result.flags
    assert labels <= result.labels


@pytest.mark.parametrize(
    "sql",
    [
        "select * from ts_stat('select ssn::tsvector from payroll')",
        "select query_to_xml('select ssn from payroll', true, false, '')",
        "select table_to_xml('payroll', true, false, '')",
        "select database_to_xml(true, false, '')",
        "SELECT ssn FROM payroll UNION ALL SELECT 'x'",
        "select 1 as a except select 2",
        "select most_common_vals from pg_stats",
        "values ((select ssn from payroll limit 1))",
        "update other set a = (select ssn from payroll limit 1) returning a",
        "insert into other select ssn from payroll returning a",
    ],
)
def test_unattributable_outputs_have_unknown_lineage(sql: str) -> None:
    assert all(s.output_labels is None for s in C.classify(sql).statements)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM ts_stat('select to_tsvector(pg_read_file(''/etc/hostname''))')",
        "select query_to_xml('copy payroll to ''/tmp/x''', true, false, '')",
        "select ts_stat(current_query())",
        "select * from ts_stat($1)",
        "select query_to_xml('select ' || 'ssn from payroll', true, false, '')",
        "select query_to_xml(q, true, false, '') from (select 'select 1' q) s",
        "select table_to_xml(16384, true, false, '')",
        "select table_to_xml('16384', true, false, '')",
        "select table_to_xml(t::regclass, true, false, '') from (select 'payroll' t) s",
        "select cursor_to_xml('c', 10, true, false, '')",
        "select query_to_xml('select 1; select 2''', true, false, '')",
        "select query_to_xml('do $$ begin end $$', true, false, '')",
        "select cron.schedule('* * * * *', 'delete from payroll')",
        "select ('select ssn::tsvector from payroll'::text).ts_stat",
        "select ('dbname=x'::text).dblink_connect",
    ],
)
def test_sql_text_that_cannot_be_read_or_is_forbidden_is_denied(sql: str) -> None:
    assert denied(C.classify(sql)), C.classify(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "select x from unnest(array(select ssn from payroll)) x",
        "select v from payroll p, jsonb_each_text(to_jsonb(p)) as j(k, v)",
        "select p.to_jsonb from payroll p",
        "select j from payroll p, lateral to_jsonb(p) j",
    ],
)
def test_outputs_computed_from_labelled_inputs_carry_them(sql: str) -> None:
    (statement,) = C.classify(sql).statements
    assert statement.output_labels is not None
    assert "pii" in statement.output_labels[0]


def test_select_into_creates_a_table() -> None:
    result = C.classify("select ssn into t2 from payroll")
    assert result.operation is Operation.DDL
    assert "public.t2" in result.statements[0].writes


def test_a_write_inside_sql_text_is_a_write() -> None:
    result = C.classify("select query_to_xml('delete from payroll returning ssn', true, false, '')")
    assert result.operation is Operation.WRITE
    assert "public.payroll" in result.statements[0].writes
    assert "pii" in result.labels


# --- class 4: user functions and transaction modes -------------------------------------


@pytest.mark.parametrize(
    ("sql", "flags"),
    [
        ("SELECT zap()", {"volatile_function"}),
        ("select public.zap()", {"volatile_function"}),
        ("select * from zap()", {"volatile_function"}),
        ('select "zap"()', {"volatile_function"}),
        ('select U&"z\\0061p"()', {"volatile_function"}),
        ("select 1 from payroll where zap() is null", {"volatile_function"}),
        ("select lower('x')", {"volatile_function", "security_definer"}),
        ("select newly_created()", {"unknown_function"}),
        ("select pg_catalog.zap()", {"unknown_function"}),
        ("select p.zap from payroll p", {"volatile_function"}),
        ("select (p).zap from payroll p", {"volatile_function"}),
        ("select nextval('s')", {"writing_function"}),
        ("select setval('s', 1)", {"writing_function"}),
        ("select ('s'::regclass).nextval", {"writing_function"}),
        ("select nvl(1, 2)", {"volatile_function"}),
    ],
)
def test_calls_that_may_write_are_exec(sql: str, flags: set[str]) -> None:
    result = KNOWN.classify(sql)
    assert result.operation is Operation.EXEC
    assert flags <= result.flags
    assert result.details()["effects"] == ["write"]


@pytest.mark.parametrize(
    "sql",
    ["select upper('x')", "select calm()", "select owned()", "select now(), count(*) from payroll"],
)
def test_calls_that_cannot_write_stay_reads(sql: str) -> None:
    result = KNOWN.classify(sql)
    assert result.operation is Operation.READ
    assert "effects" not in result.details()


def test_user_written_functions_may_read_anything() -> None:
    result = KNOWN.classify("select owned()")
    assert {"pii", "financial"} <= result.labels
    assert result.statements[0].output_labels is None
    assert "security_definer" in result.flags


def test_without_function_knowledge_unknown_functions_are_exec() -> None:
    assert C.classify("select zap()").operation is Operation.EXEC
    assert C.classify("select lower(name) from payroll").operation is Operation.READ
    assert C.classify("select pg_sleep(0)").operation is Operation.READ


@pytest.mark.parametrize(
    "sql",
    [
        "BEGIN READ WRITE",
        "begin transaction read write",
        "BEGIN WORK ISOLATION LEVEL SERIALIZABLE READ WRITE",
        "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ WRITE",
        "start  transaction\n read\twrite , deferrable",
        "SET TRANSACTION READ WRITE",
        "set transaction isolation level read committed,read write",
        "begin /* x */ read -- y\n write",
    ],
)
def test_read_write_transactions_are_writes(sql: str) -> None:
    result = C.classify(sql)
    assert result.operation is Operation.WRITE
    assert result.statements[0].settings == ("transaction_read_only",)
    assert not denied(result)


@pytest.mark.parametrize(
    "sql",
    [
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "set session characteristics as transaction isolation level serializable, read write",
        "SET SESSION CHARACTERISTICS AS TRANSACTION bogus",
        "set session characteristics",
        "BEGIN READ MAYBE",
        "RESET ALL",
        "DISCARD ALL",
        "discard   All",
        "reset default_transaction_read_only",
        "set default_transaction_read_only = off",
        "SET SESSION default_transaction_read_only TO off",
        "select set_config('default_transaction_read_only', 'off', false)",
        "select set_config('transaction_read_only', 'off', true)",
    ],
)
def test_undoing_the_read_only_wall_is_forbidden(sql: str) -> None:
    assert denied(C.classify(sql)), C.classify(sql)


@pytest.mark.parametrize(
    "sql",
    ["BEGIN", "begin read only", "START TRANSACTION ISOLATION LEVEL SERIALIZABLE", "commit"],
)
def test_other_transactions_stay_reads(sql: str) -> None:
    result = C.classify(sql)
    assert result.operation is Operation.READ
    assert not denied(result)


# --- properties: generated respellings -------------------------------------------------


def _case(draw: st.DrawFn, word: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c for c in word)


@st.composite
def _name(draw: st.DrawFn, name: str) -> str:
    """`name` spelled any way the server reads as `name`."""
    how = draw(st.sampled_from(["plain", "case", "quoted", "u&", "u&esc", "long"]))
    if how == "case":
        return _case(draw, name)
    if how == "quoted":
        return f'"{name}"'
    if how in ("u&", "u&esc"):
        escape = "\\" if how == "u&" else draw(st.sampled_from(list("!#~*%")))
        body = "".join(
            f"{escape}{ord(c):04x}"
            if draw(st.booleans())
            else f"{escape}+{ord(c):06X}"
            if draw(st.booleans())
            else c
            for c in name
        )
        clause = "" if escape == "\\" else f" UESCAPE '{escape}'"
        return f'{draw(st.sampled_from(["U", "u"]))}&"{body}"{clause}'
    return name


@st.composite
def _space(draw: st.DrawFn) -> str:
    return draw(st.sampled_from([" ", "\n", "\t ", " /* c */ ", " /* /* n */ */ ", " -- c\n"]))


FORBIDDEN_SHAPES = (
    "select {c}",
    "select 1 where {c} is null",
    "with q as (select {c} v) select v from q",
    "select 1 union all select length({c})",
    "select (select {c})",
    "select * from ts_stat('select to_tsvector({q})')",
    "select query_to_xml('select {q}', true, false, '')",
    "select coalesce({c}, '')::text",
)


@st.composite
def forbidden_statement(
    draw: st.DrawFn,
    functions: tuple[str, ...] = ("pg_read_file", "pg_ls_dir", "lo_import", "dblink", "lo_get"),
    argument: str = "'x'",
    shapes: tuple[str, ...] = (
        *FORBIDDEN_SHAPES,
        "select length({c}){s}from payroll",
        "copy (select {c}) to stdout",
    ),
) -> str:
    """A call of a forbidden function, respelled and wrapped."""
    call = f"{draw(_name(draw(st.sampled_from(functions))))}{draw(st.sampled_from(['', ' ']))}"
    call += f"({argument})"
    if draw(st.booleans()):
        call = f"{draw(_name('pg_catalog'))}.{call}"
    shape = draw(st.sampled_from(shapes))
    return shape.format(c=call, q=call.replace("'", "''"), s=draw(_space()))


@settings(max_examples=300, deadline=None)
@given(forbidden_statement())
def test_property_respelled_forbidden_calls_are_denied(sql: str) -> None:
    result = C.classify(sql)
    assert denied(result), (sql, result.flags)


@st.composite
def labelled_read(draw: st.DrawFn) -> tuple[str, frozenset[str]]:
    column = draw(st.sampled_from(["ssn", "salary"]))
    labels = frozenset(LABELS[f"public.payroll.{column}"])
    col = draw(_name(column))
    table = draw(_name("payroll"))
    if draw(st.booleans()):
        table = f"{draw(_name('public'))}.{table}"
    sp = draw(_space())
    alias = draw(st.sampled_from(["p", "P", '"p"', "x"]))
    shape = draw(
        st.sampled_from(
            [
                "select {c}{s}from {t}",
                "select {a}.{c} from {t} {a}",
                "select {c}::text as v from {t}",
                "select upper({c}::text) from {t}",
                "select v from (select {c} as v from {t}) sub",
                "with cte as (select {c} as v from {t}) select v from cte",
                "select {c} from {t} union all select null",
                "select c3 from {t} as al(c1, c2, c3)",
                "select row_to_json({a}) from {t} {a}",
                "select (select {c} from {t} limit 1)",
                "select v from {t} {a}, lateral (select {a}.{c} as v) l",
                "select * from ts_stat('select {q}::text::tsvector from {qt}')",
                "select query_to_xml('select {q} from {qt}', true, false, '')",
                "select coalesce({c}::text, '') from {t}",
                "select {c} from {t}, generate_series(1, 2)",
                "select {c} from {t} cross join (select 1) s",
                "select {c} from {t} join lateral (select 1 as one) l on true",
                "select {c} from {t}, unnest(array[1, 2]) u",
                "select {a}.to_jsonb from {t} {a}",
                "select x from unnest(array(select {c} from {t})) x",
                "select {c} from {t} where exists (select 1 from {t})",
            ]
        )
    )
    sql = shape.format(
        c=col, t=table, s=sp, a=alias, q=col.replace("'", "''"), qt=table.replace("'", "''")
    )
    return sql, labels


@settings(max_examples=300, deadline=None)
@given(labelled_read())
def test_property_respelled_labelled_reads_carry_their_labels(
    case: tuple[str, frozenset[str]],
) -> None:
    sql, labels = case
    result = C.classify(sql)
    if "unparsed" in result.flags:
        return
    assert labels <= result.labels, (sql, result.labels)
    for statement in result.statements:
        if statement.output_labels is not None:
            # Attributed: some output position carries the labels.
            assert any(labels <= out for out in statement.output_labels), (sql, statement)


@st.composite
def _modes(draw: st.DrawFn) -> str:
    """A transaction_mode_list that includes READ WRITE, in any layout."""
    modes = draw(
        st.lists(
            st.sampled_from(
                [
                    "isolation level serializable",
                    "isolation level read committed",
                    "isolation level repeatable read",
                    "deferrable",
                    "not deferrable",
                ]
            ),
            max_size=2,
        )
    )
    modes.insert(draw(st.integers(0, len(modes))), "read write")
    out = []
    for i, mode in enumerate(modes):
        words = [_case(draw, w) for w in mode.split()]
        out.append(draw(_space()).join(words))
        if i < len(modes) - 1:
            out.append(draw(st.sampled_from([",", " , ", " ", "/**/,"])))
    return "".join(out)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["begin", "begin work", "begin transaction", "start transaction"]),
    _modes(),
    st.data(),
)
def test_property_read_write_transactions_are_writes(
    opening: str, modes: str, data: st.DataObject
) -> None:
    opening = data.draw(_space()).join(_case(data.draw, w) for w in opening.split())
    sql = f"{opening}{data.draw(_space())}{modes}"
    result = C.classify(sql)
    assert result.operation is Operation.WRITE, sql
    assert "transaction_read_only" in result.statements[0].settings
    session = C.classify(f"set session characteristics as transaction {modes}")
    assert denied(session), modes


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_property_respelled_volatile_calls_are_exec(data: st.DataObject) -> None:
    call = f"{data.draw(_name('zap'))}()"
    if data.draw(st.booleans()):
        call = f"{data.draw(_name('public'))}.{call}"
    shape = data.draw(
        st.sampled_from(
            [
                "select {c}",
                "select 1 where {c} = 1",
                "select * from {c}",
                "with q as (select {c} v) select v from q",
                "select 1 union select {c}",
                "select coalesce({c}, 0)::text",
                "select * from ts_stat('select {q}::text::tsvector')",
                "select p.zap from payroll p",
            ]
        )
    )
    sql = shape.format(c=call, q=call.replace("'", "''"))
    result = KNOWN.classify(sql)
    assert result.operation is Operation.EXEC or "unparsed" in result.flags, sql


@pytest.mark.parametrize(
    ("sql", "setting", "operation"),
    [
        ("SET SCHEMA 'evil'", "search_path", Operation.ADMIN),
        ("set names 'latin1'", "client_encoding", Operation.ADMIN),
        ("SET TIME ZONE 'UTC'", "timezone", Operation.READ),
        ("set local statement_timeout = 5", "statement_timeout", Operation.READ),
        ('set "Work_Mem" to 1000', "work_mem", Operation.READ),
        ("set myapp.user_id = 5", "myapp.user_id", Operation.READ),
        ("set session authorization default", "session_authorization", Operation.ADMIN),
        ("RESET SESSION AUTHORIZATION", "session_authorization", Operation.ADMIN),
        ("set session role admin", "role", Operation.ADMIN),
        ("set xml option document", "xmloption", Operation.READ),
        ("set search_path from current", "?", Operation.ADMIN),
    ],
)
def test_settings_are_named_as_the_server_names_them(
    sql: str, setting: str, operation: Operation
) -> None:
    (statement,) = C.classify(sql).statements
    assert statement.settings == (setting,)
    assert statement.operation is operation


def test_a_labelled_table_named_where_the_parse_saw_no_table_counts_as_read() -> None:
    """The safety net under the parser: the name is there, so the table may be read."""
    (statement,) = C.classify("select 1 from other where payroll is null").statements
    assert {"pii", "financial"} <= statement.labels
    assert statement.output_labels is None


@pytest.mark.parametrize(
    ("sql", "vetoed"),
    [
        ("SELECT zap()", True),
        ("select newly_created()", True),
        ("BEGIN READ WRITE", True),
        ("select upper(name) from payroll", False),
        ("begin read only", False),
    ],
)
def test_read_only_posture_refuses_what_may_write(sql: str, vetoed: bool) -> None:
    """The classification as the Postgres proxy turns it into an Action: exec carries
    effects ["write"], which the posture check reads (as it does for SSH commands)."""
    result = KNOWN.classify(sql)
    action = Action(Agent("reporter"), "postgres", result.operation, "db", result.details())
    veto = posture_veto(action, Posture(restrictions=frozenset({"read_only"})))
    assert (veto is not None) is vetoed, (result.operation, result.details())
