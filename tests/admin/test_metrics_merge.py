"""/metrics with `[postgres] workers`: the other workers' reports add up with the first
worker's numbers, and a report that cannot be read is left out, not half added."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from interlock.admin.metrics import merge, render
from interlock.core.model import Action, Agent, Decision, Effect, Operation, Risk, Tier
from interlock.core.stats import DecisionStats

AGENT = Agent("coder", (), None, authn="token")
_DECISION = st.tuples(
    st.sampled_from(["postgres", "http", "ssh"]),
    st.sampled_from([Effect.ALLOW, Effect.DENY]),
    st.booleans(),
    st.floats(min_value=0, max_value=10, allow_nan=False),
)


def _add(stats: DecisionStats, protocol: str, effect: Effect, enforced: bool, s: float) -> None:
    action = Action(AGENT, protocol, Operation.READ, "t")
    decision = Decision("id", effect, Risk(0, Tier.LOW), "v1")
    stats.add(action, decision, s, enforced)


def _report(stats: DecisionStats, sessions: int, appended: int, healthy: bool = True) -> Any:
    """What a worker sends, through JSON as it travels."""
    audit = {"pending": 0, "appended": appended, "failures": 0, "healthy": healthy}
    doc = {"stats": stats.counts(), "audit": audit, "sessions": {"postgres": sessions}}
    return json.loads(json.dumps(doc))


@given(st.lists(st.lists(_DECISION, max_size=20), min_size=1, max_size=4))
def test_merged_counts_are_the_counts_of_one_process_that_saw_everything(
    per_process: list[list[tuple[str, Effect, bool, float]]],
) -> None:
    whole = DecisionStats()
    parts = []
    for decisions in per_process:
        part = DecisionStats()
        for d in decisions:
            _add(part, *d)
            _add(whole, *d)
        parts.append(part)
    own, others = parts[0], [_report(p, 1, 0) for p in parts[1:]]
    total, _, sessions, processes = merge(own, {"healthy": True}, {"postgres": 1}, others)
    assert total.counts()["decisions"] == whole.counts()["decisions"]
    assert total.counts()["buckets"] == whole.counts()["buckets"]
    assert total.latency_count == whole.latency_count
    assert sessions == {"postgres": len(parts)}
    assert processes == len(parts)


def test_an_unreadable_report_is_left_out_whole() -> None:
    own = DecisionStats()
    _add(own, "postgres", Effect.ALLOW, True, 0.001)
    good = DecisionStats()
    _add(good, "postgres", Effect.DENY, True, 0.002)
    short = _report(good, 5, 7)
    short["stats"]["buckets"] = short["stats"]["buckets"][:-1]  # another histogram
    bad = [
        short,
        {"stats": good.counts()},  # no audit, no sessions
        {"stats": {"decisions": [["postgres", "deny", True, "many"]]}, "audit": {}, "sessions": {}},
        "not a report",
        None,
    ]
    audit = {"pending": 1, "appended": 10, "failures": 0, "healthy": True}
    reports = [*bad, _report(good, 3, 4, healthy=False)]
    total, merged, sessions, processes = merge(own, audit, {"postgres": 2}, reports)
    assert processes == 2
    assert sessions == {"postgres": 5}
    assert merged == {"pending": 1, "appended": 14, "failures": 0, "healthy": False}
    assert sorted(total.decisions.items()) == [
        (("postgres", "allow", True), 1),
        (("postgres", "deny", True), 1),
    ]
    text = render(own, audit, 0, {"postgres": 2}, None, reports)
    assert "interlock_postgres_workers_reporting 2" in text
    assert 'interlock_open_sessions{proxy="postgres"} 5' in text
    assert "interlock_audit_healthy 0" in text
    assert "interlock_postgres_workers_reporting" not in render(own, audit, 0, {}, None, None)
