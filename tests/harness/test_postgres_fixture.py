"""The PostgreSQL fixture starts a real server that enforces SCRAM-SHA-256."""

from __future__ import annotations

import os
import subprocess

import asyncpg
import pytest

from tests.services import Postgres

pytestmark = pytest.mark.integration


async def test_right_password_connects_over_scram(postgres: Postgres) -> None:
    conn = await asyncpg.connect(postgres.dsn())
    try:
        version = await conn.fetchval("show server_version")
        method = await conn.fetchval("show password_encryption")
    finally:
        await conn.close()
    assert version.startswith(("15", "16", "17"))
    assert method == "scram-sha-256"


async def test_wrong_password_is_refused(postgres: Postgres) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(postgres.dsn(password="wrong"))


def test_psql_client_works_against_it(postgres: Postgres) -> None:
    out = subprocess.run(
        [
            "psql",
            "-h",
            postgres.host,
            "-p",
            str(postgres.port),
            "-U",
            postgres.user,
            "-d",
            "postgres",
            "-tAc",
            "select 40 + 2",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PGPASSWORD": postgres.password},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"
