"""Audit fixtures: every store backend, on real SQLite files and a real PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

from interlock.audit.postgres import PostgresStore
from interlock.audit.sqlite import SqliteStore
from interlock.audit.store import AuditStore
from tests.services import Postgres

StoreFactory = Callable[[], AuditStore]


async def fresh_database(pg: Postgres) -> str:
    name = "audit_" + os.urandom(5).hex()
    conn = await asyncpg.connect(pg.dsn())
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return pg.dsn(name)


@pytest.fixture(params=["sqlite", "postgres"])
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    """Makes stores that all share one log (one SQLite file, or one PostgreSQL database)."""
    if request.param == "sqlite":
        path = tmp_path / "audit.db"

        def make() -> AuditStore:
            return SqliteStore(path)
    else:
        dsn = await fresh_database(request.getfixturevalue("postgres"))

        def make() -> AuditStore:
            return PostgresStore(dsn)

    return make


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[AuditStore]:
    s = store_factory()
    await s.open()
    yield s
    await s.close()


def audit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`interlock audit ARGS` as a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "interlock.cli", "audit", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
