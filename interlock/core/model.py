"""The one model every protocol speaks: Agent, Action, Decision and their parts.

Protocol adapters turn what they see into an `Action`, the PDP answers with a `Decision`.
Records are frozen so a decision can be cached, logged and shared between proxies without
anyone changing it underneath the others.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class Operation(StrEnum):
    """The closed vocabulary of things an agent can do (DESIGN.md, "The model")."""

    READ = "read"
    WRITE = "write"
    DDL = "ddl"
    ADMIN = "admin"
    EXEC = "exec"
    EGRESS = "egress"
    TOOL_CALL = "tool_call"
    FILE_READ = "file_read"
    FILE_WRITE = "file_write"
    FORWARD = "forward"
    CONNECT = "connect"
    DELEGATE = "delegate"
    SECRET_READ = "secret_read"  # noqa: S105 (an operation name, not a secret)
    PROMPT = "prompt"
    COMPLETION = "completion"


class Effect(StrEnum):
    """What the PEP must do, from most to least permissive."""

    ALLOW = "allow"
    APPROVE = "approve"
    RESTRICT = "restrict"
    DENY = "deny"
    ISOLATE = "isolate"


class Tier(StrEnum):
    """Risk tiers; each maps to a default effect in the bundled policy."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


TEXT: dict[StrEnum, str] = {m: m.value for kind in (Operation, Effect, Tier) for m in kind}
"""Member -> its text, for the per-decision paths: `.value` is a descriptor call, several
times a dict lookup (measured: 0.22 against 0.05 us)."""


NAMED_RESTRICTIONS = frozenset({"read_only", "no_egress", "no_delegation", "rotate_credentials"})
"""Restrictions that take no argument; `tool:<name>` disables one tool."""

TOOL_PREFIX = "tool:"
MAX_NAME = 256
"""Longest agent id, role, label or restriction accepted: they go into keys and logs."""


def parse_restriction(value: str) -> str:
    """Return `value` if it names a known restriction, else raise ValueError."""
    if value in NAMED_RESTRICTIONS:
        return value
    if value.startswith(TOOL_PREFIX) and 0 < len(value) - len(TOOL_PREFIX) <= MAX_NAME:
        return value
    raise ValueError(f"unknown restriction {value!r}")


_SCALARS = frozenset({str, int, float, bool, type(None)})


def freeze(value: Any) -> Any:
    """Deep-freeze JSON-like data: dicts become read-only mappings, lists tuples."""
    # Exact-type checks first: this runs for every detail of every action, and the
    # abstract-class isinstance checks below cost several times more.
    t = type(value)
    if t in _SCALARS:
        return value
    if t is list or t is tuple:
        return tuple(freeze(v) for v in value)
    if t is dict or t is MappingProxyType:
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return tuple(sorted(freeze(v) for v in value))
    return value


def thaw(value: Any) -> Any:
    """Inverse of `freeze`: plain dicts and lists, ready for JSON."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Agent:
    """Who acts. `delegation` is the RFC 8693 `act` chain, nearest actor first."""

    id: str
    roles: tuple[str, ...] = ()
    owner: str | None = None
    delegation: tuple[str, ...] = ()
    authn: str = "none"
    """How the identity was established: token, jwt, ssh_key, ssh_cert, mtls, header, uid
    (the local user, `interlock host`), none."""


@dataclass(frozen=True, slots=True)
class Action:
    """One security-relevant thing an agent is about to do."""

    agent: Agent
    protocol: str
    operation: Operation
    target: str
    details: Mapping[str, Any] = EMPTY
    labels: frozenset[str] = frozenset()
    """Data classification labels of what the action touches (e.g. pii, restricted)."""
    parents: tuple[str, ...] = ()
    """Decision ids this action follows from: the execution graph."""
    taints: frozenset[str] = frozenset()
    """Taint the agent's session acquires if this action goes ahead (untrusted_content, ...)."""
    threat_matches: tuple[str, ...] = ()
    """Threat-intel feed entries the target matched."""
    prompt_hash: str | None = None
    prompt_text: str | None = None
    """The prompt itself, only where the configuration says to keep it (audit record)."""
    confidence: float | None = None
    """Agent-reported confidence in [0, 1], when the framework sends one."""
    payload: str = ""
    """The text the action carries out (a request body, a command line), for data-flow
    matching against labelled values the agent read; used by the PDP, never recorded."""

    def __post_init__(self) -> None:
        if not isinstance(self.details, MappingProxyType):
            object.__setattr__(self, "details", freeze(self.details))


def with_findings(
    action: Action,
    details: Mapping[str, Any],
    parents: tuple[str, ...],
    threat_matches: tuple[str, ...],
) -> Action:
    """`action` with what the PDP found (flows in the details, parents, threat intel):
    `dataclasses.replace` at less than half its cost, which is a tenth of a cached
    decision for an agent with a live taint. Every field is passed, by keyword, so a
    new field of `Action` cannot be dropped silently (tests/core/test_model.py)."""
    return Action(
        agent=action.agent,
        protocol=action.protocol,
        operation=action.operation,
        target=action.target,
        details=details,
        labels=action.labels,
        parents=parents,
        taints=action.taints,
        threat_matches=threat_matches,
        prompt_hash=action.prompt_hash,
        prompt_text=action.prompt_text,
        confidence=action.confidence,
        payload=action.payload,
    )


@dataclass(frozen=True, slots=True)
class Obligation:
    """Something the PEP must carry out for the decision to hold (mask, redact, ...)."""

    type: str
    params: Mapping[str, Any] = EMPTY


@dataclass(frozen=True, slots=True)
class Risk:
    """Score 0-100, its tier, and the signals it was computed from."""

    score: int
    tier: Tier
    signals: Mapping[str, float] = EMPTY


@dataclass(frozen=True, slots=True)
class Decision:
    """The PDP's answer. Every decision has an id, errors included."""

    decision_id: str
    effect: Effect
    risk: Risk
    policy_version: str
    reasons: tuple[str, ...] = ()
    restrictions: tuple[str, ...] = ()
    obligations: tuple[Obligation, ...] = ()
    time: float = field(default_factory=time.time)
    shadow: tuple[tuple[Effect, str], ...] = ()
    """(effect, reason) findings of rules on trial (the policy's `shadow` key): recorded,
    never enforced."""

    @property
    def allowed(self) -> bool:
        """True only for `allow`; every other effect stops the action as it stands."""
        return self.effect is Effect.ALLOW


_last_ms = 0
_seq = 0
_RANDOM_BLOCK = 8192
"""Bytes read from the OS at a time: one `os.urandom` call per ~800 decision ids instead
of two per id (a syscall each, measured at several percent of a cached decision)."""
_random = b""
_at = 0
_id_lock = threading.Lock()


def _forget_random() -> None:
    """A forked worker must not hand out the ids its parent's buffer would."""
    global _random, _at
    _random, _at = b"", 0


os.register_at_fork(after_in_child=_forget_random)


def new_decision_id() -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so ids sort like the decisions they name."""
    global _last_ms, _seq, _random, _at
    ms = time.time_ns() // 1_000_000
    with _id_lock:
        if _at + 10 > len(_random):
            _random, _at = os.urandom(_RANDOM_BLOCK), 0
        chunk = _random[_at : _at + 10]
        _at += 10
        if ms == _last_ms:
            _seq = (_seq + 1) & 0xFFF
        else:
            _last_ms, _seq = ms, int.from_bytes(chunk[8:], "big") & 0x7FF
        seq = _seq
    rand = int.from_bytes(chunk[:8], "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
