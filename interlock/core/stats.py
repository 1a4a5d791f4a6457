"""What the PDP has been deciding: recent decisions for the admin API, counters and a
latency histogram for Prometheus. In memory, bounded, cheap to update on every decision."""

from __future__ import annotations

import bisect
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from interlock.core.model import Action, Decision

RECENT = 1000
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


@dataclass
class DecisionStats:
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))
    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(protocol, effect) -> count."""
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    latency_sum: float = 0.0
    latency_count: int = 0

    def add(self, action: Action, decision: Decision, seconds: float | None) -> None:
        self.decisions[(action.protocol, decision.effect.value)] += 1
        self.recent.append(
            {
                "decision_id": decision.decision_id,
                "time": decision.time,
                "agent": action.agent.id,
                "protocol": action.protocol,
                "operation": action.operation.value,
                "target": action.target[:256],
                "effect": decision.effect.value,
                "risk": {"score": decision.risk.score, "tier": decision.risk.tier.value},
                "reasons": list(decision.reasons)[:8],
                "parents": list(action.parents),
            }
        )
        if seconds is not None:
            self.latency_buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
            self.latency_sum += seconds
            self.latency_count += 1

    def for_agent(self, agent_id: str | None, limit: int) -> list[dict[str, Any]]:
        rows = [r for r in self.recent if agent_id is None or r["agent"] == agent_id]
        return rows[-limit:][::-1]
