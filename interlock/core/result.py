"""Turning the policy's answer into a `Decision`, strictly.

A result that does not have exactly the documented shape (docs/policy-input.md) is a
`MalformedResult`, which the PDP turns into a deny: a typo in a policy must fail closed,
not quietly drop a restriction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from interlock.core.model import Decision, Effect, Obligation, Risk, freeze, parse_restriction
from interlock.errors import MalformedResult

RESULT_KEYS = frozenset({"effect", "reasons", "restrictions", "obligations", "shadow"})
MAX_REASONS = 64


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MalformedResult(f"decision.{key} must be a list of strings")
    if len(value) > MAX_REASONS:
        raise MalformedResult(f"decision.{key} has more than {MAX_REASONS} entries")
    return tuple(value)


def _effect(value: Any, key: str) -> Effect:
    try:
        return Effect(str(value))
    except ValueError:
        raise MalformedResult(
            f"{key} must be one of {', '.join(e.value for e in Effect)}, got {value!r}"
        ) from None


def _finding(value: Any) -> tuple[Effect, str]:
    """One `shadow` entry: what a rule on trial would have decided, and why."""
    if not isinstance(value, Mapping) or set(value) != {"effect", "reason"}:
        raise MalformedResult("each decision.shadow entry must be an object {effect, reason}")
    if not isinstance(value["reason"], str):
        raise MalformedResult("decision.shadow reason must be a string")
    return _effect(value["effect"], "decision.shadow effect"), value["reason"]


def _obligation(value: Any) -> Obligation:
    if not isinstance(value, Mapping) or not isinstance(value.get("type"), str):
        raise MalformedResult("each decision.obligations entry must be an object with a type")
    params = {k: v for k, v in value.items() if k != "type"}
    return Obligation(value["type"], freeze(params))


def parse_result(
    value: Any, *, decision_id: str, risk: Risk, policy_version: str, now: float
) -> Decision:
    """Validate the policy's decision object and build the Decision it describes."""
    if not isinstance(value, Mapping):
        raise MalformedResult(f"decision must be an object, got {type(value).__name__}")
    unknown = set(value) - RESULT_KEYS
    if unknown:
        raise MalformedResult(f"decision has unknown keys: {', '.join(sorted(unknown))}")
    effect = _effect(value.get("effect"), "decision.effect")
    reasons = _strings(value.get("reasons", []), "reasons")
    restrictions = _strings(value.get("restrictions", []), "restrictions")
    try:
        restrictions = tuple(parse_restriction(r) for r in restrictions)
    except ValueError as exc:
        raise MalformedResult(f"decision.restrictions: {exc}") from None
    if effect is Effect.RESTRICT and not restrictions:
        raise MalformedResult("decision.effect restrict needs at least one restriction")
    obligations_raw = value.get("obligations", [])
    if not isinstance(obligations_raw, list):
        raise MalformedResult("decision.obligations must be a list")
    obligations = tuple(_obligation(o) for o in obligations_raw)
    shadow_raw = value.get("shadow", [])
    if not isinstance(shadow_raw, list) or len(shadow_raw) > MAX_REASONS:
        raise MalformedResult(f"decision.shadow must be a list of at most {MAX_REASONS}")
    shadow = tuple(_finding(f) for f in shadow_raw)
    return Decision(
        decision_id=decision_id,
        effect=effect,
        risk=risk,
        policy_version=policy_version,
        reasons=reasons,
        restrictions=restrictions,
        obligations=obligations,
        time=now,
        shadow=shadow,
    )
