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


def denial(decision: Decision, status: int = 403) -> AuthzResponse:
    reason = "; ".join(decision.reasons) or decision.effect.value
    headers = [(DECISION_HEADER, decision.decision_id), ("content-type", "application/json")]
    if decision.effect is Effect.APPROVE:
        reason = f"human approval required: {reason}"
        headers.append((APPROVAL_HEADER, decision.decision_id))
    body = {"error": "denied by interlock", "decision_id": decision.decision_id, "reason": reason}
    return AuthzResponse(
        False, status, headers, body=json.dumps(body), metadata={"interlock": metadata(decision)}
    )


def from_decision(decision: Decision) -> AuthzResponse:
    """Interlock mode: allow with the header obligations, anything else is a denial
    (ext_authz cannot hold a request for a human; approval comes with issue 9)."""
    if decision.effect is not Effect.ALLOW:
        return denial(decision)
    ok = AuthzResponse(True, 200, [(DECISION_HEADER, decision.decision_id)])
    for o in decision.obligations:
        if o.type == "add_header":
            ok.headers.append((str(o.params["name"]).lower(), str(o.params["value"])))
        elif o.type == "strip_header":
            ok.headers_to_remove.append(str(o.params["name"]).lower())
    ok.metadata = {"interlock": metadata(decision)}
    return ok
