"""Labels discovered from column comments, and views over labelled columns."""

from __future__ import annotations

import asyncpg
import pytest

from interlock.classify.sql import Catalog, SqlClassifier
from interlock.config import AgentConfig, PostgresConfig
from interlock.proxies.postgres.discovery import parse_comment
from interlock.proxies.postgres.server import PostgresProxy
from interlock.testing import CaptureSink, make_pdp
from tests.audit.conftest import fresh_database
from tests.services import Postgres

TOKEN = "reporter-token-0123456789"


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("classification: pii", {"pii"}),
        ("Classification: financial, restricted", {"financial", "restricted"}),
        ("just a comment", set()),
        ("", set()),
    ],
)
def test_comment_parsing(text: str, labels: set[str]) -> None:
    assert parse_comment(text) == labels


@pytest.mark.integration
async def test_comments_and_views_label_data_through_the_proxy(postgres: Postgres) -> None:
    upstream = await fresh_database(postgres)
    conn = await asyncpg.connect(upstream)
    await conn.execute("""
        create table staff (id int, email text, salary int);
        insert into staff values (1, 'a@x', 10);
        comment on column staff.email is 'classification: pii';
        comment on column staff.salary is 'classification: financial, restricted';
        create view staff_emails as select id, email from staff;
    """)
    await conn.close()
    sink = CaptureSink()
    proxy = PostgresProxy(
        PostgresConfig(listen="127.0.0.1:0", upstream=upstream, discover_labels=True),
        {"reporter": AgentConfig(token=TOKEN)},
        make_pdp(sink=sink),
        SqlClassifier(Catalog.from_config({"public.other.x": ["internal"]})),
    )
    await proxy.start()
    try:
        assert proxy.address is not None
        client = await asyncpg.connect(
            host=proxy.address[0],
            port=proxy.address[1],
            user="reporter",
            password=TOKEN,
            database=upstream.rsplit("/", 1)[1],
        )
        try:
            assert await client.fetchval("select salary from staff") == 10
            assert sink.last.action.labels == {"financial", "restricted"}
            assert await client.fetchval("select email from staff_emails") is None
            assert "pii" in sink.last.action.labels
        finally:
            await client.close()
        assert proxy.classifier.catalog.labels["public.other.x"] == {"internal"}
    finally:
        await proxy.stop()
