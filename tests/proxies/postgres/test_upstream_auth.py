"""The proxy's own login to the database: MD5 and cleartext as well as SCRAM."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from interlock.proxies.postgres import upstream as up
from tests.services import Postgres

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def legacy_users(postgres: Postgres) -> dict[str, str]:
    async def setup() -> None:
        conn = await asyncpg.connect(postgres.dsn())
        try:
            await conn.execute("set password_encryption = 'md5'")
            for user, password in (("md5user", "md5-secret"), ("pwuser", "pw-secret")):
                await conn.execute(f"drop role if exists {user}")
                await conn.execute(f"create role {user} login password '{password}'")
        finally:
            await conn.close()
        hba = postgres.datadir / "pg_hba.conf"
        rules = "host all md5user 127.0.0.1/32 md5\nhost all pwuser 127.0.0.1/32 password\n"
        hba.write_text(rules + hba.read_text())
        conn = await asyncpg.connect(postgres.dsn())
        try:
            await conn.execute("select pg_reload_conf()")
        finally:
            await conn.close()
        await asyncio.sleep(0.3)

    asyncio.run(setup())
    return {"md5user": "md5-secret", "pwuser": "pw-secret"}


@pytest.mark.parametrize("user", ["md5user", "pwuser"])
async def test_md5_and_cleartext_logins(
    postgres: Postgres, legacy_users: dict[str, str], user: str
) -> None:
    target = up.Upstream(postgres.host, postgres.port, user, legacy_users[user], "postgres")
    conn = await up.connect(target, {})
    try:
        assert conn.status == "I"
        assert conn.pid > 0
    finally:
        conn.writer.close()


async def test_wrong_upstream_password_is_a_clear_error(
    postgres: Postgres, legacy_users: dict[str, str]
) -> None:
    target = up.Upstream(postgres.host, postgres.port, "md5user", "wrong", "postgres")
    with pytest.raises(up.UpstreamError, match="password authentication failed"):
        await up.connect(target, {})


async def test_unreachable_upstream_is_a_clear_error() -> None:
    target = up.Upstream("127.0.0.1", 9, "u", "p", "d")
    with pytest.raises(up.UpstreamError, match="cannot reach the database"):
        await up.connect(target, {})
