"""A guard's refusal as an audited decision: every refusal a proxy makes has an id in the log."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from interlock.core.context import Posture
from interlock.core.model import Action, Agent, Operation

if TYPE_CHECKING:
    from interlock.core.pdp import PDP
    from interlock.core.record import DecisionRecord

ANONYMOUS = Agent("anonymous", authn="none")
"""Who a refusal is recorded for when the guard refused before anyone was identified (a
malformed request, failed authentication): what the client claimed goes in `details`."""

UNRECORDED = "not recorded on its own: counted in the next record for this address (flood limit)"
"""What a client refused under the flood limit is told instead of a decision id."""
FORGOTTEN = "*"
"""The key under which `RefusalBudget.due` reports counts of keys it forgot to make room."""
SWEEP_MIN_S = 0.1
"""The shortest pause between `FloodLimit` sweeps (an interval of 0 writes every refusal)."""

POSTURE_REASON = "decision "
"""How `PDP._apply` names the decision that set a posture (`Posture.reason`)."""


def posture_parents(posture: Posture) -> tuple[str, ...]:
    """The decision that isolated or restricted the agent, as the parent of what the
    posture then ends or refuses: the log links each consequence to its cause."""
    if posture.reason.startswith(POSTURE_REASON):
        return (posture.reason[len(POSTURE_REASON) :],)
    return ()


def client_address(peername: object) -> str:
    """A flood limit's key from a socket's `peername`: the address without its port (a
    flood opens a new port per connection)."""
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return str(peername or "unknown")


def refusals_counted(records: Iterable[DecisionRecord]) -> int:
    """How many refusals the flood-limited records among `records` stand for: each is one
    (a `summary` none) plus the ones it reports as suppressed."""
    total = 0
    for record in records:
        details = record.action.details
        if "suppressed_since_last" in details:
            total += (0 if details.get("summary") else 1) + int(details["suppressed_since_last"])
    return total


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
        self._forgotten = 0

    def take(self, key: str, now: float) -> int | None:
        """The number suppressed since the last record for `key` when one may be written
        now, else None (this one is counted)."""
        last, suppressed = self._last.get(key, (float("-inf"), 0))
        if now - last < self.interval:
            self._last[key] = (last, suppressed + 1)
            return None
        if key not in self._last and len(self._last) >= self.max_keys:
            self._forgotten += self._last.pop(next(iter(self._last)))[1]
        self._last[key] = (now, 0)
        return suppressed

    def __contains__(self, key: str) -> bool:
        return key in self._last

    def counted(self, key: str) -> int:
        """Refusals from `key` counted and not yet reported."""
        return self._last.get(key, (0.0, 0))[1]

    def due(self, now: float, every: bool = False) -> list[tuple[str, int]]:
        """The counts left behind by floods that stopped (no record for their key for an
        `interval`), each now reported: a count waiting for its key's next refusal
        could wait forever. Counts of keys forgotten to make room come as `FORGOTTEN`.
        `every` reports all counts whatever their age (at shutdown); `now` stays the time
        of the report, so the budget keeps working after it."""
        out: list[tuple[str, int]] = []
        for key, (last, suppressed) in list(self._last.items()):
            if suppressed and (every or now - last >= self.interval):
                self._last[key] = (now, 0)
                out.append((key, suppressed))
        if self._forgotten:
            out.append((FORGOTTEN, self._forgotten))
            self._forgotten = 0
        return out


class FloodLimit:
    """One proxy's refusals that anyone can cause: `take` says whether to write this one
    (and what it reports), and a sweep writes the counts a flood leaves when it stops,
    so every refusal is a record or counted in one."""

    def __init__(self, pdp: PDP, protocol: str, interval: float = 1.0) -> None:
        self.budget = RefusalBudget(interval)
        self.refusals = Refusals(pdp)
        self.protocol = protocol
        self._sweeper: asyncio.Task[None] | None = None
        self.owners: dict[str, tuple[str, Agent]] = {}
        """Keys that stand for one identified agent's refusals from one address (so an
        anonymous flood from the same address does not silence them): its address and
        agent, under which its summary is recorded."""

    def take(self, key: str) -> int | None:
        """As `RefusalBudget.take`, now."""
        return self.budget.take(key, time.monotonic())

    def start(self) -> None:
        """Start sweeping (once; again is a no-op)."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def stop(self) -> None:
        """Stops sweeping and writes every count still waiting."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        self.report(time.monotonic(), every=True)
        await self.refusals.drain()

    def report(self, now: float, every: bool = False) -> None:
        """Writes the counts `RefusalBudget.due` at `now`, as `summary` records."""
        for key, count in self.budget.due(now, every):
            client, agent = self.owners.get(key, (key, None))
            details = {"client": client, "suppressed_since_last": count, "summary": True}
            action = guard_action(
                agent, self.protocol, Operation.CONNECT, f"refusals from {client}", details
            )
            why = f"{count} refusal(s) from {client} counted by the flood limit"
            self.refusals.soon(action, why)
        for key in [k for k in self.owners if k not in self.budget]:
            del self.owners[key]  # forgotten by the budget: its count went under `*`

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(max(self.budget.interval, SWEEP_MIN_S))
            self.report(time.monotonic())
