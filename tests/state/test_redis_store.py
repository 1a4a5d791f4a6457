"""The shared state store on a real Redis: the same context semantics as the embedded
store, posture pushed to every instance, and fail-closed behaviour when Redis goes away."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interlock.core.context import BASELINE_MINUTES, MemoryStore, Posture, RecentAction
from interlock.core.model import Action, Agent, Effect, Operation
from interlock.core.redis_store import RedisStore
from interlock.errors import StateError
from interlock.testing import CaptureSink, make_pdp
from interlock.testing.services import Redis
from tests.services import free_port, redis_server

pytestmark = pytest.mark.integration
AGENT = Agent("reporter", ("analyst",), "alice@example.com", authn="token")


@pytest.fixture
async def store(redis: Redis) -> AsyncIterator[RedisStore]:
    s = RedisStore(redis.url)
    await s.start()
    yield s
    await s.close()


async def test_context_is_kept_as_the_embedded_store_keeps_it(store: RedisStore) -> None:
    now = time.time()
    fresh = await store.view("a", "pg:read:t", now)
    assert (fresh.first_seen, fresh.taints, fresh.actions_last_minute) == (True, frozenset(), 0)
    for i in range(3):
        await store.record(
            "a", RecentAction(f"d{i}", now + i, "pg", "read", "t", "allow"), "pg:read:t",
            {"untrusted_content": now + 60} if i == 0 else {},
        )  # fmt: skip
    assert (await store.view("a", "pg:read:t", now + 3)).recent == (), "read only when asked"
    view = await store.view("a", "pg:read:t", now + 3, recent=True)
    assert view.first_seen is False
    assert view.actions_last_minute == 3
    assert [r.decision_id for r in view.recent] == ["d0", "d1", "d2"]
    assert view.taints == {"untrusted_content"}
    assert view.taint_sources == {"untrusted_content": "d0"}
    assert (await store.view("a", "pg:read:t", now + 61)).taints == frozenset(), "expired"
    await store.add_taint("a", "untrusted_content", now + 10, "d9")
    later = await store.view("a", "pg:read:t", now + 30)
    assert later.taints == {"untrusted_content"}, "a shorter taint does not shorten a longer"
    await store.record_approval("a", "pg:read:t", True)
    await store.record_approval("a", "pg:read:t", False)
    await store.record_approval("a", "pg:read:t", True)
    counted = await store.view("a", "pg:read:t", now)
    assert (counted.approved, counted.denied) == (2, 1)
    await store.add_fingerprints("a", "d0", frozenset({"pii"}), ["fp1", "fp2"], now + 60)
    assert await store.has_fingerprints("a")
    (flow,) = await store.flows("a", frozenset({"fp2", "nope"}), now)
    assert (flow.source, flow.labels) == ("d0", {"pii"})
    assert await store.flows("a", frozenset({"fp1"}), now + 61) == []


async def test_posture_changes_reach_every_instance_within_a_second(redis: Redis) -> None:
    one, two = RedisStore(redis.url), RedisStore(redis.url)
    await one.start()
    await two.start()
    heard: asyncio.Queue[tuple[str, Posture]] = asyncio.Queue()
    two.subscribe(lambda agent, posture: heard.put_nowait((agent, posture)))
    pdp_two = make_pdp(store=two)
    try:
        started = time.monotonic()
        await one.restrict("reporter", [], isolate=True, reason="test")
        agent, posture = await asyncio.wait_for(heard.get(), 1.0)
        assert (agent, posture.isolated) == ("reporter", True)
        assert time.monotonic() - started < 1.0
        decision = await pdp_two.decide(Action(AGENT, "postgres", Operation.READ, "public.t"))
        assert decision.effect is Effect.DENY, "the other instance refuses at once"
        await one.restrict("reporter", ["read_only"])
        await two.restrict("reporter", ["no_egress"])
        both = await one.posture("reporter", time.time())
        assert both.restrictions == {"read_only", "no_egress"}, "concurrent changes both count"
        await one.restore("reporter")
        assert (await two.posture("reporter", time.time())).normal
    finally:
        await one.close()
        await two.close()


async def test_redis_down_at_start_is_a_clear_error() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(StateError, match=r"Redis at redis://127\.0\.0\.1:\d+/0 unreachable"):
        await store.start()


async def test_redis_down_mid_run_denies_and_recovers_when_it_returns() -> None:
    with redis_server() as first:
        port = first.port
        store = RedisStore(first.url)
        await store.start()
        heard: list[tuple[str, Posture]] = []
        store.subscribe(lambda agent, posture: heard.append((agent, posture)))
        sink = CaptureSink()
        pdp = make_pdp(store=store, sink=sink)
        read = Action(AGENT, "postgres", Operation.READ, "public.t")
        assert (await pdp.decide(read)).effect is Effect.ALLOW
    try:
        # Redis is gone: decisions are denied, saying why.
        down = await pdp.decide(read)
        assert down.effect is Effect.DENY
        assert "state store unavailable" in down.reasons[0]
        with redis_server(port) as again:
            await store.restrict("reporter", [], isolate=True)  # through the new server
            for _ in range(60):
                if any(p.isolated for _, p in heard):
                    break
                await asyncio.sleep(0.1)
            assert any(p.isolated for _, p in heard), "the subscription came back"
            decision = await pdp.decide(read)
            assert decision.effect is Effect.DENY
            assert "isolated" in " ".join(decision.reasons)
            await store.restore("reporter")
            assert (await pdp.decide(read)).effect is Effect.ALLOW
            assert again.port == port
    finally:
        await store.close()


async def test_a_redis_user_without_scripting_gets_every_decision_denied(redis: Redis) -> None:
    """Context is read and recorded by Lua scripts: a user the ACL forbids them is told
    so in each denial, and nothing is decided on a partial read."""
    admin = RedisStore(redis.url)
    await admin.start()
    await admin.client.execute_command(
        "ACL", "SETUSER", "noscript", "on", ">pw", "~*", "&*", "+@all", "-@scripting"
    )
    store = RedisStore(f"redis://noscript:pw@127.0.0.1:{redis.port}/0")
    await store.start()
    try:
        pdp = make_pdp(store=store, sink=CaptureSink())
        denied = await pdp.decide(Action(AGENT, "postgres", Operation.READ, "public.t"))
        assert denied.effect is Effect.DENY
        assert "state store unavailable: NoPermissionError" in denied.reasons[0]
    finally:
        await store.close()
        await admin.close()


def _late_replies(store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Hold each posture GET's reply 0.2 s after Redis answered it (Redis has read the
    value by then, as a reply still on the wire has); returns the keys read, in order."""
    real = store.client.get
    asked: list[str] = []

    async def late(key: str) -> Any:
        asked.append(key)
        value = await real(key)
        await asyncio.sleep(0.2)
        return value

    monkeypatch.setattr(store.client, "get", late)
    return asked


async def test_callers_at_once_share_one_posture_read(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.restrict("a", ["read_only"])
    asked = _late_replies(store, monkeypatch)
    now = time.time()
    first = asyncio.create_task(store.posture("a", now))
    await asyncio.sleep(0.05)  # its GET is out
    rest = await asyncio.gather(*(store.posture("a", now) for _ in range(99)))
    assert (await first).restrictions == {"read_only"}
    assert all(p.restrictions == {"read_only"} for p in rest)
    assert len(asked) == 2, "the 99 that came during the first read share the next one"


async def test_a_shared_read_never_predates_its_caller(
    redis: Redis, store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller must see every change committed before it asked: it may not join a read
    already sent, whose answer can be older than the change."""
    other = RedisStore(redis.url)
    await other.start()
    try:
        asked = _late_replies(store, monkeypatch)
        early = asyncio.create_task(store.posture("a", time.time()))
        await asyncio.sleep(0.05)  # answered by Redis (normal), reply not yet read
        await other.restrict("a", ["read_only"])  # committed through another client
        late = await store.posture("a", time.time())
        assert late.restrictions == {"read_only"}
        assert (await early).restrictions == frozenset()
        assert len(asked) == 2
    finally:
        await other.close()


async def test_per_minute_counts_are_bounded_and_a_dormant_agent_has_a_zero_baseline(
    store: RedisStore,
) -> None:
    """An agent acting every minute for hours keeps the embedded store's 61 minutes in
    Redis, not one per minute it ever acted; after hours of silence both stores say its
    baseline is 0 actions a minute, not unknown."""
    start = time.time() // 60 * 60
    local = MemoryStore(clock=lambda: start)
    for minute in range(150):
        t = start + 60 * minute + 1
        done = RecentAction(f"d{minute}", t, "pg", "read", "t", "allow")
        for s in (store, local):
            await s.record("a", done, "pg:read:t", {})
    fields = await store.client.hlen("interlock:a:a:minutes")
    assert fields == BASELINE_MINUTES + 1
    for at in (start + 150 * 60 + 5, start + 150 * 60 + 3 * 3600):
        assert await store.context("a", "pg:read:t", at) == await local.context(
            "a", "pg:read:t", at
        )
    _, dormant, _ = await store.context("a", "pg:read:t", start + 150 * 60 + 3 * 3600)
    assert dormant.baseline_per_minute == 0.0


async def test_a_read_queued_at_close_fails_instead_of_reconnecting(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = RedisStore(redis.url)
    await s.start()
    asked = _late_replies(s, monkeypatch)
    first = asyncio.create_task(s.posture("a", time.time()))
    await asyncio.sleep(0.05)  # out, reply held
    queued = asyncio.create_task(s.posture("a", time.time()))
    await asyncio.sleep(0)
    await s.close()
    assert (await first).normal, "the read in flight finished before the client closed"
    with pytest.raises(StateError, match="closed"):
        await queued
    assert len(asked) == 1, "nothing was sent after close"


# One step of an agent's history: (kind, seconds later, a small argument).
_STEP = st.tuples(
    st.sampled_from(["record", "taint", "answer", "restrict", "prints", "idle"]),
    st.floats(min_value=0, max_value=90, allow_nan=False),
    st.integers(min_value=0, max_value=3),
)


@given(steps=st.lists(_STEP, max_size=25), ask=st.integers(min_value=0, max_value=3))
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_the_one_round_trip_context_reads_what_the_separate_reads_read(
    redis: Redis, steps: list[tuple[str, float, int]], ask: int
) -> None:
    """`context` (one script) answers what `posture`, `view` and `has_fingerprints` (one
    command or pipeline each) answer, and what the embedded store answers, after any
    history; `record` (also one script) keeps what the embedded store keeps."""

    async def run() -> None:
        shared = RedisStore(redis.url)
        await shared.start()
        try:
            agent = f"agent-{uuid.uuid4().hex}"
            start = time.time()
            local = MemoryStore(clock=lambda: start)
            now = start
            for i, (kind, later, n) in enumerate(steps):
                now += later + (3600.0 * n if kind == "idle" else 0.0)
                for store in (shared, local):
                    if kind == "record":
                        taints = {f"label{n}": now + 60} if n else {}
                        done = RecentAction(f"d{i}", now, "pg", "read", f"t{n}", "allow")
                        await store.record(agent, done, f"pg:read:t{n}", taints)
                    elif kind == "taint":
                        await store.add_taint(agent, f"label{n}", now + 30 * n, f"s{i}")
                    elif kind == "answer":
                        await store.record_approval(agent, f"pg:read:t{n}", n % 2 == 0)
                    elif kind == "idle":
                        pass
                    elif kind == "restrict":
                        await store.restrict(agent, ["read_only"], isolate=n == 3, until=now + 50)
                    else:
                        await store.add_fingerprints(
                            agent, f"d{i}", frozenset({"pii"}), ["f"], now + 60
                        )
            target = f"pg:read:t{ask}"
            for at in (now, now + 45, now + 100):
                posture, view, prints = await shared.context(agent, target, at)
                assert posture == await shared.posture(agent, at)
                assert view == await shared.view(agent, target, at)
                assert prints == await shared.has_fingerprints(agent)
                assert (posture, view, prints) == await local.context(agent, target, at)
        finally:
            await shared.close()

    asyncio.run(run())
