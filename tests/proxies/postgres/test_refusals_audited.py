"""What the Postgres proxy refuses or ends is a decision in the log: an isolation's ending
of an open session (the real backend is gone), logins refused after it, and logins
refused before authentication."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.proxies.postgres.conftest import Proxied

pytestmark = pytest.mark.integration

CAUSE = "01a24dc8-0000-7000-8000-000000000001"
"""The decision id the isolating posture names (as `PDP._apply` writes it)."""


def refusals(proxied: Proxied) -> list[tuple[str, str, tuple[str, ...]]]:
    return [
        (r.decision.reasons[0], r.action.agent.id, r.action.parents)
        for r in proxied.sink.records
        if r.action.details.get("guard")
    ]


async def test_isolation_ending_a_session_and_refusing_logins_is_recorded(
    proxied: Proxied,
) -> None:
    upstream = proxied.proxy.config.upstream
    conn = await asyncpg.connect(proxied.dsn())
    backend = await conn.fetchval("select pg_backend_pid()")
    await proxied.pdp.store.restrict("reporter", [], isolate=True, reason=f"decision {CAUSE}")
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
        await conn.fetchval("select 2")
    await conn.close()
    with pytest.raises(asyncpg.PostgresError, match="isolated") as login:
        await asyncpg.connect(proxied.dsn())
    direct = await asyncpg.connect(upstream)
    try:
        for _ in range(100):
            if not await direct.fetchval(
                "select count(*) from pg_stat_activity where pid = $1", backend
            ):
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the upstream backend of the isolated session is still there")
    finally:
        await direct.close()
    ended, refused = refusals(proxied)
    assert ended == ("session ended: agent is isolated", "reporter", (CAUSE,))
    assert refused == ("agent is isolated", "reporter", (CAUSE,))
    ids = [r.decision.decision_id for r in proxied.sink.records if r.action.details.get("guard")]
    assert ids[1] in str(login.value), "the refused client is told the decision id"


async def test_a_failed_authentication_is_recorded_as_anonymous(proxied: Proxied) -> None:
    with pytest.raises(asyncpg.PostgresError, match="password authentication failed"):
        await asyncpg.connect(proxied.dsn(password="wrong"))
    [(why, agent, _)] = refusals(proxied)
    assert agent == "anonymous"
    assert 'for user "reporter"' in why
    [record] = proxied.sink.records
    assert record.action.details["user"] == "reporter"
    assert record.engine is None
