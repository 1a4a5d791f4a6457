"""Risk signals are pure functions; the score and tier come from bundle data."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from interlock.core import signals
from interlock.core.bundle import bundled_policy_dir, load_bundle
from interlock.core.context import ContextView
from interlock.core.decision_cache import risk_key
from interlock.core.model import Action, Agent, Operation, Tier
from interlock.core.signals import Facts, RiskModel
from interlock.errors import PolicyError

MODEL = RiskModel.from_data(load_bundle(bundled_policy_dir()).data["interlock"]["risk"])


def facts(**kw: Any) -> Facts:
    base: dict[str, Any] = dict(
        operation="read",
        labels=frozenset(),
        first_seen=False,
        taints=frozenset(),
        threat_matches=(),
        approved=0,
        denied=0,
        confidence=None,
        authn="token",
        actions_last_minute=0,
    )
    base.update(kw)
    return Facts(**base)


def test_most_sensitive_label_wins_and_unknown_labels_count_as_confidential() -> None:
    table = {"public": 0.0, "restricted": 1.0}
    assert signals.data_sensitivity({"public", "restricted"}, table) == 1.0
    assert signals.data_sensitivity({"mystery"}, table) == 0.5
    assert signals.data_sensitivity(set(), table) == 0.0


def test_unknown_operation_and_authn_are_worst_case() -> None:
    assert signals.operation_severity("teleport", {}) == 1.0
    assert signals.identity_weakness("telepathy", {}) == 1.0


def test_novelty_only_for_outbound_kinds_of_operation() -> None:
    assert signals.destination_novelty(True, "egress", {"egress"}) == 1.0
    assert signals.destination_novelty(True, "read", {"egress"}) == 0.0
    assert signals.destination_novelty(False, "egress", {"egress"}) == 0.0


def test_taint_applies_only_to_operations_it_can_harm_through() -> None:
    w = {"prompt_injection_suspected": 1.0}
    assert signals.taint({"prompt_injection_suspected"}, "egress", w, {"egress"}) == 1.0
    assert signals.taint({"prompt_injection_suspected"}, "read", w, {"egress"}) == 0.0


def test_approval_history_lowers_and_denials_raise() -> None:
    assert signals.approval_history(8, 0) < 0 < signals.approval_history(0, 8)
    assert signals.approval_history(0, 0) == 0.0


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_approval_history_stays_in_range(approved: int, denied: int) -> None:
    assert -1.0 <= signals.approval_history(approved, denied) <= 1.0


def test_confidence_and_rate() -> None:
    assert signals.confidence(None) == 0.0
    assert signals.confidence(0.2) == pytest.approx(0.8)
    assert signals.rate(300, 600) == 0.5
    assert signals.rate(10_000, 600) == 1.0
    assert signals.rate(1, 0) == 1.0


def test_each_tier_is_reachable_with_the_default_model() -> None:
    low = signals.score(signals.compute(facts(), MODEL), MODEL)
    medium = signals.score(signals.compute(facts(operation="ddl"), MODEL), MODEL)
    high = signals.score(
        signals.compute(
            facts(operation="ddl", taints=frozenset({"prompt_injection_suspected"})), MODEL
        ),
        MODEL,
    )
    critical = signals.score(
        signals.compute(
            facts(
                operation="admin",
                taints=frozenset({"prompt_injection_suspected"}),
                threat_matches=("feed:x",),
            ),
            MODEL,
        ),
        MODEL,
    )
    assert [r.tier for r in (low, medium, high, critical)] == [
        Tier.LOW,
        Tier.MEDIUM,
        Tier.HIGH,
        Tier.CRITICAL,
    ]


def test_thresholds_and_weights_come_from_the_bundle() -> None:
    data = {
        "weights": {"operation_severity": 100},
        "operation_severity": {"read": 0.5},
        "tiers": {"medium": 40, "high": 45, "critical": 99},
    }
    model = RiskModel.from_data(data)
    risk = signals.score(signals.compute(facts(), model), model)
    assert (risk.score, risk.tier) == (50, Tier.HIGH)


@given(
    st.builds(
        facts,
        operation=st.sampled_from(["read", "egress", "admin", "nope"]),
        labels=st.frozensets(st.sampled_from(["pii", "restricted", "x"])),
        first_seen=st.booleans(),
        taints=st.frozensets(st.sampled_from(["untrusted_content", "prompt_injection_suspected"])),
        approved=st.integers(0, 50),
        denied=st.integers(0, 50),
        confidence=st.none() | st.floats(0, 1),
        actions_last_minute=st.integers(0, 5000),
    )
)
def test_score_is_always_0_to_100_and_signals_quantised(f: Facts) -> None:
    values = signals.compute(f, MODEL)
    assert all(round(v, 1) == v for v in values.values())
    risk = signals.score(values, MODEL)
    assert 0 <= risk.score <= 100


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"weights": {"taint": "high"}},
        {"weights": {"taint": True}},
        {"novelty_operations": "egress"},
        {"rate_per_minute": "fast"},
    ],
)
def test_malformed_risk_data_is_a_policy_error(bad: Any) -> None:
    with pytest.raises(PolicyError):
        RiskModel.from_data(bad)


_MEMO_PDP: list[Any] = []
"""One PDP for every example, so later examples hit risks memoised by earlier ones."""


def _memo_pdp() -> Any:
    from interlock.testing import make_pdp

    if not _MEMO_PDP:
        _MEMO_PDP.append(make_pdp())
    return _MEMO_PDP[0]


@given(
    operation=st.sampled_from(list(Operation)),
    labels=st.frozensets(st.sampled_from(["pii", "restricted", "x"]), max_size=2),
    classes=st.sampled_from([None, ("read",), ("write", "read"), ("nope",), ({"a": 1},)]),
    matches=st.sampled_from([(), ("feed:bad",)]),
    confidence=st.sampled_from([None, 0.0, 0.5, 1, 1.0, True, 0.05]),
    authn=st.sampled_from(["token", "none", "jwt", "odd"]),
    taints=st.frozensets(st.sampled_from(["untrusted_content", "restricted_data_read"])),
    first_seen=st.booleans(),
    count=st.integers(0, 1300),
    approved=st.integers(0, 3),
    denied=st.integers(0, 3),
    baseline=st.none() | st.floats(0, 400),
    flows=st.integers(0, 2),
)
def test_a_memoised_risk_is_the_computed_risk(
    operation: Operation,
    labels: frozenset[str],
    classes: Any,
    matches: tuple[str, ...],
    confidence: Any,
    authn: str,
    taints: frozenset[str],
    first_seen: bool,
    count: int,
    approved: int,
    denied: int,
    baseline: float | None,
    flows: int,
) -> None:
    """The PDP's memo of risks answers exactly what scoring the facts answers, for
    repeated and near-repeated facts (the count of recent actions changes every time)."""
    pdp = _memo_pdp()
    details = {} if classes is None else {"classes": classes}
    action = Action(
        Agent("a", authn=authn), "ssh", operation, "t", details, labels,
        threat_matches=matches, confidence=confidence,
    )  # fmt: skip
    view = ContextView(taints, first_seen, count, approved, denied, (), {}, baseline)
    model = pdp._risk_model(pdp.policy.current.version, pdp.policy.current.data["interlock"])
    for _ in range(2):
        risk, key = pdp._risk(action, view, flows, model)
        expected = signals.score(signals.compute(pdp._facts(action, view, flows), model), model)
        assert risk == expected
        assert [(k, type(v)) for k, v in risk.signals.items()] == [
            (k, type(v)) for k, v in expected.signals.items()
        ]
        assert key == risk_key(expected)
