"""Actions and decisions to and from plain JSON, for the CLI and the admin API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from interlock.core.model import Action, Agent, Decision, Operation, thaw


class ActionFormatError(ValueError):
    """The JSON does not describe an action; the message names the field."""


def _str_list(doc: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ActionFormatError(f"{key} must be a list of strings")
    return tuple(value)


def _opt_str(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise ActionFormatError(f"{key} must be a string")
    return value


def action_from_json(doc: Any) -> Action:
    """Build an Action from `{"agent": {...}, "protocol": ..., "operation": ..., ...}`."""
    if not isinstance(doc, Mapping):
        raise ActionFormatError("an action must be a JSON object")
    known = {
        "agent",
        "protocol",
        "operation",
        "target",
        "details",
        "labels",
        "parents",
        "taints",
        "threat_matches",
        "prompt_hash",
        "confidence",
    }
    unknown = set(doc) - known
    if unknown:
        raise ActionFormatError(f"unknown fields: {', '.join(sorted(unknown))}")
    agent_doc = doc.get("agent")
    if not isinstance(agent_doc, Mapping) or not isinstance(agent_doc.get("id"), str):
        raise ActionFormatError("agent must be an object with an id")
    agent = Agent(
        agent_doc["id"],
        _str_list(agent_doc, "roles"),
        _opt_str(agent_doc, "owner"),
        _str_list(agent_doc, "delegation"),
        _opt_str(agent_doc, "authn") or "none",
    )
    for key in ("protocol", "operation", "target"):
        if not isinstance(doc.get(key), str):
            raise ActionFormatError(f"{key} must be a string")
    try:
        operation = Operation(doc["operation"])
    except ValueError:
        raise ActionFormatError(
            f"operation must be one of {', '.join(o.value for o in Operation)}"
        ) from None
    details = doc.get("details", {})
    if not isinstance(details, Mapping):
        raise ActionFormatError("details must be an object")
    confidence = doc.get("confidence")
    if confidence is not None and (
        isinstance(confidence, bool)
        or not isinstance(confidence, (int, float))
        or not 0 <= confidence <= 1
    ):
        raise ActionFormatError("confidence must be a number in [0, 1]")
    return Action(
        agent=agent,
        protocol=doc["protocol"],
        operation=operation,
        target=doc["target"],
        details=details,
        labels=frozenset(_str_list(doc, "labels")),
        parents=_str_list(doc, "parents"),
        taints=frozenset(_str_list(doc, "taints")),
        threat_matches=_str_list(doc, "threat_matches"),
        prompt_hash=_opt_str(doc, "prompt_hash"),
        confidence=None if confidence is None else float(confidence),
    )


def decision_to_json(d: Decision) -> dict[str, Any]:
    """The decision as the CLI and API print it (`shadow`: only when a rule on trial
    found something)."""
    out = {
        "decision_id": d.decision_id,
        "effect": d.effect.value,
        "reasons": list(d.reasons),
        "restrictions": list(d.restrictions),
        "obligations": [{"type": o.type, **thaw(o.params)} for o in d.obligations],
        "risk": {"score": d.risk.score, "tier": d.risk.tier.value, "signals": dict(d.risk.signals)},
        "policy_version": d.policy_version,
    }
    if d.shadow:
        out["shadow"] = [{"effect": e.value, "reason": r} for e, r in d.shadow]
    return out
