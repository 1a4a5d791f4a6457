"""The SSH proxy: agents log in here, commands and file operations are decided one by one,
and the allowed ones run on the target over the proxy's own login.

Forwarding: local and dynamic forwards (direct-tcpip) are `egress` actions on
`host:port` carrying the `port_forward` flag, which the bundled policy refuses (a user
policy may allow a target; the connection is then tunnelled through the target's SSH
connection). Remote forwards (`-R`) are refused and audited. Agent and X11 forwarding
are never offered. Isolating an agent closes every SSH connection it has, at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncssh

from interlock.approvals.holds import Holds
from interlock.approvals.request import Verdict
from interlock.classify.shellpath import Where
from interlock.config import AgentConfig, SshConfig
from interlock.core.context import Posture
from interlock.core.model import Action, Agent, Decision, Effect, Operation
from interlock.core.pdp import PDP
from interlock.core.refusal import (
    FloodLimit,
    Refusals,
    client_address,
    guard_action,
    posture_parents,
)
from interlock.credentials.broker import Broker
from interlock.identity.registry import AgentRegistry
from interlock.proxies.ssh import connection, session, upstream
from interlock.proxies.ssh.auth import Keys, Login, parse_login
from interlock.proxies.ssh.resolve import ResolveError
from interlock.proxies.ssh.sftp import ProxySFTP

log = logging.getLogger(__name__)

HOST_KEY_FILE = "ssh_host_ed25519_key"
PEER_CLOSED = "Connection lost"
"""asyncssh's reason when the client closed its socket (asyncssh/connection.py)."""


def load_host_key(path: Path) -> asyncssh.SSHKey:
    """The proxy's host key, created (0600) on first start."""
    if path.exists():
        return asyncssh.read_private_key(str(path))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(path))
    path.chmod(0o600)
    key.write_public_key(str(path) + ".pub")
    return key


class Connection(asyncssh.SSHServer):
    """One agent's SSH connection to the proxy (asyncssh's per-connection server)."""

    def __init__(self, proxy: SshProxy) -> None:
        self.proxy = proxy
        self.conn: asyncssh.SSHServerConnection | None = None
        self.login: Login | None = None
        self.client = "unknown"
        """The client's address (the flood limit's key), read while the socket is open."""
        self.offered: str | None = None
        """The user name the client asked to log in as (for the record of a failed login)."""
        self._agent: Agent | None = None
        self._upstream: asyncssh.SSHClientConnection | None = None
        self._upstream_lock = asyncio.Lock()
        self._resolver: asyncssh.SFTPClient | None = None
        self._resolver_lock = asyncio.Lock()
        self._authn = "ssh_key"
        self.login_key: asyncssh.SSHKey | None = None
        """The agent key this connection logged in with (None: a CA certificate)."""
        self.registered = False
        """Whether the agent was in the configuration when it logged in."""
        self.held: set[asyncio.Task[Verdict]] = set()
        """Its actions waiting for approval: withdrawn when the connection is lost."""

    # --- lifecycle and authentication ---------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.client = client_address(conn.get_extra_info("peername"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._agent is None and (self.offered is not None or closed_by_proxy(exc)):
            self._refused_before_login(exc)
        for waiting in list(self.held):
            waiting.cancel()  # the hold records itself as withdrawn
        self.proxy.forget(self)
        if self._upstream is not None:
            self._upstream.close()

    def _refused_before_login(self, exc: Exception | None) -> None:
        """A connection that offered a login and never completed one (authentication
        failed), or that the proxy closed before any login (a protocol error, the login
        deadline). Anyone can cause these, so they are recorded under the flood limit."""
        suppressed = self.proxy.flood.take(self.client)
        if suppressed is None:
            return
        target = self.login.target if self.login is not None else ""
        details: dict[str, object] = {"target": target[:128], "client": self.client}
        details["suppressed_since_last"] = suppressed
        if self.offered is not None:
            details["user"] = self.offered[:128]
            why = f"authentication failed for {self.offered[:128]!r}"
        else:
            why = f"connection closed before login: {str(exc)[:256] or type(exc).__name__}"
        action = guard_action(None, "ssh", Operation.CONNECT, target, details)
        self.proxy.flood.refusals.soon(action, why)

    def begin_auth(self, username: str) -> bool:
        self.offered = username
        self.login = parse_login(username, self.proxy.config)
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        ok = self.login is not None and self.proxy.keys.agent_key(self.login.agent_id, key)
        if ok:
            self.login_key = key
        return ok

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if self.login is not None and self.proxy.keys.ca_key(key):
            self._authn = "ssh_cert"
            self.login_key = None
            return True
        return False

    def auth_completed(self) -> None:
        assert self.login is not None
        entry = self.proxy.registry.get(self.login.agent_id)
        self.registered = entry is not None
        self._agent = (
            entry.agent(self._authn)
            if entry is not None
            else Agent(self.login.agent_id, authn="none")
        )
        self.proxy.remember(self)

    @property
    def agent(self) -> Agent:
        assert self._agent is not None
        return self._agent

    @property
    def target_name(self) -> str:
        assert self.login is not None
        return self.login.target

    async def upstream(self) -> asyncssh.SSHClientConnection:
        """The proxy's connection to the target, opened on first use and shared by the
        sessions of this client connection."""
        async with self._upstream_lock:
            if self._upstream is None:
                target = self.proxy.config.targets[self.target_name]
                self._upstream = await upstream.connect(
                    target, self.proxy.config.ciphers, self.proxy.credentials
                )
            return self._upstream

    async def realpath(self, path: str) -> str | None:
        """`path` as the target resolves it (its SFTP server's realpath: every link
        followed), or None where it cannot (no such file, not allowed to look). Raises
        ResolveError when the target cannot be asked. One SFTP channel per connection,
        opened on first use: a lookup runs no command on the target."""
        try:
            async with self._resolver_lock:
                if self._resolver is None:
                    self._resolver = await (await self.upstream()).start_sftp_client()
                sftp = self._resolver
            return str(await sftp.realpath(path))
        except asyncssh.SFTPError:
            return None
        except (OSError, asyncssh.Error) as exc:
            self._resolver = None  # a channel that failed is not asked again
            raise ResolveError(str(exc) or type(exc).__name__) from None

    # --- forwarding -----------------------------------------------------------------------

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Any:
        return self._forward(dest_host, dest_port)

    async def _forward(self, dest_host: str, dest_port: int) -> Any:
        action = Action(
            self.agent,
            "ssh",
            Operation.EGRESS,
            f"{dest_host}:{dest_port}",
            {"forward": "direct-tcpip", "flags": ["port_forward"], "effects": ["egress"]},
        )
        decision = await self.proxy.decide(action, held=self.held)
        if decision.effect is not Effect.ALLOW:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                f"denied by interlock ({decision.decision_id})",
            )
        assert self.conn is not None
        try:
            up = await self.upstream()
        except (OSError, asyncssh.Error) as exc:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_CONNECT_FAILED, f"target unreachable: {exc}"
            ) from None
        return await self.conn.forward_tunneled_connection(up, dest_host, dest_port)

    def server_requested(self, listen_host: str, listen_port: int) -> Any:
        return self._remote_forward(listen_host, listen_port)

    async def _remote_forward(self, listen_host: str, listen_port: int) -> bool:
        action = Action(
            self.agent,
            "ssh",
            Operation.FORWARD,
            f"{listen_host}:{listen_port}",
            {"forward": "tcpip-forward", "flags": ["remote_forward"], "effects": ["egress"]},
        )
        await self.proxy.pdp.refuse(action, "remote port forwarding is not supported")
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        self._refused(Operation.EGRESS, dest_path, "direct-streamlocal", "unix socket forwarding")
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        self._refused(
            Operation.FORWARD, listen_path, "streamlocal-forward", "unix socket forwarding"
        )
        return False

    def _refused(self, operation: Operation, target: str, forward: str, what: str) -> None:
        details = {"forward": forward, "flags": ["port_forward"]}
        action = guard_action(self.agent, "ssh", operation, target, details)
        self.proxy.refusals.soon(action, f"{what} is not supported")

    def ended(self, reason: str, parents: tuple[str, ...] = ()) -> None:
        """Disconnect this connection, with a record of why (a child of its cause)."""
        if self.conn is None:
            return
        details = {"session": "ended"}
        action = guard_action(
            self.agent, "ssh", Operation.CONNECT, self.target_name, details, parents
        )
        self.proxy.refusals.soon(action, f"session ended: {reason}")
        self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, f"interlock: {reason}")


class SshProxy:
    def __init__(
        self,
        config: SshConfig,
        agents: dict[str, AgentConfig],
        data_dir: Path,
        pdp: PDP,
        registry: AgentRegistry,
        holds: Holds | None = None,
        credentials: Broker | None = None,
    ) -> None:
        self.config = config
        self.credentials = credentials
        """Vault: upstream logins with a certificate signed per connection."""
        self.pdp = pdp
        self.registry = registry
        self.holds = holds or Holds()
        self.keys = Keys(agents, config.user_ca_keys)
        self._agents: dict[str, AgentConfig] = dict(agents)
        self.host_key_path = config.host_key or data_dir / "ssh" / HOST_KEY_FILE
        self.server: asyncssh.SSHAcceptor | None = None
        self.address: tuple[str, int] | None = None
        self._by_agent: dict[str, set[Connection]] = {}
        self._unsubscribe: Any = None
        self._where: dict[str, Where] = {}
        """Per target: its login user's home and starting directory."""
        self.refusals = Refusals(pdp)
        self.flood = FloodLimit(pdp, "ssh")
        """Failed logins, audited at most once a second per client address."""

    async def decide(
        self, action: Action, text: str = "", held: set[asyncio.Task[Verdict]] | None = None
    ) -> Decision:
        """Decide; a hold waits for a human (expiry is a denial). `text`: the exact
        command line, for the person asked; `held`: the connection's waiting holds."""
        decision = await self.pdp.decide(action)
        if decision.effect is Effect.APPROVE:
            limit = self.config.approval_timeout
            verdict = await self.holds.wait_in(
                set() if held is None else held, decision, limit, action, text
            )
            if verdict.approved:
                return replace(decision, effect=Effect.ALLOW)
            return replace(
                decision,
                effect=Effect.DENY,
                reasons=(*decision.reasons, f"held for approval: {verdict.reason or 'denied'}"),
            )
        return decision

    async def where(self, conn: connection.Connection, learn: bool = False) -> Where:
        """Where commands start on the connection's target: configured, or (`learn`)
        the home directory the target's SFTP server reports, asked once per target.
        Unreachable, the home stays unknown and paths needing it are unresolved."""
        name = conn.target_name
        known = self._where.get(name)
        if known is None:
            target = self.config.targets[name]
            known = self._where[name] = Where(target.home, target.user, target.cwd)
        if known.home is None and learn:
            try:
                # The connection's own SFTP channel, the one its paths are resolved on.
                home = await conn.realpath(".")
            except ResolveError as exc:
                log.warning("target %s: cannot learn its home directory: %s", name, exc)
                return known
            if home is not None and home.startswith("/"):
                known = self._where[name] = replace(known, home=home)
        return known

    def open_sessions(self) -> int:
        return sum(len(conns) for conns in self._by_agent.values())

    def remember(self, conn: Connection) -> None:
        self._by_agent.setdefault(conn.agent.id, set()).add(conn)

    def forget(self, conn: Connection) -> None:
        if conn._agent is not None:
            self._by_agent.get(conn._agent.id, set()).discard(conn)

    def use_agents(self, agents: Mapping[str, AgentConfig]) -> None:
        self.prepare_agents(agents)()

    def prepare_agents(self, agents: Mapping[str, AgentConfig]) -> Callable[[], None]:
        """SIGHUP, in two steps (see PostgresProxy.prepare_agents): parse the new keys
        (raises on a bad one), then apply. Applying closes the connections of an agent
        that is gone, whose roles or owner changed, or that logged in with a key no
        longer listed (a CA-signed login of an agent never configured stays)."""
        keys = Keys(agents, self.config.user_ca_keys)
        before = dict(self._agents)

        def apply() -> None:
            self.keys, self._agents = keys, dict(agents)
            for agent_id, conns in list(self._by_agent.items()):
                old, new = before.get(agent_id), agents.get(agent_id)
                same = old is None or (new is not None and _decided_by(old) == _decided_by(new))
                for conn in list(conns):
                    self._recheck(conn, agent_id, agents, same)

        return apply

    def _recheck(
        self, conn: Connection, agent_id: str, agents: Mapping[str, AgentConfig], same: bool
    ) -> None:
        key = conn.login_key
        if key is not None:
            still = same and self.keys.agent_key(agent_id, key)
        else:
            still = (agent_id in agents and same) or not conn.registered
        if not still:
            log.warning("agent %s removed or changed: closing its SSH connection", agent_id)
            conn.ended("agent removed or changed in configuration")

    def _posture_changed(self, agent_id: str, posture: Posture) -> None:
        if not posture.isolated:
            return
        for conn in list(self._by_agent.get(agent_id, ())):
            log.warning("agent %s isolated: closing its SSH connection", agent_id)
            conn.ended("agent isolated", posture_parents(posture))

    async def start(self) -> None:
        host, _, port = self.config.listen.rpartition(":")
        key = load_host_key(self.host_key_path)

        def process(proc: asyncssh.SSHServerProcess[bytes]) -> Any:
            return session.handle(proc, proc.get_extra_info("connection").get_owner())

        def sftp(chan: asyncssh.SSHServerChannel[bytes]) -> ProxySFTP:
            owner = chan.get_connection().get_owner()
            assert isinstance(owner, Connection)
            return ProxySFTP(chan, owner)

        self.server = await asyncssh.create_server(
            lambda: Connection(self),
            host.strip("[]"),
            int(port),
            server_host_keys=[key],
            process_factory=process,
            sftp_factory=sftp,
            allow_scp=True,
            encoding=None,
            login_timeout=self.config.login_timeout,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_pty=True,
            line_editor=False,
            keepalive_interval=30,
            encryption_algs=self.config.ciphers,
        )
        sock = self.server.sockets[0].getsockname()
        self.address = (str(sock[0]), int(sock[1]))
        self._unsubscribe = self.pdp.store.subscribe(self._posture_changed)
        self.flood.start()

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
        for conns in list(self._by_agent.values()):
            for conn in list(conns):
                if conn.conn is not None:
                    conn.conn.close()
        await self.refusals.drain()
        await self.flood.stop()


def closed_by_proxy(exc: Exception | None) -> bool:
    """Whether a connection ended because the proxy ended it (a protocol error, the login
    deadline: asyncssh's own errors), not because the client left (a disconnect, which
    asyncssh reports as None, a plain close as `ConnectionLost('Connection lost')`, or a
    reset, an OSError)."""
    if not isinstance(exc, asyncssh.Error):
        return False
    return not (isinstance(exc, asyncssh.ConnectionLost) and str(exc) == PEER_CLOSED)


def _decided_by(agent: AgentConfig) -> tuple[object, ...]:
    """What a connection's decisions rest on besides its key: roles and owner."""
    return (tuple(agent.roles), agent.owner)
