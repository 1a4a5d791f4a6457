"""Holding an action until a human decides, bounded by a deadline.

A PEP that gets `approve` calls `await holds.wait(decision, timeout, action)`; whoever
answers for the agent calls `holds.answer(decision_id, approved, approver, channel)`. No
answer by the deadline is a denial. The hold is bound to the decision id, and the
request shows a hash of exactly the action it was about, so a person approves that
action and no other.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from interlock.core.model import Action, Decision, thaw


@dataclass(frozen=True, slots=True)
class Verdict:
    approved: bool
    approver: str | None
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

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.decision_id,
            "agent": self.agent,
            "owner": self.owner,
            "summary": self.summary,
            "action_sha256": self.action_hash,
            "risk": self.risk,
            "created": self.created,
            "expires": self.expires,
        }


def action_hash(action: Action) -> str:
    """SHA-256 of the action's identity: protocol, operation, target and details (the
    statement, command line, or method, URL and body size)."""
    doc = {
        "protocol": action.protocol,
        "operation": action.operation.value,
        "target": action.target,
        "details": thaw(action.details),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def summary(action: Action) -> str:
    """One line a person can judge: who, what, on what, and the words of it."""
    d = action.details
    what = (
        d.get("command")
        or d.get("sql")
        or " ".join(str(x) for x in (d.get("method", ""), d.get("path", "")) if x)
        or ""
    )
    line = f"{action.agent.id}: {action.protocol} {action.operation.value} {action.target}"
    return f"{line}: {str(what)[:200]}" if what else line


class ApprovalError(Exception):
    """An answer that cannot be taken; `status` is the HTTP status the API answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Holds:
    def __init__(self, owner_only: bool = True) -> None:
        self.owner_only = owner_only
        """Only the agent's owner may answer (when the agent has one)."""
        self._waiting: dict[str, tuple[ApprovalRequest, asyncio.Future[Verdict]]] = {}

    async def wait(self, decision: Decision, limit: float, action: Action | None = None) -> Verdict:
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        now = time.time()
        request = ApprovalRequest(
            decision.decision_id,
            action.agent.id if action is not None else "",
            action.agent.owner if action is not None else None,
            summary(action) if action is not None else "",
            action_hash(action) if action is not None else "",
            {"score": decision.risk.score, "tier": decision.risk.tier.value},
            now,
            now + limit,
        )
        self._waiting[decision.decision_id] = (request, future)
        try:
            return await asyncio.wait_for(future, limit)
        except TimeoutError:
            return Verdict(False, None, f"approval not given within {limit:g} s")
        finally:
            self._waiting.pop(decision.decision_id, None)

    def pending(self) -> list[ApprovalRequest]:
        return [r for r, f in self._waiting.values() if not f.done()]

    def get(self, decision_id: str) -> ApprovalRequest | None:
        entry = self._waiting.get(decision_id)
        return entry[0] if entry is not None else None

    def answer(
        self, decision_id: str, approved: bool, approver: str, channel: str, reason: str = ""
    ) -> ApprovalRequest:
        """Answer a held action, or raise ApprovalError: unknown or expired (404), already
        answered (409), not the agent's owner (403)."""
        entry = self._waiting.get(decision_id)
        if entry is None:
            raise ApprovalError(404, f"no pending approval {decision_id!r} (unknown or expired)")
        request, future = entry
        if future.done():
            raise ApprovalError(409, f"approval {decision_id} was already answered")
        if self.owner_only and request.owner and approver != request.owner:
            raise ApprovalError(403, f"only {request.owner} may answer for {request.agent}")
        future.set_result(Verdict(approved, approver, reason, channel))
        return request

    def resolve(self, decision_id: str, approved: bool, approver: str, reason: str = "") -> bool:
        """Answer a held action; False when it cannot be answered (see `answer`)."""
        try:
            self.answer(decision_id, approved, approver, "api", reason)
        except ApprovalError:
            return False
        return True
