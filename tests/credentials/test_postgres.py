"""Postgres sessions on dynamic roles from a real OpenBao: the role lives as long as the
session, follows the agent's posture, and is revoked by rotation, isolation and the end
of the session; Vault faults deny logins and lose no lease."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path

import asyncpg
import hvac
import pytest

from interlock.credentials.broker import Broker
from interlock.testing.openbao import OpenBao
from interlock.testing.services import wait_port
from tests.credentials.conftest import TOKEN, Vaulted, start_vaulted
from tests.services import Postgres, free_port, openbao_server

pytestmark = pytest.mark.integration


def _launch(cmd: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def eventually_gone(v: Vaulted, role: str) -> None:
    for _ in range(100):
        if role not in await v.roles():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{role} still exists")


async def test_a_session_runs_on_a_role_that_lives_only_as_long_as_it(vaulted: Vaulted) -> None:
    conn = await asyncpg.connect(vaulted.dsn())
    role = await conn.fetchval("select current_user")
    assert role.startswith("v-")
    assert role in await vaulted.roles()
    await conn.execute("insert into items values (1, 'a')")
    other = await asyncpg.connect(vaulted.dsn())
    assert await other.fetchval("select current_user") != role, "one role per session"
    await other.close()
    await conn.close()
    await eventually_gone(vaulted, role)
    assert vaulted.broker.book.all() == []


async def test_a_read_only_agent_gets_a_role_that_cannot_write(vaulted: Vaulted) -> None:
    await vaulted.proxy.pdp.store.restrict("reporter", ["read_only"])
    conn = await asyncpg.connect(vaulted.dsn())
    try:
        role = await conn.fetchval("select current_user")
        admin = await asyncpg.connect(vaulted.admin_dsn)
        rights = await admin.fetchrow(
            "select has_table_privilege($1, 'items', 'SELECT') r,"
            " has_table_privilege($1, 'items', 'INSERT') w",
            role,
        )
        await admin.close()
        assert (rights["r"], rights["w"]) == (True, False)
        assert await conn.fetchval("select count(*) from items") == 0
    finally:
        await conn.close()


@pytest.mark.parametrize("how", ["rotate", "isolate"])
async def test_rotation_and_isolation_revoke_the_role(vaulted: Vaulted, how: str) -> None:
    conn = await asyncpg.connect(vaulted.dsn())
    role = await conn.fetchval("select current_user")
    store = vaulted.proxy.pdp.store
    if how == "rotate":
        await store.restrict("reporter", ["rotate_credentials"])
    else:
        await store.restrict("reporter", [], isolate=True)
    await eventually_gone(vaulted, role)
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
        await conn.fetchval("select 1")
    await conn.close()
    if how == "rotate":
        posture = await store.posture("reporter", vaulted.proxy.pdp.clock())
        assert "rotate_credentials" not in posture.restrictions, "a one-time action"
        fresh = await asyncpg.connect(vaulted.dsn())
        assert await fresh.fetchval("select current_user") not in (role, None)
        await fresh.close()


async def test_a_lease_revoked_in_vault_ends_the_session_and_others_go_on(
    vaulted: Vaulted,
) -> None:
    conn = await asyncpg.connect(vaulted.dsn())
    (lease,) = vaulted.broker.book.all()
    client = hvac.Client(url=vaulted.bao.address, token=vaulted.bao.root_token)
    await asyncio.to_thread(client.sys.revoke_lease, lease.lease_id)
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
        await conn.fetchval("select 1")
    await conn.close()
    other = await asyncpg.connect(vaulted.dsn())
    assert await other.fetchval("select 1") == 1
    await other.close()


async def test_vault_stopped_mid_session_denies_new_logins_and_keeps_the_lease(
    vaulted: Vaulted,
) -> None:
    conn = await asyncpg.connect(vaulted.dsn())
    assert await conn.fetchval("select 1") == 1
    vaulted.bao.stop()
    assert await conn.fetchval("select 2") == 2, "an open session keeps its credentials"
    with pytest.raises(asyncpg.PostgresError, match="no database credentials: Vault unreachable"):
        await asyncpg.connect(vaulted.dsn())
    await conn.close()
    await asyncio.sleep(0.2)
    # Vault could not confirm the revocation: the lease stays on record, to be retried.
    assert len(vaulted.broker.book.all()) == 1
    assert len(vaulted.broker.book.leftover()) == 1


async def test_the_static_fallback_is_used_only_when_configured(
    postgres: Postgres, tmp_path: Path
) -> None:
    with openbao_server() as bao:
        v = await start_vaulted(postgres, bao, tmp_path / "data", static_fallback=True)
        try:
            bao.stop()
            conn = await asyncpg.connect(v.dsn())
            assert await conn.fetchval("select current_user") == postgres.user
            await conn.close()
        finally:
            await v.proxy.stop()
            await v.broker.stop()


async def test_leases_left_by_a_crash_are_revoked_on_the_next_start(
    vaulted: Vaulted, tmp_path: Path
) -> None:
    """`interlock up` killed with SIGKILL while a session holds a dynamic role; the next
    start finds the lease in the journal and revokes it."""
    database = vaulted.admin_dsn.rsplit("/", 1)[1]
    port = free_port()
    config = tmp_path / "interlock.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "crashing"}"\n'
        f'[agents.reporter]\ntoken = "{TOKEN}"\n'
        f'[postgres]\nlisten = "127.0.0.1:{port}"\n'
        f'upstream = "postgresql://127.0.0.1:{vaulted.proxy.upstream.port}/{database}"\n'
        f'[credentials]\naddress = "{vaulted.bao.address}"\ntoken = "{vaulted.bao.root_token}"\n'
        '[credentials.postgres]\nrole = "agent-rw"\n'
    )
    up = [sys.executable, "-m", "interlock.cli", "up", "-c", str(config)]
    proc = await asyncio.to_thread(_launch, up)
    try:
        await asyncio.to_thread(wait_port, port, proc, "interlock up")
        dsn = f"postgresql://reporter:{TOKEN}@127.0.0.1:{port}/{database}"
        conn = await asyncpg.connect(dsn)
        role = await conn.fetchval("select current_user")
        proc.kill()
        await asyncio.to_thread(proc.wait, 10)
        assert role in await vaulted.roles(), "a crash revokes nothing by itself"
        with contextlib.suppress(Exception):
            await conn.close(timeout=1)
        proc = await asyncio.to_thread(_launch, up)
        await asyncio.to_thread(wait_port, port, proc, "interlock up")
        await eventually_gone(vaulted, role)
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)


async def test_approle_login_issues_and_revokes(
    postgres: Postgres, bao: OpenBao, tmp_path: Path
) -> None:
    """interlock authenticates with AppRole (a secret id in a file), not a root token."""
    c = hvac.Client(url=bao.address, token=bao.root_token)
    policy = (
        'path "database/creds/*" { capabilities = ["read"] }\n'
        'path "sys/leases/renew" { capabilities = ["update"] }\n'
        'path "sys/leases/revoke" { capabilities = ["update"] }\n'
    )

    def setup() -> tuple[str, str]:
        c.sys.enable_auth_method("approle")
        c.sys.create_or_update_policy(name="interlock", policy=policy)
        c.auth.approle.create_or_update_approle(
            role_name="interlock", token_policies=["interlock"], token_ttl="1h"
        )
        role_id = c.auth.approle.read_role_id(role_name="interlock")["data"]["role_id"]
        secret = c.auth.approle.generate_secret_id(role_name="interlock")["data"]["secret_id"]
        return role_id, secret

    role_id, secret_id = await asyncio.to_thread(setup)
    secret_file = tmp_path / "secret_id"
    secret_file.write_text(secret_id + "\n")
    v = await start_vaulted(postgres, bao, tmp_path / "data")
    await v.proxy.stop()
    await v.broker.stop()
    config = v.broker.config.model_copy(
        update={"token": None, "approle_role_id": role_id, "approle_secret_id_file": secret_file}
    )
    broker = Broker(config, tmp_path / "approle")
    await broker.start(v.proxy.pdp.store)
    try:
        login = await broker.database_login("reporter", False, lambda reason: None)
        assert login is not None
        assert login.username in await v.roles()
        await broker.release(login.lease)
        await eventually_gone(v, login.username)
    finally:
        await broker.stop()


async def test_becoming_read_only_ends_sessions_on_a_role_that_can_write(
    vaulted: Vaulted,
) -> None:
    conn = await asyncpg.connect(vaulted.dsn())
    writer_role = await conn.fetchval("select current_user")
    await vaulted.proxy.pdp.store.restrict("reporter", ["read_only"])
    await eventually_gone(vaulted, writer_role)
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
        await conn.fetchval("select 1")
    await conn.close()
    again = await asyncpg.connect(vaulted.dsn())
    try:
        role = await again.fetchval("select current_user")
        admin = await asyncpg.connect(vaulted.admin_dsn)
        can_write = await admin.fetchval("select has_table_privilege($1, 'items', 'INSERT')", role)
        await admin.close()
        assert can_write is False
    finally:
        await again.close()


async def test_a_refusal_by_vault_is_never_covered_by_the_static_fallback(
    postgres: Postgres, tmp_path: Path
) -> None:
    """Fallback is for Vault being away, not for Vault saying no (say, the operator
    revoked interlock's token during an incident)."""
    with openbao_server() as bao:
        v = await start_vaulted(postgres, bao, tmp_path / "data", static_fallback=True)
        try:
            root = hvac.Client(url=bao.address, token=bao.root_token)
            child = await asyncio.to_thread(root.auth.token.create, policies=["root"], ttl="1h")
            token = child["auth"]["client_token"]
            await v.broker.stop()
            config = v.broker.config.model_copy(update={"token": token})
            broker = Broker(config, tmp_path / "child")
            await broker.start(v.proxy.pdp.store)
            v.proxy.credentials = broker
            await asyncio.to_thread(root.auth.token.revoke, token)
            with pytest.raises(asyncpg.PostgresError, match="permission denied"):
                await asyncpg.connect(v.dsn())
            await broker.stop()
        finally:
            await v.proxy.stop()
