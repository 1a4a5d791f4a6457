"""The agent registry: who may connect, with which secret, and who answers for them.

Tokens are kept only as SHA-256 digests and compared in constant time, so a config file or
memory dump does not hand out working credentials, and timing does not leak them.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from interlock.config import AgentConfig
from interlock.core.model import Agent

_DUMMY = hashlib.sha256(b"interlock: no such agent").digest()


@dataclass(frozen=True, slots=True)
class AgentEntry:
    """One registered agent."""

    id: str
    roles: tuple[str, ...]
    owner: str | None
    token_digest: bytes | None
    ssh_keys: tuple[str, ...]

    def agent(self, authn: str, delegation: tuple[str, ...] = ()) -> Agent:
        return Agent(self.id, self.roles, self.owner, delegation, authn)


class AgentRegistry:
    """Looks agents up by id and checks their tokens."""

    def __init__(self, entries: Mapping[str, AgentEntry]) -> None:
        self._entries = dict(entries)

    @classmethod
    def from_config(cls, agents: Mapping[str, AgentConfig]) -> AgentRegistry:
        return cls(
            {
                name: AgentEntry(name, tuple(a.roles), a.owner, a.token_digest, tuple(a.ssh_keys))
                for name, a in agents.items()
            }
        )

    def replace(self, agents: Mapping[str, AgentConfig]) -> None:
        """SIGHUP: the new agent list, in place, so every holder of this registry (HTTP
        identity, ext_authz, SSH) sees it at once."""
        self._entries = AgentRegistry.from_config(agents)._entries

    def get(self, agent_id: str) -> AgentEntry | None:
        return self._entries.get(agent_id)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def ids(self) -> list[str]:
        return sorted(self._entries)

    def authenticate(self, agent_id: str, token: str) -> Agent | None:
        """The agent if `token` is its token, else None. Same work for unknown agents."""
        entry = self._entries.get(agent_id)
        expected = entry.token_digest if entry and entry.token_digest else _DUMMY
        given = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        if hmac.compare_digest(given, expected) and entry is not None and entry.token_digest:
            return entry.agent("token")
        return None
