"""What a person is asked (the action shown and hashed), what they answer, and refusals."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass
from typing import Any

from interlock.core.model import Action, thaw


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


MAX_TEXT = 16 * 1024
"""Longest exact text kept on a request (longer: cut, and the cut is marked)."""


def action_hash(action: Action, text: str = "") -> str:
    """SHA-256 of the action's identity: agent, protocol, operation, target, details, and
    the exact text the PEP holds (statement, command line, or request line)."""
    doc = {
        "agent": action.agent.id,
        "protocol": action.protocol,
        "operation": action.operation.value,
        "target": action.target,
        "details": thaw(action.details),
        "text": text,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def visible(text: str, limit: int) -> str:
    """`text` safe to show a person: control and format characters (newlines aside)
    written as escapes, so nothing is hidden or reordered (bidi overrides), and anything
    past `limit` replaced by a marker saying how much was cut."""
    out = []
    for ch in text[:limit]:
        if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn"):
            out.append(ch)
        else:
            out.append(f"\\u{ord(ch):04x}")
    cut = len(text) - limit
    return "".join(out) + (f" …[+{cut} chars]" if cut > 0 else "")


def summary(action: Action, text: str = "") -> str:
    """One line a person can judge: who, what, on what, and the start of the words."""
    d = action.details
    what = (
        text
        or d.get("command")
        or " ".join(str(x) for x in (d.get("method", ""), d.get("path", "")) if x)
        or ""
    )
    line = f"{action.agent.id}: {action.protocol} {action.operation.value} {action.target}"
    flat = " ".join(str(what).split())
    return f"{line}: {visible(flat, 200)}" if flat else line
