"""Slow clients cannot hold the proxy: deadlines for request heads, bodies and keep-alive
waits, and a cap on connections per client address.

mitmproxy closes a connection only after `tcp_timeout` (10 minutes) of complete
silence, so a client that trickles a byte now and then, or sends half a head and stops,
held a socket and a handler forever (issue 19: 500 such connections were all still open
after 200 s, in the process that also serves Postgres and SSH). Here every client
connection has one deadline at a time, by what it owes the proxy:

- a fresh connection (or a fresh CONNECT tunnel) owes a complete request head within
  `header_timeout`;
- a request whose head has arrived owes its whole body within `body_timeout`;
- a connection with nothing in flight owes its next request head within `idle_timeout`.

While a request is being decided, held for approval or answered by the upstream, the
client owes nothing (only mitmproxy's `tcp_timeout`, set to `tunnel_idle_timeout`,
applies). Pass-through tunnels and WebSockets carry no HTTP requests to time, so from
their start only `tunnel_idle_timeout` applies to them too.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from mitmproxy import connection, http

log = logging.getLogger(__name__)


@dataclass
class _Client:
    address: str
    bodies: dict[str, float] = field(default_factory=dict)
    """Flows whose body is being read, and when it must be complete."""
    in_flight: set[str] = field(default_factory=set)
    """Flows being decided or answered."""
    served: bool = False
    tunnel: bool = False
    timer: asyncio.TimerHandle | None = None


class Deadlines:
    """mitmproxy addon, first of all so that a head counts as arrived before other
    addons spend time on it (a DNS lookup, say). `close(client_id)` closes a client
    connection; `exempt(client_id)` says it became a pass-through tunnel; `refused(address,
    reason)` hears of each connection refused or closed with a request unfinished (an idle
    keep-alive connection closing is housekeeping, not a refusal)."""

    def __init__(
        self,
        close: Callable[[str], object],
        exempt: Callable[[str], bool],
        header_timeout: float,
        idle_timeout: float,
        body_timeout: float,
        max_per_client: int,
        refused: Callable[[str, str], None] | None = None,
    ) -> None:
        self.close = close
        self.exempt = exempt
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.body_timeout = body_timeout
        self.max_per_client = max_per_client
        self.refused = refused
        self._clients: dict[str, _Client] = {}
        self._per_address: Counter[str] = Counter()

    def client_connected(self, client: connection.Client) -> None:
        address = str(client.peername[0])
        if self._per_address[address] >= self.max_per_client:
            log.warning(
                "%s has %d connections open: refusing another", address, self.max_per_client
            )
            client.error = f"more than {self.max_per_client} connections from {address}"
            if self.refused is not None:
                self.refused(address, client.error)
            return
        self._per_address[address] += 1
        self._clients[client.id] = _Client(address)
        self._rearm(client.id)

    def client_disconnected(self, client: connection.Client) -> None:
        state = self._clients.pop(client.id, None)
        if state is None:
            return
        if state.timer is not None:
            state.timer.cancel()
        self._per_address[state.address] -= 1
        if self._per_address[state.address] <= 0:
            del self._per_address[state.address]

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        """A tunnel starts afresh: its first request inside owes a head, as a new
        connection does (the TLS handshake included)."""
        state = self._clients.get(flow.client_conn.id)
        if state is not None:
            state.served = False
            self._rearm(flow.client_conn.id)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        state = self._clients.get(flow.client_conn.id)
        if state is not None:
            state.bodies[flow.id] = asyncio.get_running_loop().time() + self.body_timeout
            self._rearm(flow.client_conn.id)

    async def request(self, flow: http.HTTPFlow) -> None:
        state = self._clients.get(flow.client_conn.id)
        if state is not None:
            state.bodies.pop(flow.id, None)
            state.in_flight.add(flow.id)
            self._rearm(flow.client_conn.id)

    async def response(self, flow: http.HTTPFlow) -> None:
        self._done(flow)

    async def error(self, flow: http.HTTPFlow) -> None:
        self._done(flow)

    def _done(self, flow: http.HTTPFlow) -> None:
        state = self._clients.get(flow.client_conn.id)
        if state is not None:
            state.bodies.pop(flow.id, None)
            state.in_flight.discard(flow.id)
            state.served = True
            self._rearm(flow.client_conn.id)

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        self._untimed(flow.client_conn.id)

    def _untimed(self, client_id: str) -> None:
        state = self._clients.get(client_id)
        if state is not None:
            state.tunnel = True
            self._rearm(client_id)

    def _rearm(self, client_id: str) -> None:
        state = self._clients[client_id]
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        loop = asyncio.get_running_loop()
        if state.tunnel:
            return
        if state.bodies:
            at, why = min(state.bodies.values()), f"no complete body within {self.body_timeout} s"
        elif state.in_flight:
            return
        elif state.served:
            at, why = loop.time() + self.idle_timeout, f"idle for {self.idle_timeout} s"
        else:
            at, why = (
                loop.time() + self.header_timeout,
                f"no complete request head within {self.header_timeout} s",
            )
        state.timer = loop.call_at(at, self._expire, client_id, why)

    def _expire(self, client_id: str, why: str) -> None:
        state = self._clients.get(client_id)
        if state is None:
            return
        state.timer = None
        if self.exempt(client_id):
            self._untimed(client_id)
            return
        log.info("closing the connection from %s: %s", state.address, why)
        if self.refused is not None and not why.startswith("idle"):
            self.refused(state.address, why)
        self.close(client_id)
