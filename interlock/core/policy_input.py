"""Building the policy input document (docs/policy-input.md) from an action and its context.

The document is kept compact on purpose: rego-cpp pays about 3 us per JSON node to build
its input, and discrete features repeat, so identical inputs hit the decision cache. Time
enters only as hour and weekday for the same reason.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from interlock.core.context import ContextView, Posture
from interlock.core.engine import MAX_INPUT_DEPTH
from interlock.core.model import Action, Risk
from interlock.errors import PolicyError

MAX_DETAIL_NODES = 2_000
"""Action details larger than this are refused: a PEP should pass features, not payloads,
and an unbounded input would let one request stall the decision loop."""


DETAILS_DEPTH = 2
"""How deep `details` sits in the input document (input.action.details)."""


class _Budget:
    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


def _plain(value: Any, budget: _Budget, depth: int = DETAILS_DEPTH) -> Any:
    """A plain copy of a details value. It bounds the size, and the depth too, so the
    engines need not walk the whole document again (`evaluate(..., bounded=True)`)."""
    budget.left -= 1
    if budget.left < 0:
        raise PolicyError(f"action details exceed {MAX_DETAIL_NODES} values")
    t = type(value)
    if t is str or t is int or t is bool or t is float or value is None:
        return value
    if depth > MAX_INPUT_DEPTH:
        raise PolicyError(f"action details nested deeper than {MAX_INPUT_DEPTH}")
    depth += 1
    if t is tuple or t is list:
        return [_plain(v, budget, depth) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v, budget, depth) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, budget, depth) for v in value]
    if isinstance(value, (frozenset, set)):
        return sorted(_plain(v, budget, depth) for v in value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def build_input(
    action: Action, posture: Posture, view: ContextView, risk: Risk, now: float
) -> dict[str, Any]:
    """The input document for one decision."""
    agent = action.agent
    local = time.gmtime(now)
    return {
        "agent": {
            "id": agent.id,
            "roles": list(agent.roles),
            "owner": agent.owner,
            "delegation": list(agent.delegation),
            "authn": agent.authn,
        },
        "action": {
            "protocol": action.protocol,
            "operation": action.operation.value,
            "target": action.target,
            "details": _plain(action.details, _Budget(MAX_DETAIL_NODES)),
            "labels": sorted(action.labels),
            "threat_matches": list(action.threat_matches),
        },
        "context": {
            "taints": sorted(view.taints),
            "first_seen": view.first_seen,
            "posture": {
                "restrictions": sorted(posture.restrictions),
                "isolated": posture.isolated,
            },
        },
        "risk": {"score": risk.score, "tier": risk.tier.value, "signals": dict(risk.signals)},
        "time": {"hour": local.tm_hour, "weekday": local.tm_wday},
    }
