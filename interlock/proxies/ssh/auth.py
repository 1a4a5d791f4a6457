"""Who is logging in, and where to: user names, agent keys, certificate authorities.

The user name is `agent` (the target comes from `[ssh.routes]`) or `agent+target`. An
agent proves itself with one of its `ssh_keys` or with an OpenSSH user certificate from
one of `user_ca_keys` whose principals include the user name it logs in with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import asyncssh

from interlock.config import AgentConfig, SshConfig


@dataclass(frozen=True)
class Login:
    agent_id: str
    target: str


def parse_login(username: str, config: SshConfig) -> Login | None:
    """The agent and target a user name asks for, or None when it names neither."""
    agent_id, sep, target = username.partition("+")
    if not agent_id:
        return None
    if not sep:
        target = config.routes.get(agent_id, "")
    if target not in config.targets:
        return None
    return Login(agent_id, target)


def _keys(lines: list[str]) -> list[bytes]:
    out = []
    for line in lines:
        key = asyncssh.import_public_key(line)
        out.append(key.public_data)
    return out


class Keys:
    """Public keys per agent and trusted CA keys, compared by their public blobs."""

    def __init__(self, agents: Mapping[str, AgentConfig], cas: list[str]) -> None:
        self.agents = {a: set(_keys(c.ssh_keys)) for a, c in agents.items() if c.ssh_keys}
        self.cas = set(_keys(cas))

    def agent_key(self, agent_id: str, key: asyncssh.SSHKey) -> bool:
        return key.public_data in self.agents.get(agent_id, set())

    def ca_key(self, key: asyncssh.SSHKey) -> bool:
        return key.public_data in self.cas
