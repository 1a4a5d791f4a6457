"""Readiness without services: the answer follows the listeners and the required probes,
probes that hang or raise count as down, and the metric names each dependency."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.admin.metrics import render
from interlock.admin.readiness import Check, Readiness
from interlock.core.stats import DecisionStats


def probe(outcome: str) -> Check:
    async def check() -> None:
        if outcome == "raise":
            raise ConnectionError("refused")
        if outcome == "hang":
            await asyncio.sleep(60)

    return check


@settings(max_examples=15, deadline=None)
@given(
    listening=st.booleans(),
    probes=st.lists(st.tuples(st.sampled_from(["ok", "raise", "hang"]), st.booleans()), max_size=4),
)
def test_ready_only_when_listening_and_every_required_dependency_answers(
    listening: bool, probes: list[tuple[str, bool]]
) -> None:
    ready = Readiness(listening=listening)
    for i, (outcome, required) in enumerate(probes):
        ready.add(f"dep{i}", probe(outcome), required=required)
    status, body = asyncio.run(ready.report())
    required_down = any(o != "ok" and r for o, r in probes)
    assert (status == 200) == (listening and not required_down), body
    for i, (outcome, _) in enumerate(probes):
        assert body["dependencies"][f"dep{i}"]["up"] == (outcome == "ok")
    if status == 200:
        any_down = any(o != "ok" for o, _ in probes)
        assert body["status"] == ("degraded" if any_down else "ok")


def test_a_probe_that_hangs_is_down_within_its_timeout() -> None:
    ready = Readiness(listening=True)
    ready.add("frozen", probe("hang"))
    status, body = asyncio.run(ready.report())
    assert status == 503
    assert body["down"] == ["frozen"]
    assert "timeout" in body["dependencies"]["frozen"]["error"]


def test_the_metric_names_each_dependency() -> None:
    text = render(DecisionStats(), {}, 0, {}, {"redis": False, "audit_store": True})
    assert 'interlock_dependency_up{name="redis"} 0' in text
    assert 'interlock_dependency_up{name="audit_store"} 1' in text
