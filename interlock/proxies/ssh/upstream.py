"""The proxy's own login to a target: its key, the target's host key checked against the
configured known_hosts (never learned), strict key exchange from asyncssh >= 2.14.2."""

from __future__ import annotations

import asyncssh

from interlock.config import SshTarget

CONNECT_TIMEOUT_S = 15.0


async def connect(target: SshTarget) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        target.host,
        target.port,
        username=target.user,
        client_keys=[str(target.key)],
        known_hosts=str(target.known_hosts),
        agent_path=None,
        config=[],
        connect_timeout=CONNECT_TIMEOUT_S,
        preferred_auth="publickey",
    )
