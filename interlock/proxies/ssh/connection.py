"""What sessions and SFTP need of a client connection and its proxy (server.py has both)."""

from __future__ import annotations

import asyncio
from typing import Protocol

import asyncssh

from interlock.approvals.request import Verdict
from interlock.classify.shellpath import Where
from interlock.config import SshConfig
from interlock.core.model import Action, Agent, Decision
from interlock.core.pdp import PDP
from interlock.core.refusal import Refusals


class Proxy(Protocol):
    """`server.SshProxy` as a session sees it."""

    @property
    def config(self) -> SshConfig: ...

    @property
    def pdp(self) -> PDP: ...

    @property
    def refusals(self) -> Refusals: ...

    async def decide(
        self, action: Action, text: str = "", held: set[asyncio.Task[Verdict]] | None = None
    ) -> Decision: ...

    async def where(self, conn: Connection, learn: bool = False) -> Where: ...


class Connection(Protocol):
    """`server.Connection` (one agent's SSH connection) as a session sees it."""

    @property
    def proxy(self) -> Proxy: ...

    @property
    def agent(self) -> Agent: ...

    @property
    def target_name(self) -> str: ...

    @property
    def held(self) -> set[asyncio.Task[Verdict]]: ...

    async def upstream(self) -> asyncssh.SSHClientConnection: ...

    async def realpath(self, path: str) -> str | None: ...
