"""A real OpenBao dev server with the database secrets engine pointed at the real
PostgreSQL fixture, and the Postgres proxy logging in upstream with what it issues."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import hvac
import pytest

from interlock.classify.sql import Catalog, SqlClassifier
from interlock.config import (
    AgentConfig,
    Config,
    CredentialsConfig,
    HttpConfig,
    InjectRule,
    PostgresConfig,
    VaultPostgresConfig,
)
from interlock.credentials.broker import Broker
from interlock.proxies.postgres.server import PostgresProxy
from interlock.runtime import Runtime, build, start
from interlock.testing import CaptureSink, make_pdp
from interlock.testing.openbao import OpenBao
from tests.audit.conftest import fresh_database
from tests.services import Postgres, openbao_server

TOKEN = "reporter-token-0123456789"
CREATE = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
]
RW = [*CREATE, 'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE public.items TO "{{name}}";']
RO = [*CREATE, 'GRANT SELECT ON TABLE public.items TO "{{name}}";']
# Terminate the role's sessions (waiting up to 5 s for them to end), then drop it and
# whatever it owns: a role with grants or objects cannot simply be dropped.
REVOKE = [
    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = '{{name}}';",
    "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{{name}}') THEN "
    "EXECUTE 'DROP OWNED BY \"{{name}}\"'; EXECUTE 'DROP ROLE \"{{name}}\"'; END IF; END $$;",
]


@pytest.fixture
def bao() -> Iterator[OpenBao]:
    with openbao_server() as server:
        yield server


def configure_database(bao: OpenBao, pg: Postgres, database: str) -> None:
    c = hvac.Client(url=bao.address, token=bao.root_token)
    c.sys.enable_secrets_engine("database", path="database")
    c.secrets.database.configure(
        name="pg",
        plugin_name="postgresql-database-plugin",
        connection_url=(
            f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{pg.port}/{database}"
            "?sslmode=disable"
        ),
        username=pg.user,
        password=pg.password,
        allowed_roles=["agent-rw", "agent-ro"],
    )
    for name, statements in (("agent-rw", RW), ("agent-ro", RO)):
        c.secrets.database.create_role(
            name=name,
            db_name="pg",
            creation_statements=statements,
            revocation_statements=REVOKE,
            default_ttl="5m",
            max_ttl="1h",
        )


@dataclass
class Vaulted:
    proxy: PostgresProxy
    broker: Broker
    sink: CaptureSink
    bao: OpenBao
    admin_dsn: str
    """The database as its superuser (to look at pg_roles)."""
    data_dir: Path

    def dsn(self) -> str:
        assert self.proxy.address is not None
        host, port = self.proxy.address
        return f"postgresql://reporter:{TOKEN}@{host}:{port}/{self.admin_dsn.rsplit('/', 1)[1]}"

    async def roles(self) -> set[str]:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            rows = await conn.fetch("select rolname from pg_roles where rolname like 'v-%'")
        finally:
            await conn.close()
        return {r["rolname"] for r in rows}


async def start_vaulted(
    postgres: Postgres, bao: OpenBao, data_dir: Path, static_fallback: bool = False
) -> Vaulted:
    admin_dsn = await fresh_database(postgres)
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute("create table items (id int primary key, name text)")
    await conn.close()
    database = admin_dsn.rsplit("/", 1)[1]
    await asyncio.to_thread(configure_database, bao, postgres, database)
    creds = CredentialsConfig(
        address=bao.address,
        token=bao.root_token,
        timeout=2,
        postgres=VaultPostgresConfig(
            role="agent-rw", read_only_role="agent-ro", static_fallback=static_fallback
        ),
    )
    sink = CaptureSink()
    pdp = make_pdp(sink=sink)
    broker = Broker(creds, data_dir)
    await broker.start(pdp.store)
    # The upstream URL names no usable login of its own (a static fallback would use it).
    upstream = (
        f"postgresql://{postgres.user}:{postgres.password}@127.0.0.1:{postgres.port}/{database}"
    )
    proxy = PostgresProxy(
        PostgresConfig(listen="127.0.0.1:0", upstream=upstream),
        {"reporter": AgentConfig(token=TOKEN)},
        pdp,
        SqlClassifier(Catalog.from_config({})),
        credentials=broker,
    )
    await proxy.start()
    return Vaulted(proxy, broker, sink, bao, admin_dsn, data_dir)


@pytest.fixture
async def vaulted(postgres: Postgres, bao: OpenBao, tmp_path: Path) -> AsyncIterator[Vaulted]:
    v = await start_vaulted(postgres, bao, tmp_path / "data")
    yield v
    await v.proxy.stop()
    await v.broker.stop()


INJECTING_TOKEN = "coder-token-0123456789"
"""Agent `coder`'s token to the HTTP proxy `rt` runs."""


def proxy(rt: Runtime) -> str:
    """The HTTP proxy `rt` runs, with agent `coder`'s credentials in the URL."""
    return f"http://coder:{INJECTING_TOKEN}@" + rt.endpoints["http"].removeprefix("http://")


@pytest.fixture
async def rt(bao: OpenBao, api: str, injected_key: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    """interlock with the HTTP proxy injecting `injected_key` (stored in OpenBao) into
    requests to the test module's own `api` (a loopback upstream under /v1/)."""
    client = hvac.Client(url=bao.address, token=bao.root_token)
    await asyncio.to_thread(
        client.secrets.kv.v2.create_or_update_secret,
        path="saas", secret={"api_key": injected_key}, mount_point="secret",
    )  # fmt: skip
    config = Config(
        data_dir=tmp_path / "data",
        audit={"store": f"sqlite:///{tmp_path / 'audit.db'}"},
        agents={"coder": AgentConfig(token=INJECTING_TOKEN)},
        http=HttpConfig(listen="127.0.0.1:0", allow_networks=["127.0.0.0/8"]),
        credentials=CredentialsConfig(
            address=bao.address,
            token=bao.root_token,
            timeout=2,
            inject=[
                InjectRule(
                    host="127.0.0.1",
                    scheme="http",  # a loopback test API; real rules default to https:443
                    port=int(api.rsplit(":", 1)[1]),
                    path_prefix="/v1/",
                    secret="secret/saas#api_key",
                )
            ],
        ),
    )
    runtime = build(config)
    await start(runtime)
    yield runtime
    await runtime.stop()
