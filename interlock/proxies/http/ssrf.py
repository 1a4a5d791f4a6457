"""SSRF guard: resolve, check every answer, then connect to the address that was checked.

Runs at two points. On each request (and CONNECT) it answers 403 with a reason before any
decision, so agents see why. At `server_connect`, the moment mitmproxy is about to open a
socket, it resolves again, checks all answers, and pins the connection to a checked
address: a DNS answer that changes in between (rebinding) cannot slip through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time

from mitmproxy import http
from mitmproxy.proxy import server_hooks

from interlock.proxies.http.addresses import IP, allowed_by, blocked, parse_host

Networks = list[ipaddress.IPv4Network | ipaddress.IPv6Network]
RESOLVE_TIMEOUT_S = 5.0
VERDICT_TTL_S = 5.0
MAX_REMEMBERED = 4096


class SsrfError(Exception):
    pass


async def resolve(host: str) -> list[IP]:
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
    out: list[IP] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in out:
            out.append(ip)
    if not out:
        raise SsrfError(f"{host} has no addresses")
    return out


async def check(host: str, allow: Networks) -> IP:
    """The first address of `host`; raises SsrfError if any answer is forbidden."""
    ips = await resolve(host)
    for ip in ips:
        why = blocked(ip)
        if why and not allowed_by(ip, allow):
            raise SsrfError(f"{host} resolves to {ip}, a {why} address")
    return ips[0]


def refuse(flow: http.HTTPFlow, reason: str) -> None:
    flow.response = http.Response.make(
        403,
        json.dumps({"error": "forbidden destination", "reason": reason}),
        {"Content-Type": "application/json"},
    )


class SsrfGuard:
    """mitmproxy addon."""

    def __init__(self, allow: Networks) -> None:
        self.allow = allow
        self._recent: dict[str, tuple[float, str | None]] = {}

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        await self._request(flow)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        await self._request(flow)

    async def _request(self, flow: http.HTTPFlow) -> None:
        """The early, explained refusal. Its verdict per host is remembered briefly so a
        keep-alive stream of requests does not resolve the name each time; the check
        that guards the socket (`server_connect`) always resolves afresh."""
        if flow.response is not None:
            return
        host = flow.request.host
        now = time.monotonic()
        seen = self._recent.get(host)
        if seen is not None and now - seen[0] < VERDICT_TTL_S:
            why = seen[1]
        else:
            try:
                await check(host, self.allow)
                why = None
            except SsrfError as exc:
                why = str(exc)
            if len(self._recent) >= MAX_REMEMBERED:
                self._recent.clear()
            self._recent[host] = (now, why)
        if why is not None:
            refuse(flow, why)

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        if data.server.address is None:
            return
        host, port = data.server.address
        try:
            ip = await check(str(host), self.allow)
        except SsrfError as exc:
            data.server.error = f"interlock SSRF guard: {exc}"
            return
        data.server.address = (str(ip), port)
