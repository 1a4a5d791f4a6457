"""What a person is asked, what they answer, and why an answer can be refused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Verdict:
    approved: bool
    approver: str | None
    """Who answered; None when no person did (expiry, a failed channel)."""
    reason: str
    channel: str = ""


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """What a person is asked to approve."""

    decision_id: str
    agent: str
    owner: str | None
    summary: str
    action_hash: str
    risk: dict[str, Any]
    created: float
    expires: float
    kind: str = ""
    """protocol:operation:target, the unit approval history is kept by."""
    protocol: str = ""
    text: str = ""
    """The exact statement, command line or request, for people to read (escaped)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.decision_id,
            "agent": self.agent,
            "owner": self.owner,
            "summary": self.summary,
            "action_sha256": self.action_hash,
            "kind": self.kind,
            "text": self.text,
            "risk": self.risk,
            "created": self.created,
            "expires": self.expires,
        }


class ApprovalError(Exception):
    """An answer that cannot be taken; `status` is the HTTP status the API answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
