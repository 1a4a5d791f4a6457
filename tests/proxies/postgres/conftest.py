"""A real proxy in front of the real PostgreSQL fixture, with a table of labelled data."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from interlock.classify.sql import Catalog, SqlClassifier
from interlock.config import AgentConfig, PostgresConfig
from interlock.core.context import MemoryStore
from interlock.core.pdp import PDP
from interlock.core.policy import PolicyManager
from interlock.proxies.postgres.server import PostgresProxy
from interlock.testing import CaptureSink
from tests.audit.conftest import fresh_database
from tests.services import Postgres

TOKEN = "reporter-token-0123456789"
LABELS = {"public.payroll.salary": ["financial", "restricted"], "public.payroll.name": ["pii"]}
HR_TOKEN = "hr-agent-token-0123456789"


@dataclass
class Proxied:
    proxy: PostgresProxy
    pdp: PDP
    sink: CaptureSink
    host: str
    port: int
    database: str

    def dsn(self, user: str = "reporter", password: str = TOKEN) -> str:
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{self.database}"

    def psql(self, command: str, password: str = TOKEN) -> subprocess.CompletedProcess[str]:
        """The real psql client running `command` as the reporter agent (blocking)."""
        return subprocess.run(
            [
                "psql",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                "reporter",
                "-d",
                self.database,
                "-tA",
                "-c",
                command,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PGPASSWORD": password},
        )


@pytest.fixture
async def proxied(postgres: Postgres) -> AsyncIterator[Proxied]:
    upstream = await fresh_database(postgres)
    conn = await asyncpg.connect(upstream)
    await conn.execute("""
        create table orders (id int primary key, total numeric);
        insert into orders select g, g * 10 from generate_series(1, 20) g;
        create table payroll (id int primary key, name text, salary numeric);
        insert into payroll values (1, 'ann', 100), (2, 'bob', 200);
    """)
    await conn.close()
    manager = PolicyManager()
    manager.load()
    sink = CaptureSink()
    pdp = PDP(manager, MemoryStore(), sink)
    proxy = PostgresProxy(
        PostgresConfig(listen="127.0.0.1:0", upstream=upstream, approval_timeout=1.0),
        {
            "reporter": AgentConfig(token=TOKEN, roles=["analyst"]),
            "hr": AgentConfig(token=HR_TOKEN, roles=["pii_reader"]),
        },
        pdp,
        SqlClassifier(Catalog.from_config(LABELS)),
    )
    await proxy.start()
    assert proxy.address is not None
    yield Proxied(proxy, pdp, sink, proxy.address[0], proxy.address[1], upstream.rsplit("/", 1)[1])
    await proxy.stop()
