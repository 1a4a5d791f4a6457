"""The proxy's count of the server's batches stays the server's: through a COPY FROM STDIN
with a Sync in its data (the server ignores it), through cursors and portals that share
one name space, and a session whose client leaves while it waits for the server ends.

Found by review after the statement-name checks: a Sync sent during COPY (pg8000 sends
one) was counted as a batch the server never answered, and every later result was
matched to the statement before it, payroll names coming back unmasked."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import asyncpg
import pg8000.native
import pytest

from interlock.proxies.postgres import messages as m
from interlock.testing.services import Postgres
from tests.proxies.postgres.conftest import TOKEN, Proxied
from tests.proxies.postgres.test_statement_names import Wire, bind, errors, on_the_wire, values

pytestmark = pytest.mark.integration
MASKED_NAMES = b"\x00\x01\xff\xff\xff\xff" * 2
"""Both payroll names, masked (NULL)."""


async def test_a_sync_inside_copy_data_leaves_later_results_masked(proxied: Proxied) -> None:
    def script(wire: Wire) -> tuple[list[Any], list[Any]]:
        wire.send(m.Query("copy orders from stdin"), m.Sync())
        wire.send(m.CopyData(b"901\t1\n"), m.CopyDone())
        copied = wire.until(1)
        wire.send(m.Query("select name from payroll"))
        return copied, wire.until(1)

    copied, names = await on_the_wire(proxied, script)
    assert not errors(copied), errors(copied)
    assert values(names) == MASKED_NAMES


async def test_an_extended_copy_with_a_sync_in_its_data_leaves_later_results_masked(
    proxied: Proxied,
) -> None:
    """libpq's way: Parse, Bind, Execute and Sync, the data, CopyDone, Sync."""

    def script(wire: Wire) -> tuple[list[Any], list[Any]]:
        wire.send(m.Parse("", "copy orders from stdin", ()), bind("", ""), m.Execute("", 0))
        wire.send(m.Sync(), m.CopyData(b"902\t1\n"), m.CopyDone(), m.Sync())
        copied = wire.until(1)
        wire.send(m.Query("select 'x'"), m.Query("select upper(name) from payroll"))
        return copied, wire.until(2)

    copied, after = await on_the_wire(proxied, script)
    assert not errors(copied), errors(copied)
    assert b"ANN" not in values(after)
    assert values(after).startswith(b"\x00\x01\x00\x00\x00\x01x"), "'x' is the first result"


async def test_a_copy_that_fails_to_start_counts_the_sync_after_it(proxied: Proxied) -> None:
    """No COPY running (the table does not exist): the server answers the Sync."""

    def script(wire: Wire) -> tuple[list[Any], list[Any]]:
        wire.send(m.Query("copy no_such_table from stdin"), m.Sync())
        failed = wire.until(2)
        wire.send(m.Query("select name from payroll"))
        return failed, wire.until(1)

    failed, names = await on_the_wire(proxied, script)
    assert "no_such_table" in errors(failed)
    assert values(names) == MASKED_NAMES


async def test_pg8000_copy_then_a_masked_read(proxied: Proxied) -> None:
    """pg8000 sends a Sync during COPY FROM STDIN."""

    def run() -> list[Any]:
        conn = pg8000.native.Connection(
            "reporter",
            host=proxied.host,
            port=proxied.port,
            database=proxied.database,
            password=TOKEN,
        )
        try:
            conn.run("copy orders from stdin", stream=io.StringIO("903\t1\n"))
            conn.run("select 'x'")
            return list(conn.run("select upper(name) from payroll"))
        finally:
            conn.close()

    assert await asyncio.to_thread(run) == [[None], [None]]


@pytest.mark.parametrize("how", ["close", "commit"])
async def test_a_fetch_from_a_name_bound_since_its_declare_is_refused(
    proxied: Proxied, how: str
) -> None:
    """SQL FETCH reads protocol portals too: a cursor closed (or gone with its
    transaction) whose name a Bind then takes must not be read with the DECLARE's plan."""

    def script(wire: Wire) -> list[Any]:
        wire.send(m.Query("begin"), m.Query("declare c cursor for select 1"))
        out = wire.until(2)
        if how == "close":
            wire.send(m.Close("P", "c"), m.Sync())
        else:
            wire.send(m.Query("commit"), m.Query("begin"))
        out += wire.until(1 if how == "close" else 2)
        wire.send(m.Parse("s1", "select upper(name) from payroll", ()), bind("c", "s1"), m.Sync())
        out += wire.until(1)
        wire.send(m.Query("fetch all from c"))
        return out + wire.until(1)

    answers = await on_the_wire(proxied, script)
    assert b"ANN" not in values(answers)
    assert "not declared through interlock" in errors(answers)


async def test_a_cursor_with_hold_is_fetched_after_its_transaction(proxied: Proxied) -> None:
    """What psycopg's named cursors with `withhold` do: DECLARE ... WITH HOLD, then
    FETCH in later transactions."""

    def script(wire: Wire) -> list[Any]:
        wire.send(m.Query("declare h cursor with hold for select id from orders where id < 3"))
        wire.send(m.Query("fetch all from h"))
        return wire.until(2)

    answers = await on_the_wire(proxied, script)
    assert not errors(answers)
    assert values(answers) == b"\x00\x01\x00\x00\x00\x011\x00\x01\x00\x00\x00\x012"


async def test_a_client_that_leaves_while_its_session_waits_ends_the_session(
    proxied: Proxied, postgres: Postgres
) -> None:
    """The session waits for the server before an Execute of a portal from a batch the
    server is still working on (here: blocked on a lock another session holds). A
    client that goes away meanwhile must not leave the session, its transaction and
    its locks behind until the other session lets go."""
    holder = await asyncpg.connect(postgres.dsn(proxied.database))
    await holder.execute("begin; update orders set total = 0 where id = 1")
    try:

        def script(wire: Wire) -> None:
            wire.send(m.Query("begin"))
            wire.until(1)
            wire.send(m.Parse("s1", "update orders set total = 1 where id = 1", ()))
            wire.send(bind("p", "s1"), m.Execute("p", 0), m.Sync(), m.Execute("p", 0))
            time.sleep(0.5)  # the proxy now waits for the blocked batch

        await on_the_wire(proxied, script)  # and the client closes its connection
        waiting = "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
        for _ in range(50):
            if await holder.fetchval(waiting) == 0:
                break
            await asyncio.sleep(0.1)
        assert await holder.fetchval(waiting) == 0, "the waiting session was ended"
    finally:
        await holder.execute("rollback")
        await holder.close()


async def test_a_bind_of_a_name_whose_declare_failed_is_not_fetched_as_declared(
    proxied: Proxied,
) -> None:
    """The DECLARE was decided (and its plan kept) but failed on the server, so no
    cursor holds the name; a portal bound under it is another statement."""

    def script(wire: Wire) -> list[Any]:
        wire.send(m.Query("declare c cursor with hold for select 1 from no_such_table"))
        out = wire.until(1)
        wire.send(m.Query("begin"))
        out += wire.until(1)
        wire.send(m.Parse("s1", "select upper(name) from payroll", ()), bind("c", "s1"), m.Sync())
        out += wire.until(1)
        wire.send(m.Query("fetch all from c"))
        return out + wire.until(1)

    answers = await on_the_wire(proxied, script)
    assert b"ANN" not in values(answers)
    assert "not declared through interlock" in errors(answers)
