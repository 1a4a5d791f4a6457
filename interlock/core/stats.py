"""What the PDP has been deciding: recent decisions for the admin API, counters and a
latency histogram for Prometheus. In memory, bounded, cheap to update on every decision."""

from __future__ import annotations

import bisect
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from interlock.core.model import TEXT, Action, Decision

RECENT = 1000
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


@dataclass
class DecisionStats:
    _rows: deque[tuple[Decision, str, str, str, str, tuple[str, ...], bool]] = field(
        default_factory=lambda: deque(maxlen=RECENT)
    )
    """The last decisions as recorded: tuples now, dicts only when someone reads them
    (the admin API), because every decision pays for the write and few are read."""
    decisions: Counter[tuple[str, str, bool]] = field(default_factory=Counter)
    """(protocol, effect, enforced) -> count."""
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    latency_sum: float = 0.0
    latency_count: int = 0

    def add(
        self, action: Action, decision: Decision, seconds: float | None, enforced: bool = True
    ) -> None:
        self.decisions[(action.protocol, TEXT[decision.effect], enforced)] += 1
        self._rows.append(
            (
                decision,
                action.agent.id,
                action.protocol,
                TEXT[action.operation],
                action.target,
                action.parents,
                enforced,
            )
        )
        if seconds is not None:
            self.latency_buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
            self.latency_sum += seconds
            self.latency_count += 1

    def counts(self) -> dict[str, Any]:
        """The counters and the histogram as plain JSON (what another process of the
        same deployment reports for `/metrics`, `absorb`)."""
        return {
            "decisions": [[p, e, en, n] for (p, e, en), n in sorted(self.decisions.items())],
            "buckets": list(self.latency_buckets),
            "sum": self.latency_sum,
            "count": self.latency_count,
        }

    def absorb(self, counts: Any) -> None:
        """Add another process's `counts` to these; raise ValueError (and add nothing)
        if they are not what `counts` makes."""
        try:
            rows = [(str(p), str(e), bool(en), int(n)) for p, e, en, n in counts["decisions"]]
            buckets = [int(n) for n in counts["buckets"]]
            total, count = float(counts["sum"]), int(counts["count"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"unreadable counts: {exc!r}") from None
        if len(buckets) != len(self.latency_buckets):
            raise ValueError("unreadable counts: another histogram")
        for p, e, en, n in rows:
            self.decisions[(p, e, en)] += n
        self.latency_buckets = [a + b for a, b in zip(self.latency_buckets, buckets, strict=True)]
        self.latency_sum += total
        self.latency_count += count

    @property
    def recent(self) -> list[dict[str, Any]]:
        """The last decisions, oldest first, as the admin API shows them."""
        return [_row(*r) for r in self._rows]

    def for_agent(self, agent_id: str | None, limit: int) -> list[dict[str, Any]]:
        rows = [r for r in self._rows if agent_id is None or r[1] == agent_id]
        return [_row(*r) for r in rows[-limit:][::-1]]


def _row(
    decision: Decision,
    agent: str,
    protocol: str,
    operation: str,
    target: str,
    parents: tuple[str, ...],
    enforced: bool,
) -> dict[str, Any]:
    return {
        "decision_id": decision.decision_id,
        "time": decision.time,
        "agent": agent,
        "protocol": protocol,
        "operation": operation,
        "target": target[:256],
        "effect": decision.effect.value,
        "risk": {"score": decision.risk.score, "tier": decision.risk.tier.value},
        "reasons": list(decision.reasons)[:8],
        "parents": list(parents),
        "enforced": enforced,
    }
