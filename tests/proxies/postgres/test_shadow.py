"""Shadow mode through the real Postgres proxy: asyncpg clients against the real server,
which says itself whether a statement the policy denies ran."""

# ruff: noqa: S608 (statements built from integers the test chose)
from __future__ import annotations

import asyncpg
import pytest

from interlock.audit.record import document
from interlock.audit.shadow import summarize
from interlock.config import Config, PostgresConfig
from interlock.core.context import MemoryStore
from interlock.core.model import Effect
from interlock.core.modes import Mode
from tests.proxies.postgres.conftest import HR_TOKEN, Proxied

pytestmark = pytest.mark.integration
SHADOW = Config(postgres=PostgresConfig(mode="shadow")).modes()
AGAIN_ENFORCED = r"decided again since it was prepared \(enforce mode"
ENFORCE = Config(postgres=PostgresConfig(mode="enforce")).modes()


def do_insert(row: int) -> str:
    """A DO block (forbidden by the bundled policy) that leaves a trace in the table."""
    return f"do $$ begin insert into orders values ({row}, 1); end $$"


async def rows(proxied: Proxied, *ids: int) -> list[int]:
    """Which of `ids` the server holds, asked through the proxy as hr (a plain read)."""
    conn = await asyncpg.connect(proxied.dsn("hr", HR_TOKEN))
    try:
        found = await conn.fetch(f"select id from orders where id in ({', '.join(map(str, ids))})")
        return sorted(r["id"] for r in found)
    finally:
        await conn.close()


async def run(proxied: Proxied, row: int) -> tuple[list[object], str]:
    """The same traffic each time: a read, a masked read, a denied DO block."""
    conn = await asyncpg.connect(proxied.dsn())
    try:
        count = await conn.fetchval("select count(*) from orders where id <= 20")
        names = [r["name"] for r in await conn.fetch("select name from payroll order by id")]
        try:
            await conn.execute(do_insert(row))
            outcome = "ran"
        except asyncpg.InsufficientPrivilegeError:
            outcome = "denied"
    finally:
        await conn.close()
    return [count, names], outcome


def statements(proxied: Proxied, start: int) -> list[tuple[object, ...]]:
    return [
        (
            r.action.operation.value,
            r.action.details.get("statements"),
            r.decision.effect.value,
            r.decision.reasons,
            r.decision.obligations,
        )
        for r in proxied.sink.records[start:]
    ]


async def test_same_statements_same_decisions_different_outcomes(proxied: Proxied) -> None:
    proxied.pdp.modes = SHADOW
    shadow_results, shadow_outcome = await run(proxied, 101)
    shadow_log = statements(proxied, 0)
    assert shadow_outcome == "ran"
    assert shadow_results == [20, ["ann", "bob"]], "nothing masked in shadow"
    assert [r.enforced for r in proxied.sink.records] == [True, False, False]

    proxied.pdp.modes = ENFORCE
    proxied.pdp.store = MemoryStore(proxied.pdp.clock)
    start = len(proxied.sink.records)
    enforce_results, enforce_outcome = await run(proxied, 102)
    assert enforce_outcome == "denied"
    assert enforce_results == [20, [None, None]], "masked when enforced"
    assert statements(proxied, start) == shadow_log
    assert all(r.enforced for r in proxied.sink.records[start:])
    masked = proxied.sink.records[start + 1].decision
    assert [o.type for o in masked.obligations] == ["mask"]
    assert await rows(proxied, 101, 102) == [101], "the server ran the shadowed DO block only"


async def test_switching_one_agent_to_enforce_mid_session(proxied: Proxied) -> None:
    proxied.pdp.modes = SHADOW
    reporter = await asyncpg.connect(proxied.dsn())
    hr = await asyncpg.connect(proxied.dsn("hr", HR_TOKEN))
    try:
        await reporter.execute(do_insert(201))
        await hr.execute(do_insert(202))
        await proxied.pdp.set_agent_mode("reporter", Mode.ENFORCE, "test")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="do_block"):
            await reporter.execute(do_insert(203))
        await hr.execute(do_insert(204))
        assert await reporter.fetchval("select 1") == 1, "the session goes on"
    finally:
        await reporter.close()
        await hr.close()
    assert await rows(proxied, 201, 202, 203, 204) == [201, 202, 204]
    denied = [r for r in proxied.sink.records if r.decision.effect is Effect.DENY]
    assert [(r.action.agent.id, r.enforced) for r in denied] == [
        ("reporter", False),
        ("hr", False),
        ("reporter", True),
        ("hr", False),
    ]


async def test_a_statement_prepared_in_shadow_mode_stops_once_the_agent_is_enforced(
    proxied: Proxied,
) -> None:
    """Prepared in shadow mode (let through, decision recorded unenforced), executed
    again after the agent was switched to enforce: the Execute is decided again, in the
    mode now in force, and the server never runs it."""
    proxied.pdp.modes = SHADOW
    conn = await asyncpg.connect(proxied.dsn())
    try:
        block = await conn.prepare(do_insert(401))
        await block.fetch()
        await conn.execute("delete from orders where id = 401")
        await proxied.pdp.set_agent_mode("reporter", Mode.ENFORCE, "test")
        for _ in range(2):  # and stays stopped
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match=AGAIN_ENFORCED):
                await block.fetch()
        await proxied.pdp.set_agent_mode("reporter", Mode.SHADOW, "test")
        await block.fetch()  # decided again in shadow mode: let through again
    finally:
        await conn.close()
    assert await rows(proxied, 401) == [401]
    denied = [r for r in proxied.sink.records if r.decision.effect is Effect.DENY]
    assert [r.enforced for r in denied] == [False, True, True, False]


async def test_the_report_counts_what_the_log_holds(proxied: Proxied) -> None:
    proxied.pdp.modes = SHADOW
    await run(proxied, 301)
    await run(proxied, 302)
    docs = [document(r) for r in proxied.sink.records]
    report = summarize(docs, protocol="postgres").to_json()
    assert report["not_enforced"] == sum(not d["enforced"] for d in docs) == 4
    assert report["by_effect"] == {"deny": 2, "allow": 2}
    assert {(r["effect"], r["count"]) for r in report["by_reason"]} >= {("deny", 2), ("allow", 2)}
    assert report["top_statements"][0]["count"] == 2
    assert report["agents"] == {"reporter": {"deny": 2, "allow": 2}}
