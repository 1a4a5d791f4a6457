"""What the PDP hands to the audit log for every decision, and the sink interface.

`interlock.audit.log.AuditLog` (the verifiable Merkle log) implements `AuditSink`; so does
`interlock.testing.CaptureSink`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from interlock.core.model import Action, Decision, thaw


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One decision with the action it answered and the policy input it was made from."""

    decision: Decision
    action: Action
    input: Mapping[str, Any]
    approver: Mapping[str, Any] | None = None
    """On the record of a human's answer to a held action: who, via which channel, and
    whether they approved."""
    engine: str | None = None
    """The policy engine and its version (`regorus 0.9.1`) when a policy was evaluated."""
    enforced: bool = True
    """False when shadow mode let the action through although `decision` was not a plain
    allow (docs/operations.md, "Rolling out")."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view (the audit store defines the canonical, hashed form)."""
        d, a = self.decision, self.action
        return {
            "decision_id": d.decision_id,
            "time": d.time,
            "agent": {
                "id": a.agent.id,
                "roles": list(a.agent.roles),
                "owner": a.agent.owner,
                "delegation": list(a.agent.delegation),
                "authn": a.agent.authn,
            },
            "action": {
                "protocol": a.protocol,
                "operation": a.operation.value,
                "target": a.target,
                "details": thaw(a.details),
                "labels": sorted(a.labels),
            },
            "parents": list(a.parents),
            "prompt_hash": a.prompt_hash,
            "policy_version": d.policy_version,
            "policy_engine": self.engine,
            "risk": {
                "score": d.risk.score,
                "tier": d.risk.tier.value,
                "signals": dict(d.risk.signals),
            },
            "effect": d.effect.value,
            "reasons": list(d.reasons),
            "restrictions": list(d.restrictions),
            "obligations": [{"type": o.type, **thaw(o.params)} for o in d.obligations],
            "enforced": self.enforced,
            "shadow": [{"effect": e.value, "reason": r} for e, r in d.shadow],
        }


class AuditSink(Protocol):
    """Receives every decision.

    With `durable=True`, returning from `append` means the record is committed; raising
    means it was not, and the PDP fails closed. With `durable=False` the sink may queue the
    record and commit it shortly after (group commit)."""

    async def append(self, record: DecisionRecord, *, durable: bool = True) -> None: ...
