"""Session context and posture in the memory store, and posture subscriptions."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.core.context import NORMAL, MemoryStore, Posture, RecentAction, _baseline
from interlock.testing import FakeClock


def recent(i: int, t: float) -> RecentAction:
    return RecentAction(f"d{i}", t, "http", "egress", "x", "allow")


async def test_unknown_agent_has_an_empty_context_and_normal_posture(clock: FakeClock) -> None:
    store = MemoryStore(clock)
    view = await store.view("a", "k", clock())
    assert view.first_seen
    assert not view.taints
    assert view.actions_last_minute == 0
    assert await store.posture("a", clock()) == NORMAL


async def test_targets_are_first_seen_once(clock: FakeClock) -> None:
    store = MemoryStore(clock)
    await store.record("a", recent(1, clock()), "http:egress:x", {})
    assert not (await store.view("a", "http:egress:x", clock())).first_seen
    assert (await store.view("a", "http:egress:y", clock())).first_seen
    assert (await store.view("b", "http:egress:x", clock())).first_seen


async def test_taint_expires(clock: FakeClock) -> None:
    store = MemoryStore(clock)
    await store.add_taint("a", "untrusted_content", clock() + 60)
    assert (await store.view("a", "k", clock())).taints == {"untrusted_content"}
    clock.advance(61)
    assert not (await store.view("a", "k", clock())).taints


async def test_rate_counts_the_last_minute_only(clock: FakeClock) -> None:
    store = MemoryStore(clock)
    for i in range(5):
        await store.record("a", recent(i, clock()), "k", {})
        clock.advance(20)
    assert (await store.view("a", "k", clock())).actions_last_minute == 2


async def test_restrictions_accumulate_and_subscribers_hear_each_change(
    clock: FakeClock,
) -> None:
    store = MemoryStore(clock)
    heard: list[tuple[str, Posture]] = []
    unsubscribe = store.subscribe(lambda agent, p: heard.append((agent, p)))
    await store.restrict("a", ["read_only"])
    await store.restrict("a", ["no_egress"], isolate=True, reason="test")
    assert [p.restrictions for _, p in heard] == [
        frozenset({"read_only"}),
        frozenset({"read_only", "no_egress"}),
    ]
    assert heard[-1][1].isolated
    assert heard[-1][0] == "a"
    unsubscribe()
    await store.restrict("a", ["no_delegation"])
    assert len(heard) == 2


async def test_same_restriction_twice_does_not_notify_again(clock: FakeClock) -> None:
    store = MemoryStore(clock)
    heard: list[Posture] = []
    store.subscribe(lambda _a, p: heard.append(p))
    await store.restrict("a", ["read_only"])
    await store.restrict("a", ["read_only"])
    assert len(heard) == 1


async def test_a_failing_subscriber_does_not_stop_the_others(clock: FakeClock) -> None:
    store = MemoryStore(clock)
    heard: list[str] = []

    def broken(_a: str, _p: Posture) -> None:
        raise RuntimeError("boom")

    store.subscribe(broken)
    store.subscribe(lambda a, _p: heard.append(a))
    await store.restrict("a", ["read_only"])
    assert heard == ["a"]


async def test_posture_with_expiry_lapses(clock: FakeClock) -> None:
    store = MemoryStore(clock)
    await store.restrict("a", ["read_only"], until=clock() + 30)
    assert (await store.posture("a", clock())).restrictions == {"read_only"}
    clock.advance(31)
    assert await store.posture("a", clock()) == NORMAL


async def test_unknown_restriction_is_refused(clock: FakeClock) -> None:
    store = MemoryStore(clock)
    with pytest.raises(ValueError, match="unknown restriction"):
        await store.restrict("a", ["root"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 600), st.booleans(), st.floats(0, 120)), max_size=60))
def test_the_remembered_baseline_is_always_the_computed_one(
    steps: list[tuple[float, bool, float]],
) -> None:
    """The per-agent baseline is recomputed only when its inputs change; after any
    sequence of views and recorded actions (time moving forward in jumps of up to ten
    minutes, an action's time up to two minutes behind the view's, as clocks of two
    PEPs may be) the view's baseline equals the one computed from scratch."""

    async def run() -> None:
        store = MemoryStore()
        now = 0.0
        for i, (jump, act, behind) in enumerate(steps):
            now += jump
            if act:
                action = RecentAction(f"d{i}", now - behind, "http", "egress", "t", "allow")
                await store.record("a", action, "k", {})
            view = await store.view("a", "k", now)
            minutes = store._agents["a"].minutes if "a" in store._agents else None
            expected = _baseline(minutes, now) if minutes else None
            assert view.baseline_per_minute == expected

    asyncio.run(run())
