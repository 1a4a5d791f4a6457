"""Risk signals: small pure functions from facts about an action to a number.

Each signal is in [0, 1] (approval history in [-1, 1]: approvals lower risk). The score is
the weighted sum, clamped to 0-100, and the tier comes from thresholds. Weights, thresholds
and lookup tables live in the bundle's `data.interlock.risk`, so policy authors tune the
model without touching Python, and the bundle version in the audit record pins them.

Signals are quantised to steps of 0.1: inputs built from discrete features repeat, and
repeating inputs are answered from the policy cache. A tenth of a weight is finer than
any policy author tunes to.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from interlock.core.model import Risk, Tier
from interlock.errors import PolicyError


def _clamp(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo if x < lo else hi if x > hi else x


def data_sensitivity(labels: Iterable[str], table: Mapping[str, float]) -> float:
    """The most sensitive label wins; an unknown label counts as `confidential` (0.5),
    because a label nobody mapped is more likely a forgotten one than a harmless one."""
    best = 0.0
    for label in labels:
        value = table.get(label, 0.5)
        if value > best:
            best = value
    return _clamp(best)


def operation_severity(
    operation: str,
    table: Mapping[str, float],
    classes: Collection[str] = (),
    class_table: Mapping[str, float] | None = None,
) -> float:
    """How much damage this kind of operation can do on its own (unknown: maximum). An
    action whose classifier said what it does (`details.classes` of a shell command:
    read, write, destructive, ...) weighs as its heaviest class (unknown class:
    maximum), so that, whatever the agent's state, a command that writes or destroys
    never weighs less than one that only reads."""
    if classes and class_table:
        return _clamp(max(class_table.get(c, 1.0) for c in classes))
    return _clamp(table.get(operation, 1.0))


def destination_novelty(first_seen: bool, operation: str, operations: Collection[str]) -> float:
    """1 when the agent has never sent this kind of action to this target before."""
    return 1.0 if first_seen and operation in operations else 0.0


READS = frozenset({"read", "file_read", "secret_read"})
UNTRUSTED = frozenset({"untrusted_content", "prompt_injection_suspected"})


def taint(
    active: Iterable[str],
    operation: str,
    weights: Mapping[str, float],
    operations: Collection[str],
    labels: Collection[str] = (),
) -> float:
    """The heaviest live taint, for operations through which taint can do harm; and for
    reads of labelled data, the heaviest untrusted-content taint (an agent steered by
    injected text reading payroll; not an agent that simply read payroll before)."""
    if operation in operations:
        return data_sensitivity(active, weights)
    if operation in READS and labels:
        return data_sensitivity([t for t in active if t in UNTRUSTED], weights)
    return 0.0


def data_flow(flows: int) -> float:
    """Data read under a label is leaving in this action."""
    return 1.0 if flows else 0.0


def baseline_rate(current: int, baseline: float | None, factor: float) -> float:
    """How far above its own average the agent is acting: 0 at or below the average,
    1 at `factor` times it. No baseline yet: no signal."""
    if baseline is None or factor <= 1:
        return 0.0
    return _clamp((current / max(baseline, 1.0) - 1.0) / (factor - 1.0))


def threat_intel(matches: Collection[str]) -> float:
    """Any feed match is a full signal; the policy decides how hard to react."""
    return 1.0 if matches else 0.0


def approval_history(approved: int, denied: int) -> float:
    """In [-1, 1]: humans approving this agent's kind of action lowers risk, denials raise
    it. The +2 keeps one early answer from swinging the score all the way."""
    return _clamp((denied - approved) / (approved + denied + 2), -1.0, 1.0)


def confidence(reported: float | None) -> float:
    """Low self-reported confidence raises risk; no report is neutral."""
    if reported is None:
        return 0.0
    return _clamp(1.0 - float(reported))


def identity_weakness(authn: str, table: Mapping[str, float]) -> float:
    """How weakly the agent proved who it is (unknown method: as weak as none)."""
    return _clamp(table.get(authn, 1.0))


def rate(actions_last_minute: int, limit_per_minute: float) -> float:
    """Fraction of the per-minute budget already used."""
    if limit_per_minute <= 0:
        return 1.0
    return _clamp(actions_last_minute / limit_per_minute)


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the signals look at, gathered by the PDP."""

    operation: str
    labels: frozenset[str]
    first_seen: bool
    taints: frozenset[str]
    threat_matches: tuple[str, ...]
    approved: int
    denied: int
    confidence: float | None
    authn: str
    actions_last_minute: int
    flows: int = 0
    baseline_per_minute: float | None = None
    classes: frozenset[str] = frozenset()
    """What the classifier found the action does (shell commands), if anything."""


@dataclass(frozen=True, slots=True)
class RiskModel:
    """`data.interlock.risk` of a bundle, checked and converted once per bundle version."""

    weights: Mapping[str, float]
    medium: float
    high: float
    critical: float
    label_sensitivity: Mapping[str, float]
    operation_severity: Mapping[str, float]
    novelty_operations: frozenset[str]
    taint_weights: Mapping[str, float]
    taint_operations: frozenset[str]
    identity_weakness: Mapping[str, float]
    rate_per_minute: float
    baseline_factor: float = 3.0
    class_severity: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_data(cls, risk: Any) -> RiskModel:
        """Build from bundle data; raise PolicyError naming the bad key (=> deny)."""
        if not isinstance(risk, Mapping):
            raise PolicyError("data.interlock.risk must be an object")

        def table(key: str) -> dict[str, float]:
            value = risk.get(key, {})
            if not isinstance(value, Mapping) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()
            ):
                raise PolicyError(f"data.interlock.risk.{key} must map names to numbers")
            return {str(k): float(v) for k, v in value.items()}

        def names(key: str) -> frozenset[str]:
            value = risk.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise PolicyError(f"data.interlock.risk.{key} must be a list of names")
            return frozenset(value)

        tiers = table("tiers")
        rate_limit = risk.get("rate_per_minute", 600)
        if isinstance(rate_limit, bool) or not isinstance(rate_limit, (int, float)):
            raise PolicyError("data.interlock.risk.rate_per_minute must be a number")
        factor = risk.get("baseline_factor", 3.0)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)):
            raise PolicyError("data.interlock.risk.baseline_factor must be a number")
        return cls(
            weights=table("weights"),
            medium=tiers.get("medium", 30.0),
            high=tiers.get("high", 60.0),
            critical=tiers.get("critical", 85.0),
            label_sensitivity=table("label_sensitivity"),
            operation_severity=table("operation_severity"),
            novelty_operations=names("novelty_operations"),
            taint_weights=table("taint_weights"),
            taint_operations=names("taint_operations"),
            identity_weakness=table("identity_weakness"),
            rate_per_minute=float(rate_limit),
            baseline_factor=float(factor),
            class_severity=table("class_severity"),
        )


def compute(facts: Facts, model: RiskModel) -> dict[str, float]:
    """Every signal for `facts` under `model`, quantised to steps of 0.1."""
    op = facts.operation
    return {
        "data_sensitivity": round(data_sensitivity(facts.labels, model.label_sensitivity), 1),
        "operation_severity": round(
            operation_severity(op, model.operation_severity, facts.classes, model.class_severity),
            1,
        ),
        "destination_novelty": destination_novelty(facts.first_seen, op, model.novelty_operations),
        "taint": round(
            taint(facts.taints, op, model.taint_weights, model.taint_operations, facts.labels), 1
        ),
        "data_flow": data_flow(facts.flows),
        "threat_intel": threat_intel(facts.threat_matches),
        "approval_history": round(approval_history(facts.approved, facts.denied), 1),
        "confidence": round(confidence(facts.confidence), 1),
        "identity_weakness": round(identity_weakness(facts.authn, model.identity_weakness), 1),
        **pace(facts.actions_last_minute, facts.baseline_per_minute, model),
    }


def pace(actions_last_minute: int, baseline: float | None, model: RiskModel) -> dict[str, float]:
    """The two signals that depend on how fast the agent acts, quantised as `compute`
    quantises them: the only signals whose input changes from one decision to the next,
    so the PDP keys its memo of computed risks on them instead of on the count."""
    return {
        "rate": round(rate(actions_last_minute, model.rate_per_minute), 1),
        "baseline_rate": round(
            baseline_rate(actions_last_minute, baseline, model.baseline_factor), 1
        ),
    }


def score(signals: Mapping[str, float], model: RiskModel) -> Risk:
    """Weighted sum of the signals, clamped to 0-100, with its tier."""
    weights = model.weights
    total = 0.0
    for name, value in signals.items():
        total += weights.get(name, 0.0) * value
    points = round(_clamp(total, 0.0, 100.0))
    if points >= model.critical:
        tier = Tier.CRITICAL
    elif points >= model.high:
        tier = Tier.HIGH
    elif points >= model.medium:
        tier = Tier.MEDIUM
    else:
        tier = Tier.LOW
    return Risk(points, tier, signals)
