"""Mask obligations: labelled values never reach the agent, whatever the query shape."""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest

from tests.proxies.postgres.conftest import HR_TOKEN, Proxied

pytestmark = pytest.mark.integration


async def test_pii_column_is_nulled_and_other_columns_kept(proxied: Proxied) -> None:
    conn = await asyncpg.connect(proxied.dsn())
    try:
        rows = await conn.fetch("select id, name, salary from payroll order by id")
        assert [(r["id"], r["name"], int(r["salary"])) for r in rows] == [
            (1, None, 100),
            (2, None, 200),
        ]
        derived = await conn.fetch("select upper(name) || '!' as shout, id from payroll")
        assert all(r["shout"] is None for r in derived)
        whole = await conn.fetch("select row_to_json(p) as j from payroll p")
        assert all(r["j"] is None for r in whole)
    finally:
        await conn.close()


async def test_star_is_masked_by_where_the_server_says_each_column_comes_from(
    proxied: Proxied,
) -> None:
    conn = await asyncpg.connect(proxied.dsn())
    try:
        rows = await conn.fetch("select * from payroll order by id")
        assert [tuple(r) for r in rows] == [(1, None, 100), (2, None, 200)]
        # A computed column next to a star over masked data: the parse cannot say what
        # flows into it, so it counts as labelled.
        rows = await conn.fetch("select p.*, 1 as one from payroll p order by id")
        assert [tuple(r) for r in rows] == [(1, None, 100, None), (2, None, 200, None)]
        assert await conn.fetchval("select count(*) from payroll") == 2
    finally:
        await conn.close()


async def test_simple_protocol_masks_only_the_statement_that_needs_it(
    proxied: Proxied,
) -> None:
    def run() -> list[list[tuple[object, ...]]]:
        with psycopg.connect(proxied.dsn(), autocommit=True) as conn:
            cur = conn.cursor()
            cur.execute(
                "select name from payroll order by id; select id from orders order by id limit 2",
                prepare=False,
            )
            first = cur.fetchall()
            assert cur.nextset()
            return [first, cur.fetchall()]

    first, second = await asyncio.to_thread(run)
    assert first == [(None,), (None,)]
    assert second == [(1,), (2,)]


async def test_pipeline_mode_masks_each_execute(proxied: Proxied) -> None:
    def run() -> tuple[object, object]:
        with psycopg.connect(proxied.dsn(), autocommit=True) as conn:
            with conn.pipeline():
                a = conn.execute("select id from orders where id = 1")
                b = conn.execute("select name, id from payroll where id = 1")
            return a.fetchone(), b.fetchone()

    a, b = await asyncio.to_thread(run)
    assert a == (1,)
    assert b == (None, 1)


async def test_copy_to_stdout_masks_named_columns_and_refuses_unnamed(
    proxied: Proxied,
) -> None:
    named = await asyncio.to_thread(proxied.psql, "\\copy payroll (id, name) to stdout")
    assert named.returncode == 0, named.stderr
    assert named.stdout.splitlines() == ["1\t\\N", "2\t\\N"]
    unnamed = await asyncio.to_thread(proxied.psql, "\\copy payroll to stdout")
    assert "needs the result columns named" in unnamed.stderr


async def test_an_exempt_role_sees_the_values(proxied: Proxied) -> None:
    conn = await asyncpg.connect(proxied.dsn(user="hr", password=HR_TOKEN))
    try:
        assert await conn.fetchval("select name from payroll where id = 1") == "ann"
    finally:
        await conn.close()


async def test_reading_restricted_data_taints_the_session(proxied: Proxied) -> None:
    conn = await asyncpg.connect(proxied.dsn())
    try:
        await conn.fetch("select salary from payroll")
    finally:
        await conn.close()
    view = await proxied.pdp.store.view("reporter", "x", proxied.pdp.clock())
    assert "restricted_data_read" in view.taints


async def test_server_side_cursors_are_masked(proxied: Proxied) -> None:
    """psycopg named cursors: DECLARE ... CURSOR, FETCH, CLOSE through the proxy."""

    def run() -> list[tuple[object, ...]]:
        with psycopg.connect(proxied.dsn()) as conn, conn.cursor(name="c1") as cur:
            cur.itersize = 1
            cur.execute("select id, name from payroll order by id")
            return list(cur)

    assert await asyncio.to_thread(run) == [(1, None), (2, None)]


async def test_fetch_from_an_unknown_cursor_is_refused(proxied: Proxied) -> None:
    conn = await asyncpg.connect(proxied.dsn())
    try:
        async with conn.transaction():
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="not declared"):
                await conn.execute("fetch all from mystery")
    finally:
        await conn.close()
