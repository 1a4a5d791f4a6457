"""A guard's refusal as an audited decision: every refusal a proxy makes has an id in the log."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from interlock.core.context import Posture
from interlock.core.model import Action, Agent, Operation

if TYPE_CHECKING:
    from interlock.core.pdp import PDP

ANONYMOUS = Agent("anonymous", authn="none")
"""Who a refusal is recorded for when the guard refused before anyone was identified (a
malformed request, failed authentication): what the client claimed goes in `details`."""

POSTURE_REASON = "decision "
"""How `PDP._apply` names the decision that set a posture (`Posture.reason`)."""


def posture_parents(posture: Posture) -> tuple[str, ...]:
    """The decision that isolated or restricted the agent, as the parent of what the
    posture then ends or refuses: the log links each consequence to its cause."""
    if posture.reason.startswith(POSTURE_REASON):
        return (posture.reason[len(POSTURE_REASON) :],)
    return ()


def guard_action(
    agent: Agent | None,
    protocol: str,
    operation: Operation,
    target: str,
    details: Mapping[str, Any],
    parents: tuple[str, ...] = (),
) -> Action:
    """The action a guard refused, attributed to `agent` or to `ANONYMOUS`."""
    return Action(
        agent or ANONYMOUS,
        protocol,
        operation,
        target[:2048],
        {"guard": True, **details},
        parents=parents,
    )


class Refusals:
    """Audits refusals made where nothing can await (a posture callback, a synchronous
    hook): each becomes `PDP.refuse` in a task held until written, so none is lost to the
    garbage collector and `drain` (at shutdown, in tests) waits for them all."""

    def __init__(self, pdp: PDP) -> None:
        self.pdp = pdp
        self._tasks: set[asyncio.Task[object]] = set()

    def soon(self, action: Action, reason: str) -> None:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(
            self.pdp.refuse(action, reason)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class RefusalBudget:
    """At most one audited refusal per key (a client address) per `interval` seconds:
    a refusal anyone can cause without credentials must not let them fill the log. The
    ones in between are counted and reported with the next one written."""

    def __init__(self, interval: float = 1.0, max_keys: int = 10_000) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._last: dict[str, tuple[float, int]] = {}

    def take(self, key: str, now: float) -> int | None:
        """The number suppressed since the last record for `key` when one may be written
        now, else None (this one is counted)."""
        last, suppressed = self._last.get(key, (float("-inf"), 0))
        if now - last < self.interval:
            self._last[key] = (last, suppressed + 1)
            return None
        if key not in self._last and len(self._last) >= self.max_keys:
            self._last.pop(next(iter(self._last)))
        self._last[key] = (now, 0)
        return suppressed
