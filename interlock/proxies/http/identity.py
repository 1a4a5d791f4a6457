"""Who is behind a proxied request: `Proxy-Authorization` Basic agent:token or Bearer JWT.

A CONNECT authenticates the whole tunnel (requests inside it carry no proxy header); a
plain request authenticates itself. Missing or wrong credentials get 407 with a
`Proxy-Authenticate` challenge. The header is always removed before anything goes
upstream: the agent's token is never forwarded.

A reverse-mode (gateway) listener is not a proxy to its clients, so there the credentials
may also come in `X-Interlock-Authorization` (same schemes), and a failure is a 401.
"""

from __future__ import annotations

import base64

from mitmproxy import connection, http
from mitmproxy.proxy import mode_specs

from interlock.core.model import Agent
from interlock.errors import IdentityError
from interlock.identity.jwt import JwtVerifier
from interlock.identity.registry import AgentEntry, AgentRegistry
from interlock.proxies.http.answer import refuse

AGENT = "interlock.agent"
"""flow.metadata key holding the authenticated Agent."""
GATEWAY_HEADER = "X-Interlock-Authorization"


def challenge(flow: http.HTTPFlow, why: str) -> None:
    if isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode):
        status, header, error = 401, "WWW-Authenticate", "authentication required"
    else:
        status, header, error = 407, "Proxy-Authenticate", "proxy authentication required"
    refuse(
        flow,
        status,
        {"error": error, "reason": why},
        {header: 'Basic realm="interlock"', "Content-Type": "application/json"},
    )


class Identity:
    """mitmproxy addon: authenticate every flow or answer 407."""

    def __init__(self, registry: AgentRegistry, jwt: JwtVerifier | None = None) -> None:
        self.registry = registry
        self.jwt = jwt
        self._tunnels: dict[str, tuple[Agent, AgentEntry | None]] = {}
        """Client connection id -> the agent a CONNECT authenticated, and its registry
        entry then: a tunnel's requests are checked against the entry now (SIGHUP)."""
        self.clients: dict[str, Agent] = {}
        """Client connection id -> its agent, for closing an isolated agent's connections."""

    async def _authenticate(self, flow: http.HTTPFlow) -> Agent | None:
        return await self.named_by(flow.request.headers, flow.client_conn)

    async def named_by(self, headers: http.Headers, client: connection.Client) -> Agent | None:
        """The agent these request headers' credentials name, if they are valid."""
        header = headers.get("Proxy-Authorization", "")
        if not header and isinstance(client.proxy_mode, mode_specs.ReverseMode):
            header = headers.get(GATEWAY_HEADER, "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except ValueError:  # not base64 (or not ASCII at all), not UTF-8
                return None
            agent_id, sep, token = decoded.partition(":")
            return self.registry.authenticate(agent_id, token) if sep else None
        if scheme.lower() == "bearer" and self.jwt is not None:
            try:
                return await self.jwt.verify(value.strip())
            except IdentityError:
                return None
        return None

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        agent = await self._authenticate(flow)
        if agent is None:
            challenge(flow, "missing or invalid Proxy-Authorization on CONNECT")
            return
        self._tunnels[flow.client_conn.id] = (agent, self.registry.get(agent.id))
        self.clients[flow.client_conn.id] = agent
        flow.metadata[AGENT] = agent

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        tunnel = self._tunnels.get(flow.client_conn.id)
        agent: Agent | None
        if tunnel is not None:
            agent, entry = tunnel
            if self.registry.get(agent.id) != entry:
                # Removed, or its token, roles or owner changed since the CONNECT.
                challenge(flow, "the agent's configuration changed; connect again")
                return
        else:
            agent = await self._authenticate(flow)
        flow.request.headers.pop("Proxy-Authorization", None)
        flow.request.headers.pop(GATEWAY_HEADER, None)
        if agent is None:
            challenge(flow, "missing or invalid credentials")
            return
        flow.metadata[AGENT] = agent
        self.clients[flow.client_conn.id] = agent

    def tunnel_agent(self, client_id: str) -> Agent | None:
        """The agent whose CONNECT opened this client connection's tunnel, if any: what
        is refused inside the tunnel before a request is read is theirs."""
        tunnel = self._tunnels.get(client_id)
        return tunnel[0] if tunnel is not None else None

    async def who(self, flow: http.HTTPFlow) -> Agent | None:
        """Whom `flow` speaks for, without answering it: a refusal made before this addon
        ran (a malformed request) is audited under the agent its credentials name."""
        return self.tunnel_agent(flow.client_conn.id) or await self._authenticate(flow)

    def client_disconnected(self, client: connection.Client) -> None:
        self._tunnels.pop(client.id, None)
        self.clients.pop(client.id, None)
