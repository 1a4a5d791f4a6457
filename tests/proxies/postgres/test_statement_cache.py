"""Statements that share a cached classification are still decided as what they run."""

from __future__ import annotations

import asyncpg
import pytest

from tests.proxies.postgres.conftest import Proxied

pytestmark = pytest.mark.integration


async def test_names_differing_in_a_non_ascii_digit_are_decided_as_themselves(
    proxied: Proxied,
) -> None:
    """U+0661 and U+0662 are names to PostgreSQL (Arabic-Indic digits are identifier
    characters to its lexer), not numbers a cache key may shape away: each statement's
    decision names the table the server read, which the rows prove."""
    up = proxied.proxy.upstream
    owner = await asyncpg.connect(
        host=up.host, port=up.port, user=up.user, password=up.password, database=up.database
    )
    try:
        await owner.execute(
            'create table "\u0661" (v text); insert into "\u0661" values (\'one\');'
            'create table "\u0662" (v text); insert into "\u0662" values (\'two\');'
            'grant select on "\u0661", "\u0662" to public'
        )
    finally:
        await owner.close()
    conn = await asyncpg.connect(proxied.dsn())
    try:
        for name, value in (("\u0662", "two"), ("\u0661", "one")):
            rows = await conn.fetch(f"select v from {name}")  # noqa: S608 (two fixed names)
            assert [r["v"] for r in rows] == [value]
            assert proxied.sink.last.action.details["reads"] == (f"public.{name}",)
    finally:
        await conn.close()
