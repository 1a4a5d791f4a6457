"""One destination per tunnel: the CONNECT target, the TLS SNI and the Host header agree.

The decision is made on the CONNECT target (and the SSRF guard pins the socket to it), so
anything inside the tunnel that names another host is an attempt to be judged as one
destination and talk to another: domain fronting through a CDN, or an SNI that matches a
pass-through host so the tunnel escapes inspection. Such a TLS handshake is refused (the
client connection is closed before anything goes upstream) and such a request gets 421.
A Host, `:authority` or absolute URL must name the destination's port too (the scheme's
default when it names none): `Host: api:1` would reach the upstream naming a port that
was not decided.

Pass-through is decided here too, rather than with mitmproxy's `ignore_hosts`: that
option skips interception when *any* of the CONNECT target, SNI or Host header matches,
so a CONNECT to an undecided host with a pass-through SNI would become a blind tunnel.
Here a tunnel is passed through only when its CONNECT target (which the egress policy
decided at CONNECT) is a pass-through host and the SNI agrees with it.

Reverse-mode listeners are exempt: their upstream is fixed by configuration and their
clients name the gateway, not the upstream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mitmproxy import connection, http, tls
from mitmproxy.net.http import url
from mitmproxy.proxy import mode_specs

from interlock.proxies.http.answer import refuse

log = logging.getLogger(__name__)


def same_host(a: str, b: str) -> bool:
    """Hosts compared as DNS compares them: case-blind, trailing dot, IDNA forms."""
    return _norm(a) == _norm(b)


def _norm(host: str) -> str:
    h = host.strip().strip("[]").rstrip(".").lower()
    try:
        return h.encode("idna").decode("ascii")
    except UnicodeError:
        return h


def refused_handshake(error: str) -> bool:
    """Whether a failed client handshake was refused by mitmproxy (its own parser, or
    OpenSSL on its side) rather than ended by the client (an alert, a close)."""
    if error.startswith("Cannot parse ClientHello"):
        return True
    return "SSL routines" in error and "alert" not in error


def misdirected(flow: http.HTTPFlow, reason: str) -> None:
    refuse(
        flow,
        421,
        {"error": "misdirected request", "reason": reason},
        {"Content-Type": "application/json"},
    )


class Tunnels:
    """mitmproxy addon. `refused(client, target, reason)` hears of each TLS handshake
    refused, to audit it (its CONNECT was decided, the handshake's refusal is another)."""

    def __init__(
        self,
        passthrough: frozenset[str],
        refused: Callable[[connection.Client, str, str], None] | None = None,
    ) -> None:
        self.passthrough = frozenset(_norm(h) for h in passthrough)
        self.refused = refused
        self._refused: dict[str, str] = {}
        self.tunnelled: set[str] = set()
        """Client connections that opened a CONNECT tunnel."""
        self.passed_through: set[str] = set()
        """Client connections whose tunnel is passed through uninspected."""

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        ctx = data.context
        if not isinstance(ctx.client.proxy_mode, mode_specs.RegularMode):
            return
        if ctx.server.address is None:
            self._refused[ctx.client.id] = "TLS without a CONNECT target"
            return
        target = str(ctx.server.address[0])
        sni = data.client_hello.sni
        if sni and not same_host(sni, target):
            why = f"TLS SNI {sni!r} does not match the CONNECT target {target!r}"
            log.warning("refusing tunnel from %s: %s", ctx.client.peername, why)
            self._refused[ctx.client.id] = why
            return
        if _norm(target) in self.passthrough:
            data.ignore_connection = True
            self.passed_through.add(ctx.client.id)

    def tls_start_client(self, data: tls.TlsData) -> None:
        """Runs after mitmproxy's own TLS set-up; without a TLS context mitmproxy closes
        the client connection, which is how a refused handshake ends."""
        why = self._refused.pop(data.context.client.id, None)
        if why is not None:
            data.ssl_conn = None
            if self.refused is not None:
                server = data.context.server.address
                target = str(server[0]) if server is not None else ""
                self.refused(data.context.client, target, why)

    def tls_failed_client(self, data: tls.TlsData) -> None:
        """mitmproxy refused the handshake itself (a ClientHello it cannot parse, a
        protocol version or ciphers it does not accept): a refusal like the SNI check's.
        A client that closed early or sent an alert (it does not trust the CA) refused
        the proxy, not the other way round."""
        why = data.conn.error or ""
        if self.refused is None or not refused_handshake(why):
            return
        server = data.context.server.address
        target = str(server[0]) if server is not None else ""
        self.refused(data.context.client, target, f"TLS handshake refused: {why}")

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        self.tunnelled.add(flow.client_conn.id)

    def client_disconnected(self, client: connection.Client) -> None:
        self._refused.pop(client.id, None)
        self.tunnelled.discard(client.id)
        self.passed_through.discard(client.id)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or isinstance(
            flow.client_conn.proxy_mode, mode_specs.ReverseMode
        ):
            return
        req = flow.request
        default = 443 if req.scheme == "https" else 80
        if req.authority and flow.client_conn.id in self.tunnelled:
            # An absolute-form request inside a tunnel: upstream servers route by the URL,
            # which must then name the tunnel's destination too, port included.
            try:
                named, port = url.parse_authority(req.authority, check=False)
            except ValueError:
                named, port = "", None
            if not same_host(named, req.host) or (port or default) != req.port:
                misdirected(
                    flow,
                    f"request URL names {req.authority!r}, the tunnel {req.host}:{req.port}",
                )
                return
        authority = req.host_header
        if not authority:
            return
        try:
            host, port = url.parse_authority(authority, check=False)
        except ValueError:
            misdirected(flow, f"unreadable Host header {authority!r}")
            return
        if not same_host(host, req.host) or (port or default) != req.port:
            misdirected(
                flow,
                f"Host {authority!r} does not match the destination {req.host}:{req.port}",
            )
