"""Running mitmproxy in-process, on interlock's loop, with only the addons it needs."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from mitmproxy import connection, http, options
from mitmproxy.addons import core, disable_h2c, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master

from interlock.approvals.holds import Holds
from interlock.approvals.pins import PinStore
from interlock.config import HttpConfig, dns_address
from interlock.core.context import Posture
from interlock.core.model import Action, Operation
from interlock.core.pdp import PDP
from interlock.core.refusal import FloodLimit, Refusals, guard_action, posture_parents
from interlock.credentials.broker import Broker
from interlock.identity.jwt import JwtVerifier
from interlock.identity.registry import AgentRegistry
from interlock.proxies.http.addresses import canonical_host
from interlock.proxies.http.deadlines import Deadlines
from interlock.proxies.http.egress import Egress, request_action
from interlock.proxies.http.failclosed import guard_all
from interlock.proxies.http.framing import Framing
from interlock.proxies.http.hygiene import Hygiene
from interlock.proxies.http.identity import AGENT, Identity
from interlock.proxies.http.inject import Inject, Redact
from interlock.proxies.http.parser import ParserGuard, ParserRefusal
from interlock.proxies.http.refusals import Refusals as RefusalAnswers
from interlock.proxies.http.refusals import Throttle, listener_mode
from interlock.proxies.http.ssrf import DnsResolver, Resolver, SsrfGuard, SystemResolver
from interlock.proxies.http.toolpins import ToolPins
from interlock.proxies.http.tunnel import Tunnels

log = logging.getLogger(__name__)

CA_FILE = "mitmproxy-ca-cert.pem"
CLOSE_GRACE_S = 0.5
"""What agents must trust; `interlock ca export` prints it."""


class HttpProxy:
    def __init__(
        self,
        config: HttpConfig,
        data_dir: Path,
        pdp: PDP,
        registry: AgentRegistry,
        jwt: JwtVerifier | None = None,
        holds: Holds | None = None,
        credentials: Broker | None = None,
        pins: PinStore | None = None,
        own: Callable[[], Iterable[tuple[str, int]]] = lambda: (),
    ) -> None:
        self.config = config
        self.own = own
        """interlock's own listeners, which the SSRF guard keeps agents from."""
        self.pins = pins
        """Tool pins: MCP listings pinned and held tools refused (none: not pinned)."""
        self.credentials = credentials
        self.confdir = data_dir / "ca"
        self.pdp = pdp
        self.registry = registry
        self.jwt = jwt
        self.holds = holds or Holds()
        self.master: Master | None = None
        self._task: asyncio.Task[None] | None = None
        self.address: tuple[str, int] | None = None
        """Where the forward proxy listens, once started."""
        self.identity = Identity(registry, jwt)
        self._unsubscribe = pdp.store.subscribe(self._posture_changed)
        self.reverse_addresses: list[tuple[str, int]] = []
        """Where each `reverse` route listens, in config order."""
        self.refusals = Refusals(pdp)
        """Connection-level refusals (deadlines, the per-address cap), audited off-hook."""
        self.flood = FloodLimit(pdp, "http")
        """One budget for every refusal anyone can cause without credentials, per client
        address; its sweep writes the counts a flood leaves when it stops."""
        self.refusal_budget = self.flood.budget
        self.throttle = Throttle(self.flood)

    def _posture_changed(self, agent_id: str, posture: Posture) -> None:
        """Isolation closes the agent's open client connections (tunnels and keep-alive
        connections) at once; every other restriction applies from the next request."""
        if not posture.isolated or self.master is None:
            return
        # A moment's grace: the request whose decision isolated the agent is still being
        # answered on one of these connections, and its 403 should reach the agent.
        asyncio.get_running_loop().call_later(
            CLOSE_GRACE_S, self._close_connections, agent_id, posture_parents(posture)
        )

    def _close_connections(self, agent_id: str, parents: tuple[str, ...]) -> None:
        """Each connection isolation ends is a record, its parent the isolating decision."""
        for cid, agent in list(self.identity.clients.items()):
            if agent.id != agent_id:
                continue
            log.warning("agent %s isolated: closing its proxy connection", agent_id)
            address = self._close_client(cid)
            if address is not None:
                details = {"client": address, "session": "ended"}
                target = f"connection from {address}"
                action = guard_action(agent, "http", Operation.CONNECT, target, details, parents)
                self.refusals.soon(action, "session ended: agent isolated")

    def _close_client(self, client_id: str) -> str | None:
        """Close one client connection (mitmproxy then ends its server side too); the
        client's address if it was open."""
        if self.master is None:
            return None
        handler = self.master.addons.get("proxyserver").connections.get(client_id)
        if handler is not None and handler.client in handler.transports:
            writer = handler.transports[handler.client].writer
            if writer is not None:
                writer.close()
                return str(handler.client.peername[0])
        return None

    async def _refused(self, flow: http.HTTPFlow, why: str) -> str | None:
        """An SSRF refusal is audited like any denial, so the log shows what was tried
        (a request with no agent was already answered 407 and has nothing to record)."""
        agent = flow.metadata.get(AGENT)
        if agent is None:
            return None
        if flow.request.method == "CONNECT":
            port = {"port": flow.request.port}
            target = canonical_host(flow.request.host)
            action = Action(agent, "http", Operation.CONNECT, target, port)
        else:
            action = request_action(flow)
        return (await self.pdp.refuse(action, why)).decision_id

    def _injecting(self) -> bool:
        return self.credentials is not None and bool(self.credentials.config.inject)

    def addons(self) -> list[object]:
        allow = [ipaddress.ip_network(n, strict=False) for n in self.config.allow_networks]
        resolver: Resolver = (
            DnsResolver([dns_address(s) for s in self.config.dns_servers])
            if self.config.dns_servers
            else SystemResolver()
        )
        tunnels = Tunnels(frozenset(self.config.passthrough), self._handshake_refused)
        return [
            ParserGuard(self._parser_refused),
            guard_all(
                Deadlines(
                    self._close_client,
                    lambda client_id: client_id in tunnels.passed_through,
                    self.config.header_timeout,
                    self.config.idle_timeout,
                    self.config.body_timeout,
                    self.config.max_connections_per_client,
                    self._connection_refused,
                )
            ),
            guard_all(Hygiene(self.config.max_header_bytes, self.config.max_headers)),
            guard_all(self.identity),
            guard_all(
                SsrfGuard(
                    allow, resolver, self.config.allow_tunnelled_ipv6, self._refused, self.own
                )
            ),
            guard_all(tunnels),
            guard_all(Framing()),
            # Before Egress: its response hook must never see an echoed key.
            *([guard_all(Redact())] if self._injecting() else []),
            *([guard_all(ToolPins(self.pdp, self.pins))] if self.pins is not None else []),
            guard_all(
                Egress(
                    self.pdp,
                    self.holds,
                    self.config.approval_timeout,
                    frozenset(h.lower() for h in self.config.passthrough),
                    self.config.keep_prompts,
                    frozenset(h.lower() for h in self.config.trusted_hosts),
                )
            ),
            *(
                [guard_all(Inject(self.credentials, self.credentials.config.inject))]
                if self.credentials is not None and self._injecting()
                else []
            ),
            guard_all(Framing("framing_final")),
            # Last: it audits what any addon before it refused.
            guard_all(RefusalAnswers(self.pdp, self.identity.who, self.throttle)),
        ]

    async def start(self) -> None:
        self.confdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.flood.start()
        modes = [f"regular@{self.config.listen}"] + [
            f"reverse:{r.upstream}@{r.listen}" for r in self.config.reverse
        ]
        opts = options.Options(confdir=str(self.confdir), mode=modes)
        master = Master(opts, event_loop=asyncio.get_running_loop(), with_termlog=False)
        master.addons.add(
            core.Core(),
            proxyserver.Proxyserver(),
            next_layer.NextLayer(),
            tlsconfig.TlsConfig(),
            disable_h2c.DisableH2C(),
        )
        master.addons.add(*self.addons())
        # Options that addons declare exist only once the addons are loaded.
        opts.update(
            ssl_insecure=False,
            body_size_limit=str(self.config.max_body_bytes),
            connection_strategy="lazy",
            # Bytes that are not HTTP (in a tunnel, or after a 101 that is not a
            # WebSocket) are refused, not piped to the upstream undecided.
            rawtcp=False,
            # Bodies are buffered whole: the decision and the framing see all of it.
            stream_large_bodies=None,
            validate_inbound_headers=True,
            tcp_timeout=max(1, round(self.config.tunnel_idle_timeout)),
        )
        if self.config.upstream_ca is not None:
            opts.update(ssl_verify_upstream_trusted_ca=str(self.config.upstream_ca))
        self.master = master
        loop = asyncio.get_running_loop()
        factory = loop.get_task_factory()
        self._task = asyncio.create_task(master.run(), name="mitmproxy")
        server = master.addons.get("proxyserver")
        for _ in range(500):
            instances = list(server.servers)
            # mitmproxy makes its CA in TlsConfig.running, which can come after the
            # listeners are up: not started until both are there (an HTTPS client in
            # that gap would fail).
            listening = len(instances) == len(modes) and all(i.is_running for i in instances)
            if listening and self.ca_file.exists():
                # Master.run installs Python 3.12's eager task factory on the loop for as
                # long as it runs, and this loop is shared with every other proxy: asyncssh
                # stalls in public-key auth under eager tasks (the SSH proxy timed out every
                # login while the HTTP proxy ran). Every component gets ordinary tasks.
                loop.set_task_factory(factory)
                by_mode = {i.mode.full_spec: i.listen_addrs[0] for i in instances}
                addrs = [(str(a[0]), int(a[1])) for a in (by_mode[m] for m in modes)]
                self.address, self.reverse_addresses = addrs[0], addrs[1:]
                return
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        raise RuntimeError("the HTTP proxy did not start listening")

    def _connection_refused(self, address: str, why: str) -> None:
        """A connection refused or closed with its request unfinished is a decision in
        the log like any refusal, at most once a second per address (a flood of them is
        counted in the next record, not written one by one)."""
        target = f"connection from {address}"
        action = self.throttle.action(
            address, None, Operation.CONNECT, target, {"connection": True}
        )
        if action is not None:
            self.refusals.soon(action, why)

    async def _parser_refused(self, refusal: ParserRefusal) -> str | None:
        """A request mitmproxy's parser refused before any flow existed: under the
        tunnel's agent if it came inside one, else the agent its credentials name if
        mitmproxy read its head, else `anonymous`; throttled."""
        client = refusal.client
        address = str(client.peername[0])
        agent = self.identity.tunnel_agent(client.id)
        if agent is None and refusal.request is not None:
            agent = await self.identity.named_by(refusal.request.headers, client)
        target = refusal.target or f"request from {address}"
        details = {"parser": True, "mode": listener_mode(client)}
        action = self.throttle.action(address, agent, Operation.EGRESS, target, details)
        if action is None:
            return None
        return (await self.pdp.refuse(action, refusal.reason)).decision_id

    def _handshake_refused(self, client: connection.Client, target: str, why: str) -> None:
        """A tunnel's TLS handshake refused (its SNI names another host than its
        CONNECT): under the agent whose CONNECT opened it."""
        address = str(client.peername[0])
        agent = self.identity.tunnel_agent(client.id)
        details = {"tls": True, "mode": listener_mode(client)}
        action = self.throttle.action(address, agent, Operation.CONNECT, target, details)
        if action is not None:
            self.refusals.soon(action, why)

    async def stop(self) -> None:
        self._unsubscribe()
        if self.master is not None:
            self.master.shutdown()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10)
        await self.flood.stop()
        await self.refusals.drain()

    @property
    def ca_file(self) -> Path:
        return self.confdir / CA_FILE
