"""Enforce or shadow: which mode applies to an action, and the answer a shadowed decision gives.

Shadow mode lets interlock sit in the path before it is trusted to act: the PDP decides
and records exactly as it would, but the PEP is told to let the action through. The mode
is resolved per decision (most specific wins: agent, then protocol, then global), so a
change reaches open sessions on their next action.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from interlock.core.model import Action, Decision, Effect


class Mode(StrEnum):
    ENFORCE = "enforce"
    SHADOW = "shadow"


PROTOCOLS = ("http", "mcp", "postgres", "ssh", "envoy")
"""The protocols the bundled PEPs decide, for which `interlock agents show` lists a mode."""

SHADOW_KEEPS = frozenset({"add_header"})
"""Obligations a shadowed decision still carries: they add what an allowed request would
carry (the verified agent id for a service behind a mesh), they restrict nothing, and a
service that relies on them would break in shadow without them."""


@dataclass(frozen=True, slots=True)
class Modes:
    """The configured modes: `[policy] mode`, each proxy's `mode`, `[agents.X] mode`."""

    default: Mode = Mode.ENFORCE
    protocols: Mapping[str, tuple[Mode, str]] = field(default_factory=dict)
    """protocol -> (mode, the config key that set it)."""
    agents: Mapping[str, Mode] = field(default_factory=dict)

    def resolve(
        self, agent: str, protocol: str, overrides: Mapping[str, Mode] | None = None
    ) -> tuple[Mode, str]:
        """The mode for `agent` acting over `protocol`, and why (the setting that won)."""
        if overrides and agent in overrides:
            return overrides[agent], f"admin API, agent {agent}"
        if agent in self.agents:
            return self.agents[agent], f"[agents.{agent}] mode"
        found = self.protocols.get(protocol)
        if found is not None:
            return found
        return self.default, "[policy] mode"

    def changes(self, other: Modes) -> list[tuple[str, str, str]]:
        """(setting, old mode, new mode) for every setting that differs in `other`."""
        out = []
        if self.default != other.default:
            out.append(("[policy] mode", self.default.value, other.default.value))
        by_setting: dict[str, tuple[str, str]] = {}
        for proto in sorted(set(self.protocols) | set(other.protocols)):
            old, new = self.protocols.get(proto), other.protocols.get(proto)
            before, after = _name(old[0] if old else None), _name(new[0] if new else None)
            if before != after:
                # One setting can cover several protocols ([http] mode: http and mcp).
                setting = new[1] if new else old[1] if old else proto
                by_setting.setdefault(setting, (before, after))
        out.extend((setting, *change) for setting, change in by_setting.items())
        for agent in sorted(set(self.agents) | set(other.agents)):
            a, b = self.agents.get(agent), other.agents.get(agent)
            if a != b:
                out.append((f"[agents.{agent}] mode", _name(a), _name(b)))
        return out


def _name(mode: Mode | None) -> str:
    return mode.value if mode is not None else "unset"


UNREADABLE = frozenset(
    {
        "unparsed",
        "unparsable",
        "truncated",
        "unresolved",
        "dynamic_sql",
        "dynamic_command",
        "code_from_stdin",
        "interactive_shell",
    }
)
"""Classifier flags (docs/postgres.md, docs/ssh.md) saying the PEP could not read
completely what would run. What cannot be read is refused in every mode: shadow mode
must not forward what no decision saw."""


def shadowable(action: Action) -> bool:
    """Whether a decision on `action` may be shadowed: not for an unauthenticated agent
    (identity is always enforced), not for what the PEP could not read."""
    if action.agent.authn == "none":
        return False
    flags = action.details.get("flags", ())
    return not any(isinstance(f, str) and f in UNREADABLE for f in flags)


def shadow_answer(decision: Decision) -> Decision:
    """What the PEP enforces for a shadowed `decision`: an allow under the same id, with
    none of the restrictions or obligations that would have held, masked or stripped."""
    kept = tuple(o for o in decision.obligations if o.type in SHADOW_KEEPS)
    if decision.effect is Effect.ALLOW and kept == decision.obligations:
        return decision
    return replace(decision, effect=Effect.ALLOW, restrictions=(), obligations=kept, shadow=())
