"""Holding an action until a human decides, bounded by a deadline.

A PEP that gets `approve` calls `await holds.wait(decision, timeout)`; whoever answers for
the agent calls `holds.resolve(decision_id, approved, approver)`. No answer by the
deadline is a denial. The hold is bound to the decision id, and so to exactly the action
the decision was about.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from interlock.core.model import Decision


@dataclass(frozen=True, slots=True)
class Verdict:
    approved: bool
    approver: str | None
    reason: str


class Holds:
    def __init__(self) -> None:
        self._waiting: dict[str, tuple[Decision, asyncio.Future[Verdict]]] = {}

    async def wait(self, decision: Decision, limit: float) -> Verdict:
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._waiting[decision.decision_id] = (decision, future)
        try:
            return await asyncio.wait_for(future, limit)
        except TimeoutError:
            return Verdict(False, None, f"approval not given within {limit:g} s")
        finally:
            self._waiting.pop(decision.decision_id, None)

    def pending(self) -> list[Decision]:
        return [d for d, _ in self._waiting.values()]

    def resolve(self, decision_id: str, approved: bool, approver: str, reason: str = "") -> bool:
        """Answer a held action; False when nothing waits under that id (any more)."""
        entry = self._waiting.get(decision_id)
        if entry is None or entry[1].done():
            return False
        entry[1].set_result(Verdict(approved, approver, reason))
        return True
