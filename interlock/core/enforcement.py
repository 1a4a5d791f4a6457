"""Posture enforcement that holds whatever the policy says (defence in depth).

The bundled policy already denies what a posture forbids, but a user's bundle may not, and
a bug in either must not let an isolated agent act. The PDP applies this after the policy,
and PEPs call `posture_veto` on open sessions when a posture changes.
"""

from __future__ import annotations

from dataclasses import replace

from interlock.core.context import Posture
from interlock.core.model import TOOL_PREFIX, Action, Decision, Effect, Operation

WRITE_OPERATIONS = frozenset(
    {Operation.WRITE, Operation.DDL, Operation.ADMIN, Operation.FILE_WRITE}
)
EGRESS_OPERATIONS = frozenset({Operation.EGRESS, Operation.FORWARD, Operation.CONNECT})
"""CONNECT is a pass-through tunnel out: no_egress stops it like any other egress."""
_PERMISSIVE = frozenset({Effect.ALLOW, Effect.APPROVE})


def posture_veto(action: Action, posture: Posture) -> str | None:
    """The reason `posture` forbids `action`, or None when it does not."""
    if posture.isolated:
        return "posture: agent is isolated"
    r = posture.restrictions
    if not r:
        return None
    op = action.operation
    # A PEP that knows what an action does beyond its operation (a shell command that
    # writes or reaches the network) says so in details.effects.
    effects = action.details.get("effects", ())
    if "read_only" in r and (op in WRITE_OPERATIONS or "write" in effects):
        return "posture read_only: this operation writes"
    if "no_egress" in r and (op in EGRESS_OPERATIONS or "egress" in effects):
        return "posture no_egress: this operation sends data out"
    if "no_delegation" in r and op is Operation.DELEGATE:
        return "posture no_delegation: this agent may not delegate"
    if op is Operation.TOOL_CALL and f"{TOOL_PREFIX}{action.target}" in r:
        return f"posture tool:{action.target}: this tool is disabled"
    return None


def enforce_posture(decision: Decision, action: Action, posture: Posture) -> Decision:
    """Turn a permissive decision into a deny when the posture forbids the action."""
    if decision.effect not in _PERMISSIVE:
        return decision
    veto = posture_veto(action, posture)
    if veto is None:
        return decision
    return replace(decision, effect=Effect.DENY, reasons=(*decision.reasons, veto))
