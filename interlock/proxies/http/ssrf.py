"""SSRF guard: resolve, check every answer, then connect to the address that was checked.

Names are resolved by the system resolver, or by the DNS servers the config names (a
resolver the agent cannot influence). Reverse-mode upstreams are fixed by the operator and
not checked.

Runs at two points. On each request (and CONNECT) it answers 403 with a reason before any
decision, so agents see why; the refusal is audited (its decision id is in the body). At
`server_connect`, the moment mitmproxy is about to open a socket, it resolves again, checks
all answers, and pins the connection to a checked address: a DNS answer that changes
in between (rebinding) cannot slip through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver
from mitmproxy import http
from mitmproxy.proxy import mode_specs, server_hooks

from interlock.proxies.http.addresses import IP, Networks, blocked, parse_host

RESOLVE_TIMEOUT_S = 5.0
VERDICT_TTL_S = 5.0
MAX_REMEMBERED = 4096


class SsrfError(Exception):
    pass


class Resolver(Protocol):
    async def resolve(self, host: str) -> list[IP]:
        """Every address `host` has (IP literals in any spelling are their own answer);
        raises SsrfError when there is none."""
        ...


def _unique(ips: list[IP], host: str) -> list[IP]:
    out: list[IP] = []
    for ip in ips:
        if ip not in out:
            out.append(ip)
    if not out:
        raise SsrfError(f"{host} has no addresses")
    return out


class SystemResolver:
    """getaddrinfo: /etc/hosts, then the system's DNS."""

    async def resolve(self, host: str) -> list[IP]:
        literal = parse_host(host)
        if literal is not None:
            return [literal]
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            raise SsrfError(f"cannot resolve {host}: {exc}") from exc
        return _unique([ipaddress.ip_address(str(i[4][0]).split("%", 1)[0]) for i in infos], host)


class DnsResolver:
    """Asks the configured DNS servers directly for A and AAAA records."""

    def __init__(self, servers: list[tuple[str, int]]) -> None:
        self._resolver = dns.asyncresolver.Resolver(configure=False)
        self._resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in servers]
        self._resolver.lifetime = RESOLVE_TIMEOUT_S

    async def _query(self, host: str, rdtype: str) -> list[IP]:
        try:
            answer = await self._resolver.resolve(host, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise SsrfError(f"cannot resolve {host}: {type(exc).__name__}") from exc
        return [ipaddress.ip_address(r.address) for r in answer]

    async def resolve(self, host: str) -> list[IP]:
        literal = parse_host(host)
        if literal is not None:
            return [literal]
        # Safe to use whichever family answered: the connection is pinned to an address
        # from this list, so an address that was never seen is never dialled.
        results = await asyncio.gather(
            self._query(host, "A"), self._query(host, "AAAA"), return_exceptions=True
        )
        ips = [ip for r in results if isinstance(r, list) for ip in r]
        if not ips:
            for r in results:
                if isinstance(r, BaseException):
                    raise r
        return _unique(ips, host)


async def check(
    host: str, allow: Networks, resolver: Resolver | None = None, tunnels: bool = False
) -> IP:
    """The first address of `host`; raises SsrfError if any answer is forbidden."""
    ips = await (resolver or SystemResolver()).resolve(host)
    for ip in ips:
        why = blocked(ip, allow, tunnels)
        if why:
            raise SsrfError(f"{host} resolves to {ip}: {why}")
    return ips[0]


def _local(ip: IP) -> bool:
    """An address that reaches this host whatever it is bound to (0.0.0.0 connects to
    loopback)."""
    return ip.is_loopback or ip.is_unspecified


def own_listener(ip: IP, port: int, listeners: Iterable[tuple[str, int]]) -> str | None:
    """Which of interlock's own listeners `ip`:`port` reaches, or None. `allow_networks`
    does not open them: an operator who lets agents reach loopback or a private network
    for some service must not hand them the admin API and the approvals page (where an
    agent could guess its owner's password, or lock the owner out by name). A listener
    bound to every address is reached on any local or non-public address of its port."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for host, bound_port in listeners:
        if bound_port != port:
            continue
        bound = parse_host(host)
        if bound is None or bound == ip:
            return f"{host}:{port}"
        if _local(ip) and (bound.is_loopback or bound.is_unspecified):
            return f"{host}:{port}"
        if bound.is_unspecified and blocked(ip) is not None:
            return f"{host}:{port}"
    return None


def refuse(flow: http.HTTPFlow, reason: str, decision_id: str | None = None) -> None:
    body = {"error": "forbidden destination", "reason": reason}
    if decision_id is not None:
        body["decision_id"] = decision_id
    flow.response = http.Response.make(403, json.dumps(body), {"Content-Type": "application/json"})


Record = Callable[[http.HTTPFlow, str], Awaitable[str | None]]
"""Audits a refusal; returns its decision id (None when there is no agent to record)."""


class SsrfGuard:
    """mitmproxy addon."""

    def __init__(
        self,
        allow: Networks,
        resolver: Resolver | None = None,
        tunnels: bool = False,
        record: Record | None = None,
        own: Callable[[], Iterable[tuple[str, int]]] = lambda: (),
    ) -> None:
        self.allow = allow
        self.own = own
        """interlock's own listeners (the admin server): never reached, allowed or not."""
        self.record = record
        self.resolver: Resolver = resolver or SystemResolver()
        self.tunnels = tunnels
        """Whether 6to4, Teredo and NAT64 addresses carrying public IPv4 may be reached."""
        self._recent: dict[str, tuple[float, str | None]] = {}

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        await self._request(flow)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        await self._request(flow)

    async def _request(self, flow: http.HTTPFlow) -> None:
        """The early, explained refusal. Its verdict per host is remembered briefly so a
        keep-alive stream of requests does not resolve the name each time; the check
        that guards the socket (`server_connect`) always resolves afresh."""
        if flow.response is not None or isinstance(
            flow.client_conn.proxy_mode, mode_specs.ReverseMode
        ):
            return
        host, port = flow.request.host, flow.request.port
        key = f"{host} {port}"
        now = time.monotonic()
        seen = self._recent.get(key)
        if seen is not None and now - seen[0] < VERDICT_TTL_S:
            why = seen[1]
        else:
            try:
                await check(host, self.allow, self.resolver, self.tunnels)
                why = None
                for ip in await self.resolver.resolve(host):
                    own = own_listener(ip, port, self.own())
                    if own is not None:
                        why = f"{host} resolves to {ip}: interlock's own listener {own}"
                        break
            except SsrfError as exc:
                why = str(exc)
            if len(self._recent) >= MAX_REMEMBERED:
                self._recent.clear()
            self._recent[key] = (now, why)
        if why is not None:
            refuse(flow, why, await self.record(flow, why) if self.record else None)

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        if data.server.address is None:
            return
        if isinstance(data.client.proxy_mode, mode_specs.ReverseMode):
            mode = data.client.proxy_mode
            if (mode.address[0], mode.address[1]) == tuple(data.server.address[:2]):
                return
        host, port = data.server.address
        try:
            ip = await check(str(host), self.allow, self.resolver, self.tunnels)
        except SsrfError as exc:
            data.server.error = f"interlock SSRF guard: {exc}"
            return
        own = own_listener(ip, int(port), self.own())
        if own is not None:
            data.server.error = f"interlock SSRF guard: {host} is interlock's own listener {own}"
            return
        data.server.address = (str(ip), port)
