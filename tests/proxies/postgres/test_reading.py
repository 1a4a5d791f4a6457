"""The proxy reads SQL text as the server will: sessions where the two could differ (a
client encoding whose characters can end in a backslash, standard_conforming_strings off)
are refused at login."""

from __future__ import annotations

import asyncio
import os
import subprocess

import asyncpg
import pytest

from tests.proxies.postgres.conftest import TOKEN, Proxied

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("encoding", ["SJIS", "BIG5", "GBK", "LATIN1"])
async def test_a_client_encoding_other_than_utf8_is_refused(
    proxied: Proxied, encoding: str
) -> None:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "psql",
                "-h",
                proxied.host,
                "-p",
                str(proxied.port),
                "-U",
                "reporter",
                "-d",
                proxied.database,
                "-tAc",
                "select 1",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PGPASSWORD": TOKEN, "PGCLIENTENCODING": encoding},
        )

    done = await asyncio.to_thread(run)
    assert done.returncode != 0
    assert "reads SQL as UTF-8" in done.stderr


async def test_utf8_spelled_any_way_is_accepted(proxied: Proxied) -> None:
    for spelling in ("UTF8", "utf-8", "unicode"):
        conn = await asyncpg.connect(proxied.dsn(), server_settings={"client_encoding": spelling})
        try:
            assert await conn.fetchval("select 1") == 1
        finally:
            await conn.close()


async def test_standard_conforming_strings_off_is_refused(proxied: Proxied) -> None:
    owner = await asyncpg.connect(proxied.proxy.config.upstream)
    try:
        await owner.execute(
            f'ALTER DATABASE "{proxied.database}" SET standard_conforming_strings = off'
        )
    finally:
        await owner.close()
    with pytest.raises(asyncpg.PostgresError, match="standard_conforming_strings off"):
        await asyncpg.connect(proxied.dsn())
