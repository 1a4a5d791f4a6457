"""Two interlock instances sharing one real Redis: an agent isolated through one instance's
admin API is refused by the other's proxy within a second, and an approval given on one
releases the statement held on the other."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from interlock.config import (
    AdminConfig,
    AgentConfig,
    AuditConfig,
    Config,
    PostgresConfig,
    StateConfig,
)
from interlock.runtime import Runtime, build, start
from interlock.testing.services import Postgres, Redis
from tests.audit.conftest import fresh_database

pytestmark = pytest.mark.integration
TOKEN = "coder-token-0123456789"
ADMIN = "admin-token-0123456789abcdef"


@pytest.fixture
async def pair(
    redis: Redis, postgres: Postgres, tmp_path: Path
) -> AsyncIterator[tuple[Runtime, Runtime, str]]:
    """Two instances with Postgres proxies (mitmproxy keeps one master per process, so two
    HTTP proxies in one test process would share addons) and the database name."""
    upstream = await fresh_database(postgres)
    audit_db = await fresh_database(postgres)
    started = []
    for name in ("one", "two"):
        config = Config(
            data_dir=tmp_path / name,
            state=StateConfig(store=redis.url),
            # One log for both: the shared PostgreSQL store, signed with one key.
            audit=AuditConfig(store=audit_db, key=tmp_path / "audit.key"),
            agents={"coder": AgentConfig(token=TOKEN, owner="alice@example.com")},
            postgres=PostgresConfig(listen="127.0.0.1:0", upstream=upstream, approval_timeout=30),
            admin=AdminConfig(listen="127.0.0.1:0", token=ADMIN),
        )
        rt = build(config)
        await start(rt)
        started.append(rt)
    yield started[0], started[1], upstream.rsplit("/", 1)[1]
    for rt in started:
        await rt.stop()
    # Both instances appended to one log; it verifies with the shared key.
    assert started[0].endpoints["audit key"] == started[1].endpoints["audit key"]
    verify = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "interlock.cli", "audit", "verify", "--store", audit_db,
         "--key", started[0].endpoints["audit key"], "-c", "/dev/null"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    records = int(verify.stdout.split("ok: ", 1)[1].split()[0])
    written = [rt.audit.stats.appended for rt in started]
    assert records == sum(written), (records, written)
    assert all(w > 0 for w in written), "both instances wrote to the one log"


def dsn(rt: Runtime, database: str) -> str:
    return f"postgresql://coder:{TOKEN}@{rt.endpoints['postgres'].split('//')[1]}/{database}"


def api(rt: Runtime) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=rt.endpoints["admin"], headers={"Authorization": f"Bearer {ADMIN}"}
    )


async def test_isolation_through_one_instance_is_enforced_by_the_other(
    pair: tuple[Runtime, Runtime, str],
) -> None:
    one, two, database = pair
    other = await asyncpg.connect(dsn(one, database))
    assert await other.fetchval("select 1") == 1
    await other.close()
    conn = await asyncpg.connect(dsn(two, database))
    try:
        assert await conn.fetchval("select 1") == 1
        async with api(one) as admin:
            started = time.monotonic()
            r = await admin.post("/v1/agents/coder/isolate", json={"reason": "test"})
            assert r.status_code == 200, r.text
        # Instance two hears the push and ends the session it holds.
        while not conn.is_closed():
            try:
                await conn.fetchval("select 1")
            except (
                asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
                OSError,
            ):  # fmt: skip
                break  # the server side ended the session (how asyncpg reports it varies)
            assert time.monotonic() - started < 1.0, "not cut within a second"
            await asyncio.sleep(0.05)
        assert time.monotonic() - started < 1.0
    finally:
        await conn.close()
    with pytest.raises(asyncpg.PostgresError, match="isolated"):
        await asyncpg.connect(dsn(two, database))


async def test_an_approval_given_on_one_instance_releases_the_hold_on_the_other(
    pair: tuple[Runtime, Runtime, str],
) -> None:
    one, two, database = pair
    other = await asyncpg.connect(dsn(two, database))
    assert await other.fetchval("select 1") == 1
    await other.close()
    conn = await asyncpg.connect(dsn(one, database))
    try:
        async with api(two) as admin:

            async def pending_on_two() -> dict[str, str]:
                for _ in range(100):
                    listed = (await admin.get("/v1/approvals")).json()["pending"]
                    if listed:
                        return dict(listed[0])
                    await asyncio.sleep(0.05)
                pytest.fail("instance two never saw the statement held on instance one")

            task = asyncio.create_task(conn.execute("create table approved (a int)"))
            request = await pending_on_two()
            assert one.holds.get(request["id"]) is not None, "held by instance one"
            assert "create table approved" in request["text"]
            url = f"/v1/approvals/{request['id']}/approve"
            assert (await admin.post(url, json={"approver": "mallory"})).status_code == 403
            ok = await admin.post(url, json={"approver": "alice@example.com"})
            assert ok.status_code == 200
            again = await admin.post(url, json={"approver": "alice@example.com"})
            assert again.status_code == 409, again.text
            assert await task == "CREATE TABLE"

            task = asyncio.create_task(conn.execute("create table refused (a int)"))
            request = await pending_on_two()
            deny = f"/v1/approvals/{request['id']}/deny"
            denied = await admin.post(deny, json={"approver": "alice@example.com"})
            assert denied.status_code == 200
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="held for approval"):
                await task
            assert (await admin.get("/v1/approvals")).json()["pending"] == []
    finally:
        await conn.close()
