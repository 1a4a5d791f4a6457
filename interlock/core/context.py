"""Per-agent session context and posture, behind a store interface.

Context is what the agent did recently (actions, live taint, targets it has used, rate);
posture is what it may still do (restrictions, isolation). Both are keyed by agent id, so
every PEP that sees the same identity reads and writes the same state. The in-memory store
serves one process; a Redis store (issue 11) implements the same interface for several.

PEPs subscribe to posture changes so a restriction reaches open sessions at once, not at
the next action.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from interlock.core.model import parse_restriction

log = logging.getLogger(__name__)

RECENT_ACTIONS = 64
"""Recent actions kept per agent: enough for the execution graph of one task."""
SEEN_TARGETS = 10_000
"""Targets remembered per agent before the oldest are forgotten (bounded memory)."""
RATE_WINDOW_S = 60.0
BASELINE_MINUTES = 60
"""Per-minute action counts kept per agent for its own moving average."""
BASELINE_MIN_HISTORY = 5
"""Minutes of history before the baseline means anything."""
MAX_FINGERPRINTS = 50_000
"""Fingerprints of labelled values remembered per agent (oldest forgotten first)."""
MAX_ANSWER_KINDS = 1_000
"""Kinds of action whose approval history is kept per agent."""


@dataclass(frozen=True, slots=True)
class Posture:
    """What an agent may still do. `until` (epoch seconds) ends it; None means until restored."""

    restrictions: frozenset[str] = frozenset()
    isolated: bool = False
    until: float | None = None
    reason: str = ""

    def active(self, now: float) -> Posture:
        """The posture in force at `now` (an expired one is no posture at all)."""
        if self.until is not None and now >= self.until:
            return NORMAL
        return self

    @property
    def normal(self) -> bool:
        return not self.isolated and not self.restrictions


NORMAL = Posture()


@dataclass(frozen=True, slots=True)
class RecentAction:
    """One remembered action: enough to explain a later decision."""

    decision_id: str
    time: float
    protocol: str
    operation: str
    target: str
    effect: str


@dataclass(frozen=True, slots=True)
class ContextView:
    """A consistent snapshot of an agent's context, taken for one decision."""

    taints: frozenset[str] = frozenset()
    first_seen: bool = True
    actions_last_minute: int = 0
    approved: int = 0
    denied: int = 0
    recent: tuple[RecentAction, ...] = ()
    taint_sources: Mapping[str, str] = field(default_factory=dict)
    """Live taint -> the decision that caused it."""
    baseline_per_minute: float | None = None
    """The agent's own average actions per minute over the last hour (None: too new)."""


@dataclass(frozen=True, slots=True)
class Flow:
    """Labelled data read under `source` that an outgoing action carries."""

    source: str
    labels: frozenset[str]


PostureListener = Callable[[str, Posture], None]


class StateStore(Protocol):
    """Where context and posture live. All methods may be called concurrently."""

    async def view(
        self, agent_id: str, target_key: str, now: float, *, recent: bool = False
    ) -> ContextView:
        """The agent's context for a decision on `target_key`. The recent actions are
        read only when asked (`recent`): no decision reads them, and from Redis they
        are 64 JSON documents per call."""
        ...

    async def context(
        self, agent_id: str, target_key: str, now: float
    ) -> tuple[Posture, ContextView, bool]:
        """What a decision reads, together: `posture`, `view` (without the recent
        actions) and `has_fingerprints`. From a shared store that is one round trip
        instead of three, read at one instant."""
        ...

    async def record(
        self,
        agent_id: str,
        action: RecentAction,
        target_key: str,
        taints: Mapping[str, float],
    ) -> None:
        """Remember an action; `taints` maps labels to their expiry (epoch seconds)."""
        ...

    async def add_taint(
        self, agent_id: str, label: str, until: float, source: str | None = None
    ) -> None: ...

    async def add_fingerprints(
        self, agent_id: str, source: str, labels: frozenset[str], fps: Iterable[str], until: float
    ) -> None:
        """Remember fingerprints of labelled values read under decision `source`."""
        ...

    async def has_fingerprints(self, agent_id: str) -> bool:
        """Whether any labelled values of this agent are remembered."""
        ...

    async def flows(self, agent_id: str, fps: frozenset[str], now: float) -> list[Flow]:
        """The remembered reads `fps` carry data from."""
        ...

    async def restore(self, agent_id: str, reason: str = "") -> None:
        """Lift every restriction and the isolation."""
        ...

    async def record_approval(self, agent_id: str, kind: str, approved: bool) -> None:
        """Count a human's answer for this kind of action (`target_key`)."""
        ...

    async def posture(self, agent_id: str, now: float) -> Posture: ...

    async def set_posture(self, agent_id: str, posture: Posture) -> None:
        """Replace the posture and notify every subscriber."""
        ...

    async def restrict(
        self,
        agent_id: str,
        restrictions: Iterable[str],
        *,
        isolate: bool = False,
        reason: str = "",
        until: float | None = None,
    ) -> Posture:
        """Add restrictions (or isolate) on top of the current posture; return the result."""
        ...

    def subscribe(self, listener: PostureListener) -> Callable[[], None]:
        """Call `listener(agent_id, posture)` on every change; returns an unsubscribe."""
        ...

    def agents(self) -> list[str]: ...


@dataclass
class _Agent:
    recent: deque[RecentAction] = field(default_factory=lambda: deque(maxlen=RECENT_ACTIONS))
    taints: dict[str, float] = field(default_factory=dict)
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)
    window: deque[float] = field(default_factory=deque)
    minutes: deque[list[int]] = field(default_factory=lambda: deque(maxlen=BASELINE_MINUTES + 1))
    """[minute, count] per minute with actions, newest last."""
    taint_sources: dict[str, str] = field(default_factory=dict)
    fingerprints: OrderedDict[str, tuple[str, frozenset[str], float]] = field(
        default_factory=OrderedDict
    )
    answers: OrderedDict[str, list[int]] = field(default_factory=OrderedDict)
    """kind -> [approved, denied], least recently answered first."""
    posture: Posture = NORMAL
    baseline: tuple[tuple[int, ...], float | None] = ((), None)
    """The last `_baseline` answer and what it was computed from (see `_baseline_of`)."""


class Listeners:
    """Posture subscribers, shared by the stores."""

    def __init__(self) -> None:
        self._listeners: list[PostureListener] = []

    def subscribe(self, listener: PostureListener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _notify(self, agent_id: str, posture: Posture) -> None:
        for listener in list(self._listeners):
            try:
                listener(agent_id, posture)
            except Exception:
                # One broken PEP must not stop the others from hearing about a restriction.
                log.exception("posture listener failed for agent %s", agent_id)


class MemoryStore(Listeners):
    """The embedded store: one process, nothing persisted (restarts forget context)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._agents: dict[str, _Agent] = {}
        self._clock = clock

    def _get(self, agent_id: str) -> _Agent:
        state = self._agents.get(agent_id)
        if state is None:
            state = self._agents[agent_id] = _Agent()
        return state

    async def view(
        self, agent_id: str, target_key: str, now: float, *, recent: bool = False
    ) -> ContextView:
        state = self._agents.get(agent_id)
        if state is None:
            return ContextView()
        while state.window and state.window[0] <= now - RATE_WINDOW_S:
            state.window.popleft()
        for label in [t for t, until in state.taints.items() if until <= now]:
            del state.taints[label]
            state.taint_sources.pop(label, None)
        return ContextView(
            taints=frozenset(state.taints),
            first_seen=target_key not in state.seen,
            actions_last_minute=len(state.window),
            approved=state.answers.get(target_key, (0, 0))[0],
            denied=state.answers.get(target_key, (0, 0))[1],
            recent=tuple(state.recent) if recent else (),
            taint_sources=dict(state.taint_sources),
            baseline_per_minute=_baseline_of(state, now),
        )

    async def context(
        self, agent_id: str, target_key: str, now: float
    ) -> tuple[Posture, ContextView, bool]:
        return (
            await self.posture(agent_id, now),
            await self.view(agent_id, target_key, now),
            await self.has_fingerprints(agent_id),
        )

    async def record(
        self,
        agent_id: str,
        action: RecentAction,
        target_key: str,
        taints: Mapping[str, float],
    ) -> None:
        state = self._get(agent_id)
        state.recent.append(action)
        state.window.append(action.time)
        minute = int(action.time // 60)
        if state.minutes and state.minutes[-1][0] == minute:
            state.minutes[-1][1] += 1
        else:
            state.minutes.append([minute, 1])
        state.seen[target_key] = None
        state.seen.move_to_end(target_key)
        while len(state.seen) > SEEN_TARGETS:
            state.seen.popitem(last=False)
        for label, until in taints.items():
            state.taints[label] = max(until, state.taints.get(label, 0.0))
            state.taint_sources[label] = action.decision_id

    async def add_taint(
        self, agent_id: str, label: str, until: float, source: str | None = None
    ) -> None:
        state = self._get(agent_id)
        state.taints[label] = max(until, state.taints.get(label, 0.0))
        if source is not None:
            state.taint_sources[label] = source

    async def add_fingerprints(
        self, agent_id: str, source: str, labels: frozenset[str], fps: Iterable[str], until: float
    ) -> None:
        prints = self._get(agent_id).fingerprints
        for fp in fps:
            prints[fp] = (source, labels, until)
            prints.move_to_end(fp)
        while len(prints) > MAX_FINGERPRINTS:
            prints.popitem(last=False)

    async def has_fingerprints(self, agent_id: str) -> bool:
        state = self._agents.get(agent_id)
        return state is not None and bool(state.fingerprints)

    async def flows(self, agent_id: str, fps: frozenset[str], now: float) -> list[Flow]:
        state = self._agents.get(agent_id)
        if state is None or not state.fingerprints:
            return []
        found: dict[str, set[str]] = {}
        prints = state.fingerprints
        small, large = (fps, prints) if len(fps) < len(prints) else (prints, fps)
        for fp in small:
            if fp in large:
                source, labels, until = prints[fp]
                if until > now:
                    found.setdefault(source, set()).update(labels)
        return [Flow(s, frozenset(labels)) for s, labels in sorted(found.items())]

    async def restore(self, agent_id: str, reason: str = "") -> None:
        await self.set_posture(agent_id, replace(NORMAL, reason=reason))

    async def record_approval(self, agent_id: str, kind: str, approved: bool) -> None:
        answers = self._get(agent_id).answers
        counts = answers.setdefault(kind, [0, 0])
        answers.move_to_end(kind)
        counts[0 if approved else 1] += 1
        while len(answers) > MAX_ANSWER_KINDS:
            answers.popitem(last=False)

    async def posture(self, agent_id: str, now: float) -> Posture:
        state = self._agents.get(agent_id)
        return NORMAL if state is None else state.posture.active(now)

    async def set_posture(self, agent_id: str, posture: Posture) -> None:
        for r in posture.restrictions:
            parse_restriction(r)
        self._get(agent_id).posture = posture
        self._notify(agent_id, posture)

    async def restrict(
        self,
        agent_id: str,
        restrictions: Iterable[str],
        *,
        isolate: bool = False,
        reason: str = "",
        until: float | None = None,
    ) -> Posture:
        current = await self.posture(agent_id, self._clock())
        added = frozenset(parse_restriction(r) for r in restrictions)
        updated = tighten(current, added, isolate, reason, until)
        if updated != current:
            await self.set_posture(agent_id, updated)
        return updated

    def agents(self) -> list[str]:
        return sorted(self._agents)


def _baseline_of(state: _Agent, now: float) -> float | None:
    """`_baseline` of the agent, recomputed only when its inputs changed: the current
    minute, the minutes kept, or the count of the newest one once it is in the past
    (only the newest minute's count ever changes, and the current one is left out)."""
    minutes = state.minutes
    if not minutes:
        return None
    current = int(now // 60)
    last, count = minutes[-1]
    key = (current, len(minutes), minutes[0][0], last, count if last < current else -1)
    if state.baseline[0] != key:
        state.baseline = (key, _baseline(minutes, now))
    return state.baseline[1]


def _baseline(minutes: deque[list[int]], now: float) -> float | None:
    """Average actions per minute over the last hour, counting quiet minutes as zero and
    leaving out the current one; None with less than BASELINE_MIN_HISTORY minutes."""
    current = int(now // 60)
    past = [c for m, c in minutes if current - BASELINE_MINUTES <= m < current]
    if not minutes:
        return None
    first = min(m for m, _ in minutes)
    span = min(BASELINE_MINUTES, current - first)
    if span < BASELINE_MIN_HISTORY:
        return None
    return sum(past) / span


def tighten(
    current: Posture, added: frozenset[str], isolate: bool, reason: str, until: float | None
) -> Posture:
    """`current` with more restrictions (or isolated); restrictions only accumulate, and
    the later expiry wins."""
    return replace(
        current,
        restrictions=current.restrictions | added,
        isolated=current.isolated or isolate,
        reason=reason or current.reason,
        until=until if current.normal else _later(current.until, until),
    )


def _later(a: float | None, b: float | None) -> float | None:
    """The later of two expiries, where None (no expiry) is latest of all."""
    if a is None or b is None:
        return None
    return max(a, b)
