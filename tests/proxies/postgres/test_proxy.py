"""Real clients through the proxy to a real PostgreSQL: allowed, denied, and after."""

from __future__ import annotations

import asyncio

import asyncpg
import pg8000.native
import psycopg
import pytest

from interlock.approvals.request import ApprovalRequest
from interlock.core.model import Effect
from interlock.proxies.postgres import messages as m
from tests.proxies.postgres.conftest import TOKEN, Proxied

pytestmark = pytest.mark.integration


async def test_asyncpg_reads_through_the_proxy_and_each_statement_is_decided(
    proxied: Proxied,
) -> None:
    conn = await asyncpg.connect(proxied.dsn())
    try:
        assert await conn.fetchval("select count(*) from orders") == 20
        rows = await conn.fetch("select id, total from orders where id <= $1", 3)
        assert [r["id"] for r in rows] == [1, 2, 3]
    finally:
        await conn.close()
    decided = [r.action.details["reads"] for r in proxied.sink.records]
    assert ("public.orders",) in decided
    assert all(r.decision.effect is Effect.ALLOW for r in proxied.sink.records)


async def test_wrong_password_and_unknown_agent_are_refused(proxied: Proxied) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(proxied.dsn(password="wrong-token-000000000"))
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(proxied.dsn(user="stranger"))


async def test_denied_simple_query_keeps_the_session_usable(proxied: Proxied) -> None:
    conn = await asyncpg.connect(proxied.dsn())
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match=r"interlock:.*decision"):
            await conn.execute("select 1; copy orders to program 'cat'")
        assert await conn.fetchval("select 41 + 1") == 42
    finally:
        await conn.close()


async def test_denied_prepared_statement_in_a_transaction(proxied: Proxied) -> None:
    conn = await asyncpg.connect(proxied.dsn())
    try:
        tr = conn.transaction()
        await tr.start()
        assert await conn.fetchval("select 1") == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="forbidden construct"):
            await conn.fetch("select pg_read_file('/etc/passwd')")
        with pytest.raises(asyncpg.InFailedSQLTransactionError):
            await conn.fetchval("select 2")
        await tr.rollback()
        assert await conn.fetchval("select 3") == 3
    finally:
        await conn.close()


async def test_ddl_is_held_and_denied_when_nobody_approves(proxied: Proxied) -> None:
    conn = await asyncpg.connect(proxied.dsn())
    try:
        with pytest.raises(
            asyncpg.InsufficientPrivilegeError,
            match="held for approval: approval not given within 1 s",
        ):
            await conn.execute("create table t_new (a int)")
        assert await conn.fetchval("select count(*) from orders") == 20
    finally:
        await conn.close()


async def _held(proxied: Proxied) -> ApprovalRequest:
    for _ in range(100):
        if proxied.proxy.holds.pending():
            break
        await asyncio.sleep(0.01)
    (held,) = proxied.proxy.holds.pending()
    return held


async def test_held_ddl_runs_once_approved(proxied: Proxied) -> None:
    conn = await asyncpg.connect(proxied.dsn())
    try:
        task = asyncio.create_task(conn.execute("create table t_approved (a int)"))
        held = await _held(proxied)
        assert held.risk["tier"] == "medium"
        assert held.summary.startswith("reporter: postgres ddl")
        assert proxied.proxy.holds.resolve(held.decision_id, True, "alice@example.com")
        assert await task == "CREATE TABLE"
        assert await conn.fetchval("select count(*) from t_approved") == 0
    finally:
        await conn.close()


async def test_a_denied_statement_fails_cleanly_while_others_are_served(
    proxied: Proxied,
) -> None:
    waiting = await asyncpg.connect(proxied.dsn())
    other = await asyncpg.connect(proxied.dsn())
    try:
        task = asyncio.create_task(waiting.execute("create table t_denied (a int)"))
        held = await _held(proxied)
        # Another client's statements run while this one waits for a person.
        assert await other.fetchval("select count(*) from orders") == 20
        proxied.proxy.holds.answer(held.decision_id, False, "alice@example.com", "test")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="held for approval"):
            await task
        assert await waiting.fetchval("select 1") == 1, "the session goes on"
        exists = await other.fetchval("select to_regclass('t_denied') is not null")
        assert exists is False
    finally:
        await waiting.close()
        await other.close()


async def test_psql_through_the_proxy(proxied: Proxied) -> None:
    """Blocking clients run in a thread: the proxy serves them on this test's loop."""
    await asyncio.to_thread(_psql, proxied)


def _psql(proxied: Proxied) -> None:
    ok = proxied.psql("select sum(total) from orders")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "2100"
    denied = proxied.psql("set role postgres")
    assert "interlock: forbidden construct: sensitive_setting" in denied.stderr
    copied = proxied.psql("\\copy orders to stdout")
    assert copied.returncode == 0, copied.stderr
    assert len(copied.stdout.strip().splitlines()) == 20


async def test_pg8000_through_the_proxy(proxied: Proxied) -> None:
    await asyncio.to_thread(_pg8000, proxied)


def _pg8000(proxied: Proxied) -> None:
    conn = pg8000.native.Connection(
        "reporter", host=proxied.host, port=proxied.port, database=proxied.database, password=TOKEN
    )
    try:
        assert conn.run("select count(*) from orders where id > :n", n=10) == [[10]]
        with pytest.raises(pg8000.native.DatabaseError, match="42501"):
            conn.run("DO $$ begin perform 1; end $$")
        assert conn.run("select 7") == [[7]]
    finally:
        conn.close()


async def test_psycopg_pipeline_mode_through_the_proxy(proxied: Proxied) -> None:
    await asyncio.to_thread(_psycopg, proxied)


def _psycopg(proxied: Proxied) -> None:
    with psycopg.connect(proxied.dsn(), autocommit=True) as conn:
        with conn.pipeline():
            c1 = conn.execute("select count(*) from orders")
            c2 = conn.execute("select max(id) from orders")
        assert c1.fetchone() == (20,)
        assert c2.fetchone() == (20,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select set_config('role', 'postgres', false)")
        assert conn.execute("select 5").fetchone() == (5,)


async def test_isolation_terminates_open_sessions(proxied: Proxied) -> None:
    conn = await asyncpg.connect(proxied.dsn())
    try:
        assert await conn.fetchval("select 1") == 1
        await proxied.pdp.store.restrict("reporter", [], isolate=True)
        await asyncio.sleep(0.2)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await conn.fetchval("select 2")
    finally:
        await conn.close()
    with pytest.raises(asyncpg.PostgresError, match="isolated"):
        await asyncpg.connect(proxied.dsn())


async def test_cancellation_reaches_the_right_backend_and_forged_keys_do_nothing(
    proxied: Proxied,
) -> None:
    slow = "select count(*) from generate_series(1, 300000000)"
    conn = await asyncpg.connect(proxied.dsn())
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(asyncio.TimeoutError):
            await conn.fetchval(slow, timeout=0.5)
        assert await conn.fetchval("select 9") == 9
        assert asyncio.get_running_loop().time() - started < 10, "the cancel reached it"
        reader, writer = await asyncio.open_connection(proxied.host, proxied.port)
        writer.write(m.CancelRequest(12345, 67890).encode())
        await writer.drain()
        assert await reader.read() == b"", "a cancel gets no answer, forged or not"
        writer.close()
        assert await conn.fetchval("select 10") == 10
    finally:
        await conn.close()


async def test_clients_see_their_real_backend_pid_with_the_proxys_own_key(
    proxied: Proxied,
) -> None:
    """pg_backend_pid() and pg_terminate_backend work on the pid the client was given; a
    cancel with that real pid but a guessed key (the server's own key, say) does
    nothing: only the proxy's key cancels, and the proxy never gives out the server's."""
    conn = await asyncpg.connect(proxied.dsn())
    other = await asyncpg.connect(proxied.dsn())
    admin = await asyncpg.connect(proxied.proxy.config.upstream)
    try:
        pid = conn.get_server_pid()
        assert await conn.fetchval("select pg_backend_pid()") == pid
        assert other.get_server_pid() != pid
        (session,) = [s for s in proxied.proxy._sessions.values() if s.pid == pid]
        assert session.key != session.conn.key, "the server's key stays in the proxy"
        slow = asyncio.create_task(
            conn.fetchval("select count(*) from generate_series(1, 3000000000)")
        )
        for _ in range(200):
            if await admin.fetchval(
                "select state = 'active' from pg_stat_activity where pid = $1", pid
            ):
                break
            await asyncio.sleep(0.05)
        for forged in (session.conn.key, session.key ^ 1):
            reader, writer = await asyncio.open_connection(proxied.host, proxied.port)
            writer.write(m.CancelRequest(pid, forged).encode())
            await writer.drain()
            assert await reader.read() == b""
            writer.close()
        assert (
            await admin.fetchval("select state from pg_stat_activity where pid = $1", pid)
            == "active"
        ), "a forged key cancels nothing"
        assert await admin.fetchval("select pg_terminate_backend($1)", pid)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await slow
        assert await other.fetchval("select 3") == 3, "only that client's session ended"
    finally:
        conn.terminate()
        await other.close()
        await admin.close()


async def test_logins_past_max_client_conn_are_refused_with_a_clear_error(
    proxied: Proxied,
) -> None:
    proxied.proxy.config = proxied.proxy.config.model_copy(update={"max_client_conn": 1})
    first = await asyncpg.connect(proxied.dsn())
    try:
        with pytest.raises(asyncpg.TooManyConnectionsError, match="max_client_conn 1"):
            await asyncpg.connect(proxied.dsn())
        reader, writer = await asyncio.open_connection(proxied.host, proxied.port)
        writer.write(m.CancelRequest(first.get_server_pid(), 1).encode())
        await writer.drain()
        assert await reader.read() == b"", "a cancel request is not a client session"
        writer.close()
        assert await first.fetchval("select 1") == 1
    finally:
        await first.close()
    for _ in range(200):  # the proxy counts the session out once it has seen it end
        if not proxied.proxy._clients:
            break
        await asyncio.sleep(0.01)
    second = await asyncpg.connect(proxied.dsn())
    assert await second.fetchval("select 2") == 2, "the place is free again"
    await second.close()


async def test_read_only_stops_a_prepared_write_at_execute(proxied: Proxied) -> None:
    conn = await asyncpg.connect(proxied.dsn())
    try:
        update = await conn.prepare("update orders set total = total where id = $1")
        await update.fetch(1)
        await proxied.pdp.store.restrict("reporter", ["read_only"])
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="read_only"):
            await update.fetch(2)
        assert await conn.fetchval("select count(*) from orders") == 20, "reads go on"
    finally:
        await conn.close()


async def test_copy_both_ways_with_asyncpg(proxied: Proxied) -> None:
    conn = await asyncpg.connect(proxied.dsn())
    try:
        result = await conn.copy_records_to_table(
            "orders", records=[(101, 5), (102, 6)], columns=["id", "total"]
        )
        assert result == "COPY 2"
        rows: list[bytes] = []

        async def sink(chunk: bytes) -> None:
            rows.append(chunk)

        await conn.copy_from_query("select id from orders where id > 100 order by id", output=sink)
        assert b"".join(rows).split() == [b"101", b"102"]
    finally:
        await conn.close()
