"""The cross-protocol signals: data flow, the agent's own rate baseline, confidence, and
taint sources linking decisions."""

from __future__ import annotations

from interlock.core.context import MemoryStore
from interlock.core.dataflow import value_fingerprints
from interlock.core.model import Action, Agent, Effect, Operation
from interlock.core.signals import baseline_rate
from interlock.testing import FakeClock, make_pdp

AGENT = Agent("coder", authn="token")


async def test_values_read_under_a_label_are_recognised_when_they_leave() -> None:
    clock = FakeClock()
    pdp = make_pdp(clock=clock)
    read = await pdp.decide(Action(AGENT, "postgres", Operation.READ, "public.payroll"))
    await pdp.store.add_fingerprints(
        "coder",
        read.decision_id,
        frozenset({"restricted"}),
        value_fingerprints(["Alice Smith", "185000"]),
        clock() + 60,
    )
    body = '{"who": "Alice Smith", "pay": 185000}'
    out = Action(AGENT, "http", Operation.EGRESS, "x.example", payload=body)
    d = await pdp.decide(out)
    assert d.risk.signals["data_flow"] == 1.0
    record = pdp.stats.recent[-1]
    assert read.decision_id in record["parents"]
    clean = Action(AGENT, "http", Operation.EGRESS, "x.example", payload="hi")
    assert (await pdp.decide(clean)).risk.signals["data_flow"] == 0.0
    clock.advance(61)  # remembered values expire
    assert (await pdp.decide(out)).risk.signals["data_flow"] == 0.0


def test_short_values_are_not_tracked() -> None:
    assert value_fingerprints(["yes", "42", "DE"]) == set()


async def test_the_baseline_is_the_agents_own_average() -> None:
    clock = FakeClock(600_000.0)
    store = MemoryStore(clock)
    from interlock.core.context import RecentAction

    for minute in range(10):
        for _ in range(2):
            t = clock() + minute * 60
            await store.record(
                "coder", RecentAction("d", t, "http", "egress", "x", "allow"), "k", {}
            )
    view = await store.view("coder", "k", clock() + 10 * 60 + 1)
    assert view.baseline_per_minute == 2.0
    assert baseline_rate(2, 2.0, 3.0) == 0.0
    assert baseline_rate(6, 2.0, 3.0) == 1.0
    assert baseline_rate(50, None, 3.0) == 0.0  # too new to judge


async def test_low_reported_confidence_raises_risk() -> None:
    pdp = make_pdp()
    sure = await pdp.decide(Action(AGENT, "http", Operation.EGRESS, "a.example", confidence=0.95))
    unsure = await pdp.decide(Action(AGENT, "http", Operation.EGRESS, "a.example", confidence=0.1))
    assert unsure.risk.signals["confidence"] > sure.risk.signals["confidence"]
    assert unsure.risk.score > sure.risk.score


async def test_restore_lifts_every_restriction() -> None:
    pdp = make_pdp()
    await pdp.store.restrict("coder", ["no_egress"], isolate=True)
    denied = await pdp.decide(Action(AGENT, "http", Operation.EGRESS, "a.example"))
    assert denied.effect is Effect.DENY
    await pdp.store.restore("coder", "incident closed")
    allowed = await pdp.decide(Action(AGENT, "http", Operation.EGRESS, "a.example"))
    assert allowed.effect is Effect.ALLOW
