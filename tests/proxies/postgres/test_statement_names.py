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
import select
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import pq

from interlock.core.modes import Mode
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
