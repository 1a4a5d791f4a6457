"""The result-side wall: labelled values are masked by where the server says each result
column comes from, whatever the SQL looked like, in every client, format and COPY form."""

from __future__ import annotations

import asyncio
import struct

import asyncpg
import pg8000.native
import psycopg
import pytest

from tests.proxies.postgres.conftest import TOKEN, Proxied

pytestmark = pytest.mark.integration

SECRETS = (b"ann", b"bob")
"""The labelled (pii) values of payroll.name in the fixture."""

# Each reads payroll.name (labelled pii, masked for the reporter) in a shape whose lineage
# a parser can lose: renamed in FROM, through LATERAL, a set operation, a subquery star,
# a CTE, a whole row, a spelling the classifier may not resolve.
ROUTED = [
    "select c from payroll as t(a, c) order by a",
    "select x.n from payroll p, lateral (select p.name as n) x order by p.id",
    "select name from payroll union all select 'x' order by 1",
    "select * from (select id, name from payroll) s order by id",
    "with w as (select name as n from payroll) select n from w",
    "select (p).name from (select p from payroll p) q",
    'select U&"n\\0061me" from payroll',
    'select "NAME" from (select name as "NAME" from payroll) s',
    "select name::text || '' from payroll",
    # A whole row: the server names the table with column 0.
    "select p from payroll p order by p.id",
    "select o.id, p from payroll p join orders o using (id) order by o.id",
]


def leaked(values: object) -> bool:
    text = repr(values).encode()
    return any(s in text for s in SECRETS)


@pytest.mark.parametrize("sql", ROUTED)
async def test_asyncpg_binary_results_hide_routed_values(proxied: Proxied, sql: str) -> None:
    conn = await asyncpg.connect(proxied.dsn())
    try:
        try:
            rows = await conn.fetch(sql)
        except asyncpg.InsufficientPrivilegeError:
            return  # refused outright: also sound
        assert rows, "the statement ran and returned rows"
        assert not leaked([tuple(r) for r in rows])
    finally:
        await conn.close()


@pytest.mark.parametrize("sql", ROUTED)
async def test_psycopg_text_and_binary_results_hide_routed_values(
    proxied: Proxied, sql: str
) -> None:
    def run() -> list[object]:
        out: list[object] = []
        with psycopg.connect(proxied.dsn(), autocommit=True) as conn:
            for binary in (False, True):
                try:
                    out.append(conn.cursor(binary=binary).execute(sql).fetchall())
                except psycopg.errors.InsufficientPrivilege:
                    out.append("refused")
            try:
                out.append(conn.cursor().execute(sql, prepare=False).fetchall())
            except psycopg.errors.InsufficientPrivilege:
                out.append("refused")
        return out

    results = await asyncio.to_thread(run)
    assert not leaked(results)


@pytest.mark.parametrize("sql", ROUTED)
async def test_pg8000_and_psql_hide_routed_values(proxied: Proxied, sql: str) -> None:
    def run() -> object:
        conn = pg8000.native.Connection(
            "reporter",
            host=proxied.host,
            port=proxied.port,
            database=proxied.database,
            password=TOKEN,
        )
        try:
            return conn.run(sql)
        except pg8000.native.DatabaseError as exc:
            return "refused" if "42501" in str(exc) else exc
        finally:
            conn.close()

    got = await asyncio.to_thread(run)
    assert not isinstance(got, Exception), got
    assert not leaked(got)
    shown = await asyncio.to_thread(proxied.psql, sql)
    assert not leaked(shown.stdout)


async def test_extended_protocol_without_describe_is_described_by_the_proxy(
    proxied: Proxied,
) -> None:
    """pg8000 and asyncpg describe statements themselves; a client that sends only
    Parse/Bind/Execute gets its rows masked all the same (the proxy asks first)."""
    from interlock.proxies.postgres import messages as m
    from interlock.proxies.postgres.codec import BackendReader, decode_data_row

    reader, writer = await asyncio.open_connection(proxied.host, proxied.port)
    try:
        await _login(reader, writer, proxied.database)
        writer.write(
            m.Parse("", "select i, c from payroll as t(i, c) order by i", ()).encode()
            + m.Bind("", "", (), (), ()).encode()
            + m.Execute("").encode()
            + m.Sync().encode()
        )
        backend = BackendReader()
        kinds: list[bytes] = []
        rows: list[tuple[bytes | None, ...]] = []
        while True:
            msg = backend.next()
            if msg is None:
                backend.feed(await asyncio.wait_for(reader.read(65536), 10))
                continue
            encoded = msg.encode()
            kinds.append(encoded[:1])
            if encoded[:1] == b"D":
                rows.append(decode_data_row(encoded[5:]).values)
            if encoded[:1] == b"Z":
                break
        assert kinds == [b"1", b"2", b"D", b"D", b"C", b"Z"], "the client sees only its answers"
        assert rows == [(b"1", None), (b"2", None)]
    finally:
        writer.close()


async def _login(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, database: str) -> None:
    """SCRAM login as the reporter with a bare socket (no client library)."""
    import scramp

    from interlock.proxies.postgres import messages as m
    from interlock.proxies.postgres.codec import BackendReader

    writer.write(m.StartupMessage({"user": "reporter", "database": database}).encode())
    backend = BackendReader()

    async def next_msg() -> m.Message:
        while (msg := backend.next()) is None:
            backend.feed(await asyncio.wait_for(reader.read(65536), 10))
        return msg

    client = scramp.ScramClient(["SCRAM-SHA-256"], "reporter", TOKEN)
    await next_msg()
    first = client.get_client_first().encode()
    body = b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first
    writer.write(b"p" + struct.pack("!I", len(body) + 4) + body)
    challenge = await next_msg()
    assert isinstance(challenge, m.Authentication)
    client.set_server_first(challenge.data.decode())
    final = client.get_client_final().encode()
    writer.write(b"p" + struct.pack("!I", len(final) + 4) + final)
    while not isinstance(await next_msg(), m.ReadyForQuery):
        pass


# --- COPY TO STDOUT: the same rule, in each format --------------------------------------


@pytest.mark.parametrize(
    ("command", "lines"),
    [
        ("\\copy payroll (id, name) to stdout", ["1\t\\N", "2\t\\N"]),
        (
            "\\copy (select id, name from payroll order by id) to stdout with (format csv)",
            ["1,", "2,"],
        ),
        (
            "\\copy (select id, name from payroll order by id) to stdout with (format csv, header)",
            ["id,name", "1,", "2,"],
        ),
        ("\\copy payroll (id, name) to stdout csv", ["1,", "2,"]),
        ("\\copy payroll (name, id) to stdout with delimiter '|'", ["\\N|1", "\\N|2"]),
        (
            "\\copy payroll (id, name) to stdout with (format text, null 'none')",
            ["1\tnone", "2\tnone"],
        ),
        (
            "\\copy (select 'a,\"b\"' || chr(10) || 'c' as t, name from payroll order by id)"
            " to stdout csv",
            ['"a,""b""', 'c",', '"a,""b""', 'c",'],
        ),
        (
            "\\copy (select name, 'x;y' from payroll order by id) to stdout"
            " with (format csv, delimiter ';', quote '''')",
            [";'x;y'", ";'x;y'"],
        ),
    ],
)
async def test_copy_to_stdout_masks_in_text_and_csv(
    proxied: Proxied, command: str, lines: list[str]
) -> None:
    shown = await asyncio.to_thread(proxied.psql, command)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == lines
    assert not leaked(shown.stdout)


async def test_copy_to_stdout_masks_in_binary(proxied: Proxied) -> None:
    def run() -> list[tuple[object, ...]]:
        with psycopg.connect(proxied.dsn(), autocommit=True) as conn:
            cur = conn.cursor()
            sql = (
                "copy (select id, name, salary from payroll order by id) to stdout (format binary)"
            )
            with cur.copy(sql) as copy:
                copy.set_types(["int4", "text", "numeric"])
                return list(copy.rows())

    rows = await asyncio.to_thread(run)
    assert [(r[0], r[1]) for r in rows] == [(1, None), (2, None)]
    assert [int(r[2]) for r in rows] == [100, 200], "unmasked columns stay whole"


async def test_copy_with_options_interlock_cannot_read_is_refused(proxied: Proxied) -> None:
    shown = await asyncio.to_thread(
        proxied.psql, "\\copy payroll (id, name) to stdout with (format csv, encoding 'LATIN1')"
    )
    assert "needs options interlock can read" in shown.stderr
    assert not leaked(shown.stdout)


# --- the read-only wall: the database refuses what the classifier missed ------------------

WALL_SETUP = """
    create table canary (n int);
    insert into canary values (0);
    create function bump() returns int language sql volatile
        as 'update canary set n = n + 1 returning n';
    create view bumped as select bump() as n;
"""


async def canary(proxied: Proxied) -> int:
    owner = await asyncpg.connect(proxied.proxy.config.upstream)
    try:
        value = await owner.fetchval("select n from canary")
        assert isinstance(value, int)
        return value
    finally:
        await owner.close()


async def test_read_only_posture_makes_open_and_new_sessions_read_only_in_the_database(
    proxied: Proxied,
) -> None:
    owner = await asyncpg.connect(proxied.proxy.config.upstream)
    await owner.execute(WALL_SETUP)
    await owner.close()
    open_before = await asyncpg.connect(proxied.dsn())
    in_block = await asyncpg.connect(proxied.dsn())
    store = proxied.pdp.store
    try:
        # Through a view, the write is invisible to any parse of the statement text.
        assert await open_before.fetchval("select n from bumped") == 1
        block = in_block.transaction()
        await block.start()
        assert await in_block.fetchval("select 1") == 1
        await store.restrict("reporter", ["read_only"])
        for conn in (open_before, in_block):
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await conn.fetchval("select n from bumped")
        await block.rollback()
        assert await in_block.fetchval("select current_setting('transaction_read_only')") == "on"
        fresh = await asyncpg.connect(proxied.dsn())
        try:
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await fresh.fetchval("select n from bumped")
            assert await fresh.fetchval("select count(*) from payroll") == 2, "reads go on"
        finally:
            await fresh.close()
        assert await canary(proxied) == 1, "no write reached the table"
        for undo in (
            "set session characteristics as transaction read write",
            "SET  SESSION\nCHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
            "begin read write",
            "start transaction isolation level read committed, read write",
            "set default_transaction_read_only = off",
            "set transaction_read_only to off",
            "reset all",
            "discard all",
            "select set_config('default_transaction_read_only', 'off', false)",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await open_before.execute(undo)
        assert await open_before.fetchval("select current_setting('transaction_read_only')") == "on"
        await store.restore("reporter")
        await asyncio.sleep(0)
        assert await open_before.fetchval("select n from bumped") == 2, "restored: writes again"
    finally:
        await open_before.close()
        await in_block.close()


@pytest.mark.parametrize(
    "sql",
    [
        "select name::int from payroll",
        "select name::regclass from payroll",
        "select to_date(name, 'YYYY-MM-DD') from payroll",
        "select 1 / (length(name) - 3) from payroll",
        "select name::jsonb from payroll",
    ],
)
async def test_server_errors_of_statements_reading_masked_data_do_not_quote_it(
    proxied: Proxied, sql: str
) -> None:
    conn = await asyncpg.connect(proxied.dsn())
    try:
        with pytest.raises(asyncpg.PostgresError) as err:
            await conn.fetch(sql)
        assert not leaked(str(err.value)), str(err.value)
        assert "withheld" in str(err.value) or "interlock" in str(err.value)
        assert err.value.sqlstate not in ("", None)
        assert await conn.fetchval("select 1") == 1, "the session goes on"
    finally:
        await conn.close()


async def test_views_carry_the_labels_they_read_even_through_functions(
    proxied: Proxied,
) -> None:
    """No comment discovery configured: view lineage is read from the catalog anyway, and a
    view over a function of the database's own counts as reading every label."""
    owner = await asyncpg.connect(proxied.proxy.config.upstream)
    await owner.execute("""
        create view names_v as select id, name from payroll;
        create view names_vv as select id, name as n from names_v;
        create function names_f() returns setof text language sql stable
            as 'select name from payroll';
        create view names_fv as select names_f() as n;
    """)
    await owner.close()
    await proxied.proxy.catalog(proxied.proxy.upstream, reload=True)
    conn = await asyncpg.connect(proxied.dsn())
    try:
        for sql in (
            "select * from names_v order by id",
            "select n from names_vv order by id",
            "select * from names_fv",
        ):
            rows = await conn.fetch(sql)
            assert rows, sql
            assert not leaked([tuple(r) for r in rows]), sql
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "sql",
    [
        "insert into orders (id, total) select id + 100, length(name) from payroll",
        "create table copied as select name from payroll",
        "select name into copied2 from payroll",
        "create view leaky as select name from payroll",
        "update orders set total = length(p.name) from payroll p where p.id = orders.id",
        "with x as (insert into orders (id, total) select 500, length(name) from payroll"
        " returning 1) select 1",
    ],
)
async def test_masked_values_may_not_be_stored_where_they_could_be_read_back(
    proxied: Proxied, sql: str
) -> None:
    conn = await asyncpg.connect(proxied.dsn())
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(sql)
    finally:
        await conn.close()
    owner = await asyncpg.connect(proxied.proxy.config.upstream)
    try:
        assert await owner.fetchval("select count(*) from orders") == 20
        assert await owner.fetchval("select to_regclass('copied')") is None
        assert await owner.fetchval("select to_regclass('copied2')") is None
        assert await owner.fetchval("select to_regclass('leaky')") is None
    finally:
        await owner.close()


async def test_statistics_views_are_not_clean_columns(proxied: Proxied) -> None:
    """pg_stats holds sample values of every column (histogram bounds, most common
    values): its columns are no table column whose absence of labels means clean."""
    owner = await asyncpg.connect(proxied.proxy.config.upstream)
    await owner.execute("analyze payroll")
    await owner.close()
    await proxied.proxy.catalog(proxied.proxy.upstream, reload=True)

    def run() -> list[object]:
        with psycopg.connect(proxied.dsn(), autocommit=True) as conn:
            return conn.execute(
                "select attname, histogram_bounds from pg_stats"
                " where tablename = 'payroll' order by attname"
            ).fetchall()

    rows = await asyncio.to_thread(run)
    assert rows, "the statement ran and returned rows"
    assert not leaked(rows)


async def test_views_and_tables_holding_labelled_values_without_naming_the_column(
    proxied: Proxied,
) -> None:
    """Lineage the catalog's column dependencies do not show: a view over whole rows
    (pg_depend records no column for them), over PostgreSQL's functions that read a table
    by name or SQL text (pinned: pg_depend records nothing), a partition or inheritance
    child of a labelled table, a generated column computed from a labelled one."""
    owner = await asyncpg.connect(proxied.proxy.config.upstream)
    await owner.execute("""
        create view rows_json as select id, row_to_json(p) as doc from payroll p;
        create view rows_text as select p::text as t from payroll p;
        create materialized view rows_mat as select id, to_jsonb(p) as doc from payroll p;
        create view rows_xml as select table_to_xml('payroll', true, false, '') as x;
        create view rows_query as
            select query_to_xml('select name from payroll', true, false, '') as x;
        create table payroll_child () inherits (payroll);
        insert into payroll_child values (3, 'ann', 300);
        create table orders_shout (id int, name text,
            shout text generated always as (upper(name)) stored);
        insert into orders_shout (id, name) values (1, 'x');
        alter table payroll add column shout text generated always as (name || '!') stored;
    """)
    await owner.close()
    await proxied.proxy.catalog(proxied.proxy.upstream, reload=True)

    def run() -> dict[str, object]:
        out: dict[str, object] = {}
        with psycopg.connect(proxied.dsn(), autocommit=True) as conn:
            for sql in (
                "select * from rows_json",
                "select * from rows_text",
                "select * from rows_mat",
                "select * from rows_xml",
                "select * from rows_query",
                "select name from payroll_child",
                "select shout from payroll",
            ):
                out[sql] = conn.execute(sql).fetchall()
            out["clean"] = conn.execute("select shout from orders_shout").fetchall()
        return out

    results = await asyncio.to_thread(run)
    for sql, rows in results.items():
        assert rows, sql
        assert not leaked(rows), (sql, rows)
    assert results["clean"] == [("X",)], "a generated column of unlabelled ones is clean"
