"""The fault matrix: each dependency killed, frozen or slowed under live traffic from real
clients (psql, curl through the HTTP proxy, OpenSSH, curl as NGINX's auth subrequest),
then brought back. Every proxy denies with the reason, audits the denial under a decision
id, /readyz tells the truth, nothing logs a traceback, and service comes back by itself
within `RECOVERY_BOUND_S`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from interlock.testing.faultproxy import Mode
from tests.faults.conftest import (
    CLIENTS,
    TOKEN,
    World,
    curl_cut,
    curl_untrusted,
    psql,
    until_ok,
    until_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

RECOVERY_BOUND_S = 3.0
"""Redis reconnects on the next command and its subscription retries every 0.5 s; the
audit writer backs off at most 1 s. Three seconds leaves room for a loaded CI machine."""


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    noisy = [r for r in caplog.records if r.exc_info and r.name.startswith("interlock")]
    assert not noisy, [f"{r.name}: {r.getMessage()}" for r in noisy]


@contextlib.asynccontextmanager
async def redis_fault(world: World, fault: str) -> AsyncIterator[None]:
    """Redis killed (and restarted empty on its port), frozen, or behind a link slower
    than the store's 1 s operation timeout."""
    if fault == "kill":
        world.redis.kill()
    elif fault == "freeze":
        world.redis.freeze()
    else:
        world.redis_link.latency = 1.5
    try:
        yield
    finally:
        if fault == "kill":
            world.redis.revive()
        elif fault == "freeze":
            world.redis.thaw()
        else:
            world.redis_link.latency = 0.0


# The slow link takes the same path in every proxy as the frozen store: two suffice.
REDIS_CASES = [
    *((proxy, fault) for fault in ("kill", "freeze") for proxy in CLIENTS),
    ("postgres", "slow"),
    ("http", "slow"),
]


@pytest.mark.parametrize(("proxy", "fault"), REDIS_CASES)
async def test_redis_fault_denies_with_the_reason_audited_and_recovers(
    world: World, proxy: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = CLIENTS[proxy]
    assert (await client(world)).ok
    async with redis_fault(world, fault):
        asked = time.monotonic()
        answer = await client(world)
        world.measured[f"redis {fault} / {proxy}: denied in"] = round(time.monotonic() - asked, 3)
        assert not answer.ok
        assert "state store unavailable" in answer.text, answer.text
        record = await world.record(answer.decision)
        assert record["effect"] == "deny"
        assert any("state store unavailable" in r for r in record["reasons"])
        status, body = await world.readyz()
        assert status == 503, body
        assert body["down"] == ["redis"], body
    took = await until_ok(world, client, RECOVERY_BOUND_S)
    world.measured[f"redis {fault} / {proxy}"] = round(took, 3)
    await until_ready(world, RECOVERY_BOUND_S)
    no_tracebacks(caplog)


async def test_a_response_whose_taint_cannot_be_recorded_is_withheld(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        answer = await curl_cut(world)
    finally:
        world.redis.revive()
    assert not answer.ok
    assert "outside text" not in answer.text
    assert "response withheld: state store unavailable" in answer.text, answer.text
    assert answer.text.endswith("\n403")
    record = await world.record(answer.decision)
    assert record["effect"] == "deny"
    await until_ready(world, RECOVERY_BOUND_S)
    no_tracebacks(caplog)


@pytest.mark.parametrize("fault", ["kill", "freeze"])
async def test_redis_fault_keeps_an_open_postgres_session(
    world: World, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    conn = await asyncpg.connect(world.dsn)
    try:
        assert await conn.fetchval("select 1") == 1
        prepared = await conn.prepare("select 4")
        async with redis_fault(world, fault):
            with pytest.raises(asyncpg.PostgresError, match="state store unavailable") as err:
                await conn.fetchval("select 2")
            assert err.value.sqlstate == "42501"
            # Parsed while Redis answered: its Execute re-reads the posture, and is denied.
            with pytest.raises(asyncpg.PostgresError, match="state store unavailable") as err:
                await prepared.fetchval()
            record = await world.record(str(err.value).rsplit("decision ", 1)[1].rstrip(")"))
            assert record["effect"] == "deny"
        started = time.monotonic()
        while True:
            with contextlib.suppress(asyncpg.PostgresError):
                if await conn.fetchval("select 3") == 3:
                    break
            assert time.monotonic() - started < RECOVERY_BOUND_S
            await asyncio.sleep(0.05)
        world.measured[f"redis {fault} / postgres open session"] = round(
            time.monotonic() - started, 3
        )
    finally:
        await conn.close()
    no_tracebacks(caplog)


async def test_postgres_login_refused_while_redis_is_down_names_the_reason(world: World) -> None:
    async with redis_fault(world, "kill"):
        with pytest.raises(asyncpg.PostgresError, match="state store unavailable") as err:
            await asyncpg.connect(world.dsn)
        assert err.value.sqlstate == "57P03"
        record = await world.record(str(err.value).rsplit("decision ", 1)[1].rstrip(")"))
        assert record["action"]["operation"] == "connect"
        assert record["effect"] == "deny"


@pytest.mark.parametrize("fault", ["kill", "freeze"])
async def test_admin_api_answers_503_naming_the_state_store(
    world: World, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Every route that touches Redis while it is dead; the two first reported while it is
    # frozen (each waits out the store's 1 s operation timeout).
    routes = [
        ("POST", "/v1/agents/coder/restrict"),
        ("GET", "/v1/approvals"),
        ("POST", "/v1/agents/coder/isolate"),
        ("POST", "/v1/agents/coder/restore"),
        ("GET", "/v1/agents"),
        ("GET", "/v1/agents/coder"),
        ("GET", "/v1/approvals/0190aaaa-0000-7000-8000-000000000000"),
        ("POST", "/v1/approvals/0190aaaa-0000-7000-8000-000000000000/deny"),
    ]
    async with world.api() as api:
        async with redis_fault(world, fault):
            for method, path in routes if fault == "kill" else routes[:2]:
                body = {"restrictions": ["no_egress"], "approver": "alice@example.com"}
                r = await api.request(method, path, json=body)
                assert r.status_code == 503, (path, r.status_code, r.text)
                assert r.json()["dependency"] in ("state store", "shared approvals"), r.text
            metrics = (await api.get("/metrics")).text
            assert 'interlock_dependency_up{name="redis"} 0' in metrics
        await until_ready(world, RECOVERY_BOUND_S)
        metrics = (await api.get("/metrics")).text
        assert 'interlock_dependency_up{name="redis"} 1' in metrics
        r = await api.get("/v1/approvals")
        assert r.status_code == 200, r.text
    no_tracebacks(caplog)


@pytest.mark.parametrize("fault", ["down", "freeze"])
async def test_audit_store_fault_follows_the_fail_open_tier_rule(
    world: World, fault: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    """Low-risk actions pass (queued records, written once the store is back); anything
    above `low` is denied with the reason; /readyz names the audit store."""
    assert (await psql(world)).ok
    await world.audit_link.set(fault)
    try:
        low = await psql(world)
        assert low.ok, low.text
        asked = time.monotonic()
        held = await psql(world, "create table audit_down (a int)")
        world.measured[f"audit store {fault}: denied in"] = round(time.monotonic() - asked, 3)
        assert not held.ok
        assert "audit log unavailable" in held.text, held.text
        denied = held.decision
        status, body = await world.readyz()
        assert status == 503, body
        assert body["down"] == ["audit_store"], body
        async with world.api() as api:
            r = await api.get("/v1/audit/checkpoint")
        assert r.status_code == 503, r.text
        assert r.json()["dependency"] == "audit store"
    finally:
        await world.audit_link.set("pass")
    took = await until_ready(world, RECOVERY_BOUND_S)
    world.measured[f"audit store {fault}"] = round(took, 3)
    record = await world.record(denied)  # queued while down, written once back
    assert record["effect"] == "deny"
    assert "audit log unavailable" in record["reasons"]
    no_tracebacks(caplog)


@pytest.mark.parametrize("fault", ["down", "freeze"])
async def test_upstream_database_fault_ends_logins_cleanly_and_reports_degraded(
    world: World, fault: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    conn = await asyncpg.connect(world.dsn)
    await world.db_link.set(fault)
    try:
        answer = await psql(world)
        assert not answer.ok
        expected = "login timed out" if fault == "freeze" else "cannot reach the database"
        assert expected in answer.text, answer.text
        if fault == "down":
            refused = await world.record(answer.decision)
            assert refused["action"]["operation"] == "connect"
            assert refused["effect"] == "deny"
        status, body = await world.readyz()
        assert status == 200, body
        assert body["status"] == "degraded", body
        assert not body["dependencies"]["postgres_upstream"]["up"]
        if fault == "down":
            with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
                await asyncio.wait_for(conn.fetchval("select 1"), 5)
    finally:
        await world.db_link.set("pass")
        conn.terminate()
    took = await until_ok(world, psql, RECOVERY_BOUND_S)
    world.measured[f"upstream database {fault} / postgres"] = round(took, 3)
    await until_ready(world, RECOVERY_BOUND_S)
    no_tracebacks(caplog)


async def pending(world: World, present: bool, within: float = 5.0) -> list[dict[str, str]]:
    """The approvals list once it has (or no longer has) an entry."""
    started = time.monotonic()
    async with world.api() as api:
        while True:
            listed = list((await api.get("/v1/approvals")).json()["pending"])
            if bool(listed) == present:
                return listed
            assert time.monotonic() - started < within, listed
            await asyncio.sleep(0.05)


async def test_a_human_deny_is_recorded_with_the_effect_enforced(world: World) -> None:
    conn = await asyncpg.connect(world.dsn)
    try:
        held = asyncio.create_task(conn.execute("create table refused_by_alice (a int)"))
        (request,) = await pending(world, present=True)
        async with world.api() as api:
            r = await api.post(
                f"/v1/approvals/{request['id']}/deny", json={"approver": "alice@example.com"}
            )
            assert r.status_code == 200, r.text
        with pytest.raises(asyncpg.PostgresError, match="denied"):
            await held
    finally:
        await conn.close()
    (answer,) = [d for d in await world.records() if d["parents"] == [request["id"]]]
    assert answer["approver"] == {"id": "alice@example.com", "channel": "api", "approved": False}
    assert answer["effect"] == "deny"


def held_client(world: World, proxy: str) -> list[str]:
    """A real client whose action the bundled policy holds for approval."""
    if proxy == "postgres":
        return ["psql", "-X", "-c", "create table abandoned (a int)", world.dsn]
    if proxy == "http":
        # An unsure agent (confidence 0.1) is medium risk.
        return [
            "curl", "-sS", "-x", f"http://coder:{TOKEN}@{world.endpoint('http')}",
            "-H", "X-Interlock-Confidence: 0.1", f"{world.site}/ok",
        ]  # fmt: skip
    host, port = world.endpoint("ssh").rsplit(":", 1)
    return [
        "ssh", "-p", port, "-i", str(world.agent_key), "-F", "/dev/null",
        "-o", f"UserKnownHostsFile={world.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", f"coder@{host}",
        "rm -rf /tmp/interlock-fault-test-never-there",
    ]  # fmt: skip


@pytest.mark.parametrize("proxy", ["postgres", "http", "ssh"])
async def test_a_held_action_whose_client_was_killed_leaves_the_approvals_list(
    world: World, proxy: str
) -> None:
    if proxy == "ssh":
        # Outside text read first: a destructive command after it is medium risk.
        assert (await curl_untrusted(world)).ok
    try:
        proc = await asyncio.create_subprocess_exec(
            *held_client(world, proxy),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        (request,) = await pending(world, present=True)
        proc.kill()
        await proc.wait()
        started = time.monotonic()
        await pending(world, present=False, within=2.0)
        world.measured[f"held {proxy} action withdrawn after its client was killed"] = round(
            time.monotonic() - started, 3
        )
    finally:
        if proxy == "ssh":  # the taint goes with Redis's contents
            world.redis.kill()
            world.redis.revive()
            await until_ready(world, RECOVERY_BOUND_S)
    (outcome,) = [d for d in await world.records() if d["parents"] == [request["id"]]]
    assert outcome["effect"] == "deny"
    assert outcome["action"]["details"]["channel"] == "withdrawn"
