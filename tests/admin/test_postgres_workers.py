"""`[postgres] workers`: several proxy processes on one port, against a real PostgreSQL and
a real Redis. A cancel reaches its session whichever worker the kernel hands it to, an
isolation ends sessions on every worker, SIGHUP reaches every worker, a worker that dies
is started again, the workers end with the first, and the one audit log verifies."""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from interlock.config import AgentConfig, AuditConfig, Config, PostgresConfig, StateConfig
from interlock.core.modes import Mode
from interlock.errors import ConfigError
from interlock.proxies.postgres import messages as m
from interlock.proxies.postgres import workers
from interlock.proxies.postgres.workers import Slot, parse_cancel
from interlock.runtime import Runtime, build, start
from interlock.testing import make_pdp
from interlock.testing.services import Postgres, Redis
from tests.audit.conftest import fresh_database
from tests.services import free_port, redis_server

TOKEN = "coder-token-0123456789"
ADMIN = "admin-token-0123456789abcdef"
OWNER = "alice@example.com"
"""Every agent's owner, who may answer its holds."""


def test_more_than_one_worker_needs_the_shared_state_store() -> None:
    pg = PostgresConfig(workers=2)
    with pytest.raises(ValueError, match="redis"):
        Config(postgres=pg)
    redis = StateConfig(store="redis://127.0.0.1:6379")
    Config(postgres=pg, state=redis)  # the SQLite audit log: its appenders take turns
    Config(postgres=pg, state=redis, audit=AuditConfig(store="postgresql://u@h/audit"))
    Config(postgres=PostgresConfig(workers=1))  # one worker: the embedded stores do


@given(st.integers(1, 64).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
def test_a_key_names_the_worker_that_made_it(count_index: tuple[int, int]) -> None:
    count, index = count_index
    slot = Slot(index, count, "t")
    for _ in range(20):
        key = slot.new_key()
        assert 0 <= key < 1 << 32
        assert slot.owner(key) == index


def test_only_a_cancel_request_is_read_from_the_cancel_socket() -> None:
    assert parse_cancel(m.CancelRequest(7, 9).encode()) == m.CancelRequest(7, 9)
    assert parse_cancel(struct.pack("!IIII", 16, m.CANCEL_REQUEST_CODE + 1, 7, 9)) is None
    assert parse_cancel(struct.pack("!IIII", 17, m.CANCEL_REQUEST_CODE, 7, 9)) is None


BLOCKED = "select count(*) from held"
"""A statement that waits, without using a core, for the lock `locked` holds."""


async def waiting(lock: asyncpg.Connection, n: int) -> None:
    """Until `n` sessions wait for the lock: a cancel that arrives before its statement
    reached the backend cancels nothing."""
    for _ in range(400):
        # Inside the lock's transaction pg_stat_activity is read once: clear it each time.
        await lock.execute("select pg_stat_clear_snapshot()")
        count = await lock.fetchval(
            "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query = $1",
            BLOCKED,
        )
        if count >= n:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{count} of {n} statements reached the lock")


async def locked(upstream: str) -> asyncpg.Connection:
    """A direct connection holding an exclusive lock on table `held` until it closes."""
    conn = await asyncpg.connect(upstream)
    await conn.execute("create table if not exists held (id int)")
    await conn.execute("begin; lock table held in access exclusive mode")
    return conn


def cancel_bytes(conn: asyncpg.Connection) -> tuple[int, int]:
    proto: Any = conn._protocol  # asyncpg keeps BackendKeyData there for its own cancels
    return proto.backend_pid, proto.backend_secret & 0xFFFFFFFF


async def send_cancel(port: int, pid: int, key: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(m.CancelRequest(pid, key).encode())
    await writer.drain()
    await asyncio.wait_for(reader.read(), 10)  # the proxy closes once it passed it on
    writer.close()


@pytest.fixture
async def two_workers(
    postgres: Postgres, tmp_path: Path
) -> AsyncIterator[tuple[Runtime, Runtime, str]]:
    """Workers 0 and 1 of 2 in this process, each on its own port so a test chooses
    which one receives a cancel (in `interlock up` they share one port)."""
    upstream = await fresh_database(postgres)
    sockets = tmp_path / "sockets"
    sockets.mkdir(mode=0o700)
    started = []
    for index in (0, 1):
        config = Config(
            data_dir=tmp_path / str(index),
            agents={"coder": AgentConfig(token=TOKEN)},
            postgres=PostgresConfig(listen="127.0.0.1:0", upstream=upstream),
        )
        rt = build(config)
        rt.slot = Slot(index, 2, str(sockets))
        await start(rt)
        started.append(rt)
    yield started[0], started[1], upstream.rsplit("/", 1)[1]
    for rt in started:
        await rt.stop()


def port_of(rt: Runtime) -> int:
    return int(rt.endpoints["postgres"].rsplit(":", 1)[1])


async def test_a_cancel_given_to_another_worker_reaches_the_session(
    two_workers: tuple[Runtime, Runtime, str],
) -> None:
    zero, one, database = two_workers
    upstream = zero.config.postgres.upstream  # type: ignore[union-attr]
    lock = await locked(upstream)
    conn = await asyncpg.connect(
        host="127.0.0.1", port=port_of(zero), user="coder", password=TOKEN, database=database
    )
    try:
        pid, key = cancel_bytes(conn)
        assert Slot(0, 2, "").owner(key) == 0
        assert pid == await conn.fetchval("select pg_backend_pid()")  # the real backend pid
        sleeping = asyncio.create_task(conn.fetchval(BLOCKED))
        await waiting(lock, 1)
        # A wrong key for worker 0's session, given to worker 1: passed on, ignored there.
        await send_cancel(port_of(one), pid, (key + 2) & 0xFFFFFFFF)
        await asyncio.sleep(0.5)
        assert not sleeping.done()
        started = time.monotonic()
        await send_cancel(port_of(one), pid, key)
        with pytest.raises(asyncpg.QueryCanceledError):
            await asyncio.wait_for(sleeping, 10)
        assert time.monotonic() - started < 5
        assert await conn.fetchval("select 1") == 1  # the session goes on
    finally:
        await conn.close()
        await lock.close()


@pytest.fixture
def redis() -> Any:
    with redis_server() as server:
        yield server


class Workers:
    """`interlock up` with `[postgres] workers = 2`, shared Redis and the audit store
    `audit` (PostgreSQL, or the data directory's SQLite file), as a real process."""

    def __init__(self, tmp_path: Path, up_factory: Any, upstream: str, audit: str, redis: Redis):
        self.cfg = tmp_path / "interlock.toml"
        self.head = (
            f'data_dir = "{tmp_path / "data"}"\n'
            'event_loop = "uvloop"\n'  # the loop workers are for; asyncio's: the test above
            f'[state]\nstore = "{redis.url}"\n'
            f'[audit]\nstore = "{audit}"\n'
            f'[admin]\nlisten = "127.0.0.1:{free_port()}"\ntoken = "{ADMIN}"\n'
            f'[postgres]\nlisten = "127.0.0.1:{free_port()}"\nupstream = "{upstream}"\n'
            "workers = 2\n"
        )
        self.write({"coder": TOKEN})
        self.audit = audit
        self.upstream = upstream
        self.database = upstream.rsplit("/", 1)[1]
        self.up = up_factory(["-c", str(self.cfg)], tmp_path)
        self.admin = self.up.wait_ready()
        line = next(x for x in self.up.banner if x.strip().startswith("postgres "))
        self.port = int(line.split()[-1].rsplit(":", 1)[1])

    def write(self, agents: dict[str, str]) -> None:
        text = self.head + "".join(
            f'[agents.{a}]\ntoken = "{t}"\nowner = "{OWNER}"\n' for a, t in agents.items()
        )
        self.cfg.write_text(text)

    async def connect(self, user: str = "coder", token: str = TOKEN) -> asyncpg.Connection:
        return await asyncpg.connect(
            host="127.0.0.1", port=self.port, user=user, password=token, database=self.database
        )

    def children(self) -> list[int]:
        """The other workers: processes whose parent is `interlock up`."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.up.proc.pid), "-f", "interlock.worker"],
            capture_output=True,
            text=True,
        )
        return [int(p) for p in out.stdout.split()]


def owners(conns: list[asyncpg.Connection]) -> set[int]:
    return {Slot(0, 2, "").owner(cancel_bytes(c)[1]) for c in conns}


async def sessions_on_both(w: Workers, n: int = 16) -> list[asyncpg.Connection]:
    """`n` sessions; the kernel spreads them, and with 16 all on one worker has a chance
    of 2**-15."""
    conns = [await w.connect() for _ in range(n)]
    assert owners(conns) == {0, 1}, "the kernel gave every session to one worker"
    return conns


@pytest.fixture(params=["postgresql", "sqlite"])
async def w(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    up_factory: Any,
    postgres: Postgres,
    redis: Redis,
) -> Workers:
    """Workers on each audit store: both workers append to one PostgreSQL log, or take
    turns on one SQLite file."""
    upstream = await fresh_database(postgres)
    if request.param == "sqlite":
        audit = f"sqlite:///{tmp_path / 'data' / 'audit.db'}"
    else:
        audit = await fresh_database(postgres)
    return Workers(tmp_path, up_factory, upstream, audit, redis)


@pytest.mark.integration
async def test_two_workers_share_one_port_context_and_log(w: Workers) -> None:
    [child] = w.children()
    conns = await sessions_on_both(w)
    lock = await locked(w.upstream)
    try:
        # Cancels, each arriving at whichever worker the kernel chooses: every one lands.
        sleeping = [asyncio.create_task(c.fetchval(BLOCKED)) for c in conns]
        await waiting(lock, len(conns))
        for c in conns:
            await send_cancel(w.port, *cancel_bytes(c))
        for task in sleeping:
            with pytest.raises(asyncpg.QueryCanceledError):
                await asyncio.wait_for(task, 10)
        assert [await c.fetchval("select 1") for c in conns] == [1] * len(conns)
        await lock.close()

        # Isolation through the first worker's admin API ends sessions on both.
        async with httpx.AsyncClient(
            base_url=w.admin, headers={"Authorization": f"Bearer {ADMIN}"}
        ) as api:
            r = await api.post("/v1/agents/coder/isolate", json={"reason": "test"})
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 5
            while not all(c.is_closed() for c in conns) and time.monotonic() < deadline:
                for c in conns:
                    if not c.is_closed():
                        try:
                            await c.fetchval("select 1")
                        except (
                            asyncpg.PostgresError, asyncpg.InterfaceError,
                            asyncpg.InternalClientError, OSError,
                        ):  # fmt: skip
                            c.terminate()  # ended by the proxy (asyncpg says it variously)
                await asyncio.sleep(0.05)
            assert all(c.is_closed() for c in conns)
            r = await api.post("/v1/agents/coder/restore", json={})
            assert r.status_code == 200, r.text
    finally:
        for c in conns:
            await c.close()
        await lock.close()

    # SIGHUP reaches every worker: a new agent logs in, whichever worker takes it.
    w.write({"coder": TOKEN, "analyst": "analyst-token-0123456789"})
    w.up.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:
        try:
            news = [await w.connect("analyst", "analyst-token-0123456789") for _ in range(16)]
            break
        except asyncpg.PostgresError:
            assert time.monotonic() < deadline, "the new agent was refused after SIGHUP"
            await asyncio.sleep(0.2)
    assert owners(news) == {0, 1}

    # A per-agent override set through the first worker's admin API holds on both.
    async def forbidden_runs(conns: list[asyncpg.Connection]) -> list[bool]:
        ran = []
        for c in conns:
            try:
                await c.fetchval("select pg_sleep(0)")  # a forbidden function
                ran.append(True)
            except asyncpg.InsufficientPrivilegeError:
                ran.append(False)
        return ran

    async def set_mode(mode: str | None) -> None:
        async with httpx.AsyncClient(
            base_url=w.admin, headers={"Authorization": f"Bearer {ADMIN}"}
        ) as api:
            r = await api.post("/v1/agents/analyst/mode", json={"mode": mode})
            assert r.status_code == 200, r.text

    await set_mode("shadow")
    assert await forbidden_runs(news) == [True] * len(news)
    await set_mode(None)
    assert await forbidden_runs(news) == [False] * len(news)
    await set_mode("shadow")
    for c in news:
        await c.close()

    # A worker that dies is started again, with what the first serves now: the agent
    # SIGHUP added, and the override.
    os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while (again := w.children()) in ([], [child]):
        assert time.monotonic() < deadline, "the dead worker was not started again"
        await asyncio.sleep(0.2)
    while True:  # started, and then serving
        conns = [await w.connect("analyst", "analyst-token-0123456789") for _ in range(16)]
        if owners(conns) == {0, 1}:
            break
        for c in conns:
            await c.close()
        assert time.monotonic() < deadline, "the worker started again does not serve"
        await asyncio.sleep(0.2)
    assert await forbidden_runs(conns) == [True] * len(conns)
    for c in conns:
        await c.close()

    # The workers stop with the first, and the one log verifies.
    assert await asyncio.to_thread(w.up.stop) == 0
    assert not w.children()
    with pytest.raises(ProcessLookupError):
        os.kill(again[0], 0)
    key = next(x for x in w.up.banner if x.strip().startswith("audit key")).split()[-1]
    verify = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "interlock.cli", "audit", "verify", "--store", w.audit,
         "--key", key, "-c", "/dev/null"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # Both workers' decisions are in it: the blocked statement of each of the 16
    # sessions, which were on both.
    tail = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "interlock.cli", "audit", "tail", "-n", "10000", "-c", str(w.cfg)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert tail.returncode == 0, tail.stderr
    assert sum('"reads":["public.held"]' in x for x in tail.stdout.splitlines()) == 16


def _samples(text: str, name: str) -> list[tuple[str, float]]:
    """(labels, value) of every sample of metric `name` in a Prometheus exposition."""
    out = []
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in "{ ":
            labels, _, value = line[len(name) :].rpartition(" ")
            out.append((labels, float(value)))
    return out


@pytest.mark.integration
async def test_metrics_count_every_worker(w: Workers) -> None:
    """The first worker's /metrics adds up every worker's decisions, audit appends and
    open sessions, and says how many workers are in it."""
    conns = await sessions_on_both(w)
    assert [await c.fetchval("select 1") for c in conns] == [1] * len(conns)
    async with httpx.AsyncClient(
        base_url=w.admin, headers={"Authorization": f"Bearer {ADMIN}"}
    ) as api:
        text = (await api.get("/metrics")).text
    assert _samples(text, "interlock_postgres_workers_reporting") == [("", 2.0)]
    assert _samples(text, "interlock_open_sessions") == [('{proxy="postgres"}', 16.0)]
    decided = sum(
        n for labels, n in _samples(text, "interlock_decisions_total") if "postgres" in labels
    )
    assert decided >= len(conns), "a statement per session, half of them on the other worker"
    for c in conns:
        await c.close()


@pytest.mark.integration
async def test_a_hold_on_either_worker_is_answered_through_the_first(w: Workers) -> None:
    """DDL is held for approval. Held on either worker, it is listed by the first
    worker's admin API and an answer given there reaches the worker holding it (holds are
    shared through Redis): approved runs, denied is refused, on both workers."""
    conns = await sessions_on_both(w)
    by_owner = {owner: next(c for c in conns if owners([c]) == {owner}) for owner in (0, 1)}
    async with httpx.AsyncClient(
        base_url=w.admin, headers={"Authorization": f"Bearer {ADMIN}"}
    ) as api:

        async def held(table: str) -> str:
            for _ in range(100):
                for request in (await api.get("/v1/approvals")).json()["pending"]:
                    if f"create table {table}" in request["text"]:
                        return str(request["id"])
                await asyncio.sleep(0.05)
            pytest.fail(f"the statement creating {table} was never listed")

        for approved, denied in ((1, 0), (0, 1)):
            yes = asyncio.create_task(
                by_owner[approved].execute(f"create table yes_{approved} (a int)")
            )
            no = asyncio.create_task(by_owner[denied].execute(f"create table no_{denied} (a int)"))
            answer = {"approver": OWNER}
            ok = await api.post(
                f"/v1/approvals/{await held(f'yes_{approved}')}/approve", json=answer
            )
            assert ok.status_code == 200, ok.text
            refused = await api.post(
                f"/v1/approvals/{await held(f'no_{denied}')}/deny", json=answer
            )
            assert refused.status_code == 200, refused.text
            assert await asyncio.wait_for(yes, 10) == "CREATE TABLE"
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="held for approval"):
                await asyncio.wait_for(no, 10)
    direct = await asyncpg.connect(w.upstream)
    try:
        made = await direct.fetch("select relname from pg_class where relname ~ '^(yes|no)_'")
        assert sorted(r["relname"] for r in made) == ["yes_0", "yes_1"]
    finally:
        await direct.close()
    for c in conns:
        await c.close()


@pytest.mark.integration
async def test_a_read_only_restriction_reaches_the_database_sessions_of_both_workers(
    w: Workers,
) -> None:
    """`read_only` through the first worker's admin API: every worker makes its own
    sessions of the agent read-only in PostgreSQL (the second wall), writes fail on both,
    and a restore lifts it on both."""
    direct = await asyncpg.connect(w.upstream)
    await direct.execute("create table ro_t (a int)")
    conns = await sessions_on_both(w)

    async def read_only(conn: asyncpg.Connection) -> str:
        return str(await conn.fetchval("select current_setting('transaction_read_only')"))

    async def settled(want: str) -> None:
        deadline = time.monotonic() + 5
        while [await read_only(c) for c in conns] != [want] * len(conns):
            assert time.monotonic() < deadline, f"not every session read-only = {want}"
            await asyncio.sleep(0.05)

    try:
        async with httpx.AsyncClient(
            base_url=w.admin, headers={"Authorization": f"Bearer {ADMIN}"}
        ) as api:
            r = await api.post("/v1/agents/coder/restrict", json={"restrictions": ["read_only"]})
            assert r.status_code == 200, r.text
            await settled("on")
            for c in conns:
                with pytest.raises(asyncpg.PostgresError):
                    await c.execute("insert into ro_t values (1)")
            assert await direct.fetchval("select count(*) from ro_t") == 0
            assert (await api.post("/v1/agents/coder/restore", json={})).status_code == 200
            await settled("off")
            for c in conns:
                await c.execute("insert into ro_t values (1)")
            assert await direct.fetchval("select count(*) from ro_t") == len(conns)
    finally:
        await direct.close()
        for c in conns:
            await c.close()


@pytest.mark.integration
async def test_the_workers_end_when_the_first_is_killed(w: Workers) -> None:
    [child] = w.children()
    w.up.proc.kill()
    w.up.proc.wait()
    deadline = time.monotonic() + 30
    while True:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "a worker outlived the first"
        await asyncio.sleep(0.1)


def test_workers_without_a_reachable_redis_do_not_start(tmp_path: Path, postgres: Postgres) -> None:
    """Redis is not there: `up` refuses to start, saying why, before any worker."""
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[state]\nstore = "redis://127.0.0.1:{free_port()}"\n'
        f'[audit]\nstore = "{postgres.dsn()}"\n'
        f'[postgres]\nlisten = "127.0.0.1:{free_port()}"\nworkers = 2\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "interlock.cli", "up", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "redis" in (out.stdout + out.stderr).lower()


def test_config_error_names_the_setting() -> None:
    from interlock.config import parse_config

    with pytest.raises(ConfigError, match="workers > 1 needs"):
        parse_config({"postgres": {"workers": 2}})


async def test_a_worker_starting_during_a_reload_gets_the_reload_and_overrides_it_missed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker (re)started just before a SIGHUP or an override has an order without it:
    once it serves, the supervisor sends it the SIGHUP and the overrides that changed.
    The worker is a stand-in (`tests/admin/standin_worker.py`) that starts slowly and
    writes down what reaches it; the real one is tested above."""
    log = tmp_path / "log"
    sockets = tmp_path / "sockets"  # removed by the supervisor's stop
    sockets.mkdir(mode=0o700)
    monkeypatch.setenv("STANDIN_LOG", str(log))
    monkeypatch.setattr(workers, "ENTRY", "tests.admin.standin_worker")
    pdp = make_pdp()
    await pdp.set_agent_mode("leaving", Mode.SHADOW, "test")
    await pdp.set_agent_mode("staying", Mode.ENFORCE, "test")
    config = Config(postgres=PostgresConfig(upstream="postgresql://u@127.0.0.1:1/db"))
    supervisor = workers.Workers(
        pdp, lambda: config, None, Slot(0, 2, str(sockets)), "127.0.0.1:6432", None
    )
    starting = asyncio.create_task(supervisor._spawn(1))
    for _ in range(100):
        if log.exists() and log.read_text():
            break
        await asyncio.sleep(0.05)
    supervisor.reload()  # the first worker's config was replaced meanwhile
    await pdp.set_agent_mode("leaving", None, "test")
    await pdp.set_agent_mode("coming", Mode.SHADOW, "test")
    await starting
    await pdp.set_agent_mode("later", Mode.ENFORCE, "test")  # once it serves: as always
    await asyncio.sleep(0.3)
    await supervisor.stop()
    assert log.read_text().splitlines() == [
        'order {"leaving": "shadow", "staying": "enforce"}',
        "sighup",
        'stdin {"mode": ["coming", "shadow"]}',
        'stdin {"mode": ["leaving", null]}',
        'stdin {"mode": ["later", "enforce"]}',
    ]
