"""What a prepared statement's name runs on the server is what interlock decided for it.

The server keeps a named statement when a second Parse of the name fails ("already
exists"), keeps or drops the unnamed one depending on how a failed batch ended, and
holds statements SQL-level PREPARE made. A proxy that took the text of a Parse for what
the name will run could be made to check one statement while the server ran another.
Real libpq (psycopg's `pgconn`, pipeline mode included), a real server, and the
server's own table as the witness: a DO block let through in shadow mode inserts a row,
and after the agent is enforced that row must never appear.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import pq

from interlock.core.modes import Mode
from interlock.proxies.postgres import messages as m
from tests.proxies.postgres.conftest import Proxied
from tests.proxies.postgres.test_shadow import SHADOW, do_insert, rows

pytestmark = pytest.mark.integration


async def as_client(
    proxied: Proxied, script: Callable[[pq.abc.PGconn, Callable[[], None]], Any]
) -> Any:
    """Run `script` with a libpq connection through the proxy, in a thread (libpq
    blocks); the callable it gets switches the reporter to enforce mode."""
    loop = asyncio.get_running_loop()

    def enforce() -> None:
        switch = proxied.pdp.set_agent_mode("reporter", Mode.ENFORCE, "test")
        asyncio.run_coroutine_threadsafe(switch, loop).result(timeout=10)

    def run() -> Any:
        with psycopg.connect(proxied.dsn(), autocommit=True) as conn:
            return script(conn.pgconn, enforce)

    return await asyncio.to_thread(run)


def pipeline_results(pg: pq.abc.PGconn, syncs: int) -> list[pq.abc.PGresult]:
    """Send the pipeline, then every result up to its `syncs`-th sync. Nonblocking
    libpq calls only (psycopg's connections are nonblocking), waiting in `select`: a
    blocking one would hold the GIL from the proxy serving it in this very process."""
    while pg.flush():
        select.select([], [pg.socket], [], 1.0)
    out = []
    while syncs:
        while pg.is_busy():
            select.select([pg.socket], [], [], 1.0)
            pg.consume_input()
        result = pg.get_result()
        if result is None:
            continue  # the end of one query's results
        if result.status == pq.ExecStatus.PIPELINE_SYNC:
            syncs -= 1
        else:
            out.append(result)
    return out


def message(result: pq.abc.PGresult) -> str:
    return (result.error_message or b"").decode()


@pytest.mark.parametrize(
    ("make", "row", "refused"),
    [
        # Parsed in shadow mode: its Execute is decided again once the agent is enforced.
        (f"parse:{do_insert(501)}", 501, "decided again since it was prepared (enforce mode"),
        # PREPAREd in SQL: decided as the query it holds, but nothing keeps that decision
        # for the name, so a protocol-level Execute of it is refused.
        ("sql:prepare s1 as insert into orders values (701, 1)", 701, "not decided by interlock"),
    ],
    ids=["parse", "sql-prepare"],
)
async def test_a_second_parse_of_a_name_cannot_stand_in_for_the_statement_it_holds(
    proxied: Proxied, make: str, row: int, refused: str
) -> None:
    proxied.pdp.modes = SHADOW
    how, _, text = make.partition(":")

    def script(pg: pq.abc.PGconn, enforce: Callable[[], None]) -> list[str]:
        made = pg.prepare(b"s1", text.encode()) if how == "parse" else pg.exec_(text.encode())
        enforce()
        again = pg.prepare(b"s1", b"select 1")
        ran = pg.exec_prepared(b"s1", [])
        return [message(made), message(again), message(ran)]

    made, again, ran = await as_client(proxied, script)
    assert made == ""
    assert "already parsed in this session" in again
    assert refused in ran
    assert await rows(proxied, row) == [], "the server never ran the shadow-mode statement"


async def test_an_unnamed_parse_skipped_in_a_failed_batch_leaves_nothing_to_run(
    proxied: Proxied,
) -> None:
    """libpq pipeline mode sends the second batch before the first is answered: the
    unnamed Parse in the first is skipped after its error, so the server still holds the
    unnamed statement parsed before, which the second batch would execute."""
    proxied.pdp.modes = SHADOW

    def script(pg: pq.abc.PGconn, enforce: Callable[[], None]) -> list[str]:
        shadowed = pg.prepare(b"", do_insert(601).encode())
        enforce()
        pg.enter_pipeline_mode()
        pg.send_query_prepared(b"no_such_statement", [])  # fails: the batch is skipped
        pg.send_prepare(b"", b"select 1")
        pg.pipeline_sync()
        pg.send_query_prepared(b"", [])
        pg.pipeline_sync()
        seen = [message(shadowed), *(message(r) for r in pipeline_results(pg, 2))]
        pg.exit_pipeline_mode()
        return seen

    seen = await as_client(proxied, script)
    assert seen[0] == ""
    assert any("no_such_statement" in s for s in seen)
    assert any("not decided by interlock" in s for s in seen), seen
    assert await rows(proxied, 601) == []


async def test_a_client_that_parses_fresh_names_is_not_disturbed(proxied: Proxied) -> None:
    """What drivers do (psycopg, asyncpg and pgjdbc number their statements): a name per
    statement, the unnamed one parsed again at will, pipelines included."""

    def script(pg: pq.abc.PGconn, enforce: Callable[[], None]) -> list[Any]:
        out: list[Any] = []
        for i in range(3):
            assert pg.prepare(f"p{i}".encode(), b"select count(*) from orders").status == 1
            out.append(pg.exec_prepared(f"p{i}".encode(), []).get_value(0, 0))
            assert pg.prepare(b"", f"select {i}".encode()).status == 1
            out.append(pg.exec_prepared(b"", []).get_value(0, 0))
        pg.enter_pipeline_mode()
        pg.send_prepare(b"", b"select 41")
        pg.pipeline_sync()
        pg.send_query_prepared(b"", [])
        pg.pipeline_sync()
        out += [r.get_value(0, 0) for r in pipeline_results(pg, 2) if r.ntuples]
        pg.exit_pipeline_mode()
        return out

    got = await as_client(proxied, script)
    assert got == [b"20", b"0", b"20", b"1", b"20", b"2", b"41"]


class Wire:
    """A client that writes protocol messages as given, in any order libpq would not
    send them, on a connection psycopg logged in (through the proxy). Blocking socket
    calls, run in a thread: they release the GIL to the proxy in this process."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.sock = socket.socket(fileno=os.dup(self.conn.pgconn.socket))
        self.sock.setblocking(True)
        self.sock.settimeout(30)
        self.buf = b""

    def send(self, *msgs: Any) -> None:
        self.sock.sendall(b"".join(x.encode() for x in msgs))

    def until(self, readies: int) -> list[tuple[bytes, bytes]]:
        """The server's messages (type, body) up to its `readies`-th ReadyForQuery."""
        got = []
        while readies:
            while len(self.buf) < 5 or len(self.buf) < 1 + int.from_bytes(self.buf[1:5]):
                data = self.sock.recv(65536)
                assert data, "the proxy closed the connection"
                self.buf += data
            size = int.from_bytes(self.buf[1:5])
            kind, body, self.buf = self.buf[:1], self.buf[5 : 1 + size], self.buf[1 + size :]
            readies -= kind == b"Z"
            got.append((kind, body))
        return got

    def close(self) -> None:
        self.sock.close()
        self.conn.close()


async def on_the_wire(proxied: Proxied, script: Callable[[Wire], Any]) -> Any:
    def run() -> Any:
        wire = Wire(proxied.dsn())
        try:
            return script(wire)
        finally:
            wire.close()

    return await asyncio.to_thread(run)


def values(answers: list[tuple[bytes, bytes]]) -> bytes:
    """The bodies of every DataRow, joined: what the client read."""
    return b"".join(body for kind, body in answers if kind == b"D")


def errors(answers: list[tuple[bytes, bytes]]) -> str:
    return " | ".join(body.decode(errors="replace") for kind, body in answers if kind == b"E")


def bind(portal: str, statement: str) -> m.Bind:
    return m.Bind(portal, statement, (), (), ())


async def test_a_query_after_an_error_in_an_open_batch_keeps_later_results_masked(
    proxied: Proxied,
) -> None:
    """The server skips a Query sent after an error in an unfinished extended batch and
    sends it no ReadyForQuery. Before the proxy ended such a batch itself, the results
    that followed were matched to the wrong statements, and payroll names came back
    unmasked."""

    def script(wire: Wire) -> tuple[list[Any], list[Any]]:
        wire.send(bind("", "no_such_statement"), m.Query("select 1"), m.Sync())
        first = wire.until(2)
        wire.send(m.Query("select name from payroll"))
        return first, wire.until(1)

    first, names = await on_the_wire(proxied, script)
    assert "no_such_statement" in errors(first)
    assert values(first) == b"\x00\x01\x00\x00\x00\x011", "the Query ran, after the Sync"
    assert values(names) == b"\x00\x01\xff\xff\xff\xff" * 2, "both names masked (NULL)"


async def test_an_unnamed_statement_cannot_be_smuggled_past_a_query_in_a_failed_batch(
    proxied: Proxied,
) -> None:
    """A Query skipped inside a failed batch, then a pipelined Bind of the unnamed
    statement: the proxy must not lose track of which batch parsed what."""
    proxied.pdp.modes = SHADOW
    loop = asyncio.get_running_loop()

    def script(wire: Wire) -> list[Any]:
        wire.send(m.Parse("", do_insert(905), ()), m.Sync())
        out = wire.until(1)
        wire.send(bind("", "no_such_statement"), m.Query("select 1"), m.Sync())
        out += wire.until(2)
        enforce = proxied.pdp.set_agent_mode("reporter", Mode.ENFORCE, "test")
        asyncio.run_coroutine_threadsafe(enforce, loop).result(timeout=10)
        wire.send(bind("", "no_such_statement"), m.Parse("", "select 1", ()), m.Sync())
        wire.send(m.Sync(), bind("", ""), m.Execute("", 0), m.Sync())
        return out + wire.until(3)

    await on_the_wire(proxied, script)
    assert await rows(proxied, 905) == [], "the shadow-mode DO block never ran"


@pytest.mark.parametrize("drop", ["close", "failed"])
async def test_a_name_prepared_again_in_sql_runs_nothing_through_the_protocol(
    proxied: Proxied, drop: str
) -> None:
    """A name decided at Parse, then dropped on the server (Close, or a Parse the server
    failed), then PREPAREd in SQL to read payroll: a protocol Bind of the name would run
    the new statement under the old decision's (empty) masks."""

    def script(wire: Wire) -> list[Any]:
        if drop == "close":
            wire.send(m.Parse("s1", "select 1", ()), m.Sync(), m.Close("S", "s1"), m.Sync())
            out = wire.until(2)
        else:
            wire.send(m.Parse("s1", "select 1 from no_such_table", ()), m.Sync())
            out = wire.until(1)
        wire.send(m.Query("prepare s1 as select name from payroll"))
        out += wire.until(1)
        wire.send(bind("", "s1"), m.Execute("", 0), m.Sync())
        return out + wire.until(1)

    answers = await on_the_wire(proxied, script)
    assert b"ann" not in values(answers)
    assert "not decided by interlock" in errors(answers)


async def test_names_the_server_would_cut_short_cannot_stand_in_for_each_other(
    proxied: Proxied,
) -> None:
    """The server keeps 63 bytes of a name: 'a'*63+'x' and 'a'*63+'y' are one statement
    to it. The second Parse fails on the server, which keeps the first."""
    stem = "a" * 63

    def script(wire: Wire) -> list[Any]:
        wire.send(m.Parse(stem + "x", "select upper(name) from payroll", ()), m.Sync())
        wire.send(m.Parse(stem + "y", "select 1", ()), m.Sync())
        wire.send(bind("", stem + "y"), m.Execute("", 0), m.Sync())
        return wire.until(3)

    answers = await on_the_wire(proxied, script)
    assert b"ANN" not in values(answers)
    assert errors(answers).count("limited to 63 bytes") == 3


@pytest.mark.parametrize(
    "declare",
    [
        "declare c cursor with hold for select name from payroll",
        # The portal's transaction ended with its batch; a cursor that takes its name
        # (here declared in SQL, where a function's refcursor is not seen) is not it.
        None,
    ],
)
async def test_a_portal_s_name_taken_by_a_cursor_runs_nothing(
    proxied: Proxied, declare: str | None
) -> None:
    def script(wire: Wire) -> list[Any]:
        wire.send(m.Parse("s1", "select 1", ()), bind("c", "s1"), m.Sync())
        out = wire.until(1)
        if declare is not None:
            wire.send(m.Query(declare))
            out += wire.until(1)
        wire.send(m.Execute("c", 0), m.Sync())
        return out + wire.until(1)

    answers = await on_the_wire(proxied, script)
    assert b"ann" not in values(answers)
    assert "not bound through interlock" in errors(answers)
