"""The proxy's own login to a target: its key (or, with Vault, a key made for this
connection and a certificate signed for it for minutes), the target's host key checked
against the configured known_hosts (never learned), strict key exchange from asyncssh
>= 2.14.2."""

from __future__ import annotations

from typing import Any

import asyncssh

from interlock.config import SshTarget
from interlock.credentials.broker import Broker, CredentialError

CONNECT_TIMEOUT_S = 15.0


class NoCredentials(OSError):
    """No way to log in to the target (Vault unreachable, no key configured)."""


async def connect(
    target: SshTarget, ciphers: list[str], credentials: Broker | None = None
) -> asyncssh.SSHClientConnection:
    keys: list[Any]
    if credentials is not None and credentials.config.ssh is not None:
        try:
            keys = [await credentials.ssh_login(target.user)]
        except CredentialError as exc:
            raise NoCredentials(f"no login credentials: {exc}") from None
    elif target.key is not None:
        keys = [str(target.key)]
    else:
        raise NoCredentials("no key configured for the target and no [credentials.ssh]")
    return await asyncssh.connect(
        target.host,
        target.port,
        username=target.user,
        client_keys=keys,
        known_hosts=str(target.known_hosts),
        agent_path=None,
        config=[],
        connect_timeout=CONNECT_TIMEOUT_S,
        preferred_auth="publickey",
        encryption_algs=ciphers,
    )
