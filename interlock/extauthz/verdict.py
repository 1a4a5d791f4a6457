"""Result -> response: what Envoy (or NGINX) is told to do, independent of the wire."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from interlock.core.model import Decision, Effect

DECISION_HEADER = "x-interlock-decision-id"
APPROVAL_HEADER = "x-interlock-approval-required"


@dataclass
class AuthzResponse:
    allowed: bool
    status: int = 403
    """The denial's HTTP status (ignored when allowed)."""
    headers: list[tuple[str, str]] = field(default_factory=list)
    """Allowed: set on the request going upstream. Denied: on the denial sent back."""
    headers_to_remove: list[str] = field(default_factory=list)
    response_headers_to_add: list[tuple[str, str]] = field(default_factory=list)
    query_parameters_to_set: list[tuple[str, str]] = field(default_factory=list)
    query_parameters_to_remove: list[str] = field(default_factory=list)
    body: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Envoy dynamic metadata (under the ext_authz filter's namespace)."""


def metadata(decision: Decision) -> dict[str, Any]:
    """Published as Envoy dynamic metadata under `interlock` (in the ext_authz filter's
    namespace), e.g. `%DYNAMIC_METADATA(envoy.filters.http.ext_authz:interlock:risk_tier)%`."""
    return {
        "decision_id": decision.decision_id,
        "effect": decision.effect.value,
        "risk_tier": decision.risk.tier.value,
        "risk_score": decision.risk.score,
        "policy_version": decision.policy_version,
    }


def dynamic_metadata(decision: Decision) -> dict[str, Any]:
    """What every answer carries: `interlock` (above) and, as OPA's Envoy plugin adds to
    every answer, a top-level `decision_id`
    (`%DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision_id)%`)."""
    return {"decision_id": decision.decision_id, "interlock": metadata(decision)}


def denial(decision: Decision, status: int = 403, approval_id: str | None = None) -> AuthzResponse:
    """A refusal; `approval_id` names the open approval request a retry waits on."""
    reason = "; ".join(decision.reasons) or decision.effect.value
    headers = [(DECISION_HEADER, decision.decision_id), ("content-type", "application/json")]
    body: dict[str, Any] = {"error": "denied by interlock", "decision_id": decision.decision_id}
    if approval_id is not None:
        reason = f"human approval required (retry once approved): {reason}"
        headers.append((APPROVAL_HEADER, approval_id))
        body["approval_id"] = approval_id
    elif decision.effect is Effect.APPROVE:
        reason = f"human approval required: {reason}"
        headers.append((APPROVAL_HEADER, decision.decision_id))
    body["reason"] = reason
    return AuthzResponse(
        False, status, headers, body=json.dumps(body), metadata=dynamic_metadata(decision)
    )


def unrecorded(reason: str, status: int) -> AuthzResponse:
    """A refusal the flood limit counted instead of recording (it has no decision id)."""
    body = {"error": "denied by interlock", "reason": reason}
    return AuthzResponse(
        False, status, [("content-type", "application/json")], body=json.dumps(body)
    )


def from_decision(decision: Decision, released: bool = False) -> AuthzResponse:
    """Interlock mode: allow with the header obligations, anything else is a denial.
    `released`: an `approve` decision a person already approved (see `Holds.retry`)."""
    if decision.effect is not Effect.ALLOW and not (released and decision.effect is Effect.APPROVE):
        return denial(decision)
    ok = AuthzResponse(True, 200, [(DECISION_HEADER, decision.decision_id)])
    for o in decision.obligations:
        if o.type == "add_header":
            ok.headers.append((str(o.params["name"]).lower(), str(o.params["value"])))
        elif o.type == "strip_header":
            ok.headers_to_remove.append(str(o.params["name"]).lower())
    ok.metadata = dynamic_metadata(decision)
    return ok
