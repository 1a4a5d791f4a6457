"""Refusals anyone can cause without credentials (logins past max_client_conn, failed
authentication) are audited under the flood limit: each is a record whose id its client
is told, or counted in a later record of its address; none is lost."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from interlock.core.record import DecisionRecord
from interlock.core.refusal import UNRECORDED, refusals_counted
from interlock.proxies.postgres import messages as m
from tests.proxies.postgres.conftest import TOKEN, Proxied

pytestmark = pytest.mark.integration

LIMITED = 60.0
"""The flood limit's interval in these tests: every refusal after the first is counted."""


def limited(proxied: Proxied) -> list[DecisionRecord]:
    return [r for r in proxied.sink.records if "suppressed_since_last" in r.action.details]


async def test_logins_past_max_client_conn_are_recorded_or_counted(proxied: Proxied) -> None:
    proxied.proxy.config = proxied.proxy.config.model_copy(update={"max_client_conn": 1})
    proxied.proxy.flood.budget.interval = LIMITED
    first = await asyncpg.connect(proxied.dsn())
    try:
        told: list[str] = []
        for _ in range(3):
            with pytest.raises(asyncpg.TooManyConnectionsError, match="max_client_conn 1") as e:
                await asyncpg.connect(proxied.dsn())
            told.append(str(e.value))
        refused = await asyncio.to_thread(proxied.psql, "select 1")
        assert refused.returncode != 0
        told.append(refused.stderr)
        assert await first.fetchval("select 1") == 1, "the session within the limit goes on"
    finally:
        await first.close()
    await proxied.proxy.flood.stop()  # writes what it still counted
    written, summary = limited(proxied)
    assert written.decision.reasons == ("too many client connections (max_client_conn 1)",)
    details = written.action.details
    assert (details["shed"], details["client"], details["user"]) == (True, "127.0.0.1", "reporter")
    assert written.action.agent.id == "anonymous"
    assert written.decision.decision_id in told[0], "the refused client is told the id"
    assert all(UNRECORDED in t for t in told[1:]), told
    assert summary.action.details["suppressed_since_last"] == 3
    assert refusals_counted(proxied.sink.records) == 4


async def test_failed_logins_are_recorded_or_counted(proxied: Proxied) -> None:
    proxied.proxy.flood.budget.interval = LIMITED
    told: list[str] = []
    for user, password in [("reporter", "wrong"), ("stranger", TOKEN), ("reporter", "x" * 20)]:
        with pytest.raises(asyncpg.InvalidPasswordError) as e:
            await asyncpg.connect(proxied.dsn(user=user, password=password))
        told.append(str(e.value))
    refused = await asyncio.to_thread(proxied.psql, "select 1", "wrong-again")
    assert "password authentication failed" in refused.stderr
    told.append(refused.stderr)
    await proxied.proxy.flood.stop()
    written, summary = limited(proxied)
    assert written.action.details["user"] == "reporter"
    assert written.decision.decision_id in told[0]
    assert all(UNRECORDED in t for t in told[1:]), told
    assert summary.action.details["suppressed_since_last"] == 3
    assert refusals_counted(proxied.sink.records) == 4
    assert len(proxied.sink.records) == 2, "nothing else was written"


async def test_the_flood_limit_is_per_client_address(proxied: Proxied) -> None:
    """A flood from one address does not hide another address's refusal."""
    proxied.proxy.config = proxied.proxy.config.model_copy(update={"max_client_conn": 1})
    proxied.proxy.flood.budget.interval = LIMITED
    first = await asyncpg.connect(proxied.dsn())
    try:
        for source in ("127.0.0.1", "127.0.0.2", "127.0.0.2"):
            reader, writer = await asyncio.open_connection(
                proxied.host, proxied.port, local_addr=(source, 0)
            )
            writer.write(m.StartupMessage({"user": "reporter"}).encode())
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            assert b"53300" in answer
    finally:
        await first.close()
    by_address = [
        (r.action.details["client"], r.action.details["suppressed_since_last"])
        for r in limited(proxied)
    ]
    assert by_address == [("127.0.0.1", 0), ("127.0.0.2", 0)]
