"""TLS towards clients (psql, asyncpg) and towards a TLS-only upstream PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from interlock.classify.sql import SqlClassifier
from interlock.config import AgentConfig, PostgresConfig
from interlock.proxies.postgres.server import PostgresProxy
from interlock.testing import make_pdp
from interlock.testing.services import postgres_server, self_signed_cert
from tests.audit.conftest import fresh_database
from tests.services import Postgres

pytestmark = pytest.mark.integration
TOKEN = "reporter-token-0123456789"


def self_signed(directory: Path, owner: str | None = None) -> tuple[Path, Path]:
    return self_signed_cert(directory, owner)


async def start(config: PostgresConfig) -> PostgresProxy:
    proxy = PostgresProxy(
        config, {"reporter": AgentConfig(token=TOKEN)}, make_pdp(), SqlClassifier()
    )
    await proxy.start()
    return proxy


@pytest.fixture
async def tls_proxy(postgres: Postgres, tmp_path: Path) -> AsyncIterator[tuple[PostgresProxy, str]]:
    cert, key = self_signed(tmp_path / "tls")
    upstream = await fresh_database(postgres)
    proxy = await start(
        PostgresConfig(
            listen="127.0.0.1:0", upstream=upstream, tls_cert=cert, tls_key=key, require_tls=True
        )
    )
    yield proxy, upstream.rsplit("/", 1)[1]
    await proxy.stop()


async def test_clients_connect_over_tls(tls_proxy: tuple[PostgresProxy, str]) -> None:
    proxy, database = tls_proxy
    assert proxy.address is not None
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = await asyncpg.connect(
        host=proxy.address[0],
        port=proxy.address[1],
        user="reporter",
        password=TOKEN,
        database=database,
        ssl=ctx,
    )
    try:
        assert await conn.fetchval("select 1") == 1
    finally:
        await conn.close()

    host, port = proxy.address

    def psql(mode: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "psql",
                f"host={host} port={port} user=reporter dbname={database} sslmode={mode}",
                "-tAc",
                "select ssl is not null from pg_stat_ssl limit 1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PGPASSWORD": TOKEN},
        )

    ok = await asyncio.to_thread(psql, "require")
    assert ok.returncode == 0, ok.stderr
    plain = await asyncio.to_thread(psql, "disable")
    assert plain.returncode != 0
    assert "requires TLS" in plain.stderr


async def test_proxy_reaches_a_tls_only_database(tmp_path: Path) -> None:
    owner = "postgres" if os.geteuid() == 0 else None
    # Outside pytest's 0700 tree, so the server (running as postgres) can read it.
    where = Path(tempfile.mkdtemp(prefix="interlock-pgtls-"))
    cert, key = self_signed(where / "tls", owner)
    if owner:
        shutil.chown(where, owner)
    with postgres_server({"ssl": "on", "ssl_cert_file": str(cert), "ssl_key_file": str(key)}) as pg:
        upstream = await fresh_database(pg)
        proxy = await start(
            PostgresConfig(
                listen="127.0.0.1:0",
                upstream=upstream,
                upstream_tls="verify-full",
                upstream_ca=cert,
            )
        )
        try:
            assert proxy.address is not None
            conn = await asyncpg.connect(
                host=proxy.address[0],
                port=proxy.address[1],
                user="reporter",
                password=TOKEN,
                database=upstream.rsplit("/", 1)[1],
                ssl=False,
            )
            try:
                assert (
                    await conn.fetchval("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
                    is True
                )
            finally:
                await conn.close()
        finally:
            await proxy.stop()
    shutil.rmtree(where, ignore_errors=True)


def test_tls_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="both tls_cert and tls_key"):
        PostgresConfig(tls_cert=Path("a.crt"))
    with pytest.raises(ValueError, match="require_tls needs"):
        PostgresConfig(require_tls=True)
    with pytest.raises(ValueError, match="verify-full needs upstream_ca"):
        PostgresConfig(upstream_tls="verify-full")
