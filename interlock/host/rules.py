"""From agents' postures to the `inet interlock` nftables table and the tool ACLs (no I/O)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import get_args

from interlock.config import Config, HostConfig, ProxyKind
from interlock.core.context import Posture
from interlock.core.model import TOOL_PREFIX
from interlock.errors import ConfigError

TABLE = "interlock"
"""The one table the enforcer owns (family inet: IPv4 and IPv6); it touches no other."""
PREFIX = "interlock"
"""Log prefix of dropped packets: `interlock <uid> <mode>` (NF_LOG_PREFIXLEN is 128)."""
LOG_RATE = "50/second burst 100 packets"
"""Reports per agent user: a scanning agent must not flood the audit log or the enforcer;
drops beyond it are still counted."""
PROXY_KINDS: tuple[ProxyKind, ...] = get_args(ProxyKind)
NO_EGRESS_KINDS = frozenset({"postgres", "ssh"})
"""What `no_egress` leaves: the proxies that reach named, configured targets only."""


class Mode(StrEnum):
    """What an agent's user may still reach."""

    LOCKDOWN = "lockdown"
    """interlock's listeners (and the allowed resolvers)."""
    NO_EGRESS = "no_egress"
    """The Postgres and SSH proxies only."""
    ISOLATED = "isolated"
    """Nothing at all, not even replies on connections others opened to it."""


def mode_of(posture: Posture, now: float) -> Mode:
    active = posture.active(now)
    if active.isolated:
        return Mode.ISOLATED
    if "no_egress" in active.restrictions:
        return Mode.NO_EGRESS
    return Mode.LOCKDOWN


def disabled_tools(posture: Posture, now: float) -> frozenset[str]:
    """Tool names the posture disables (`tool:NAME`)."""
    names = posture.active(now).restrictions
    return frozenset(r.removeprefix(TOOL_PREFIX) for r in names if r.startswith(TOOL_PREFIX))


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One place an agent's user may connect to. `address` unspecified (0.0.0.0, ::):
    any local address of that family, as a wildcard listener accepts."""

    kind: str
    address: Address
    port: int
    protocols: tuple[str, ...] = ("tcp",)


def _addresses(host: str) -> list[Address]:
    host = host.strip("[]")
    if host == "localhost":
        return [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    return [ipaddress.ip_address(host)]


def endpoints(config: Config) -> list[Endpoint]:
    """The proxies agents may reach, and the resolvers; ConfigError for a listener the
    firewall cannot name (port 0 is chosen at start, by another process)."""
    host = config.host or HostConfig()
    found: list[Endpoint] = []
    for kind in PROXY_KINDS:
        listens = host.proxies.get(kind)
        if listens is None:
            listens = _configured(config, kind)
        for listen in listens:
            address, _, port = listen.rpartition(":")
            if int(port) == 0:
                raise ConfigError(
                    f"host: the {kind} proxy listens on port 0 (chosen at start); "
                    f"set its port, or host.proxies.{kind}"
                )
            found.extend(Endpoint(kind, a, int(port)) for a in _addresses(address))
    for resolver in host.dns:
        found.append(Endpoint("dns", ipaddress.ip_address(resolver), 53, ("udp", "tcp")))
    return found


def _configured(config: Config, kind: ProxyKind) -> list[str]:
    if kind == "http" and config.http is not None:
        return [config.http.listen, *(r.listen for r in config.http.reverse)]
    section = getattr(config, kind)
    return [section.listen] if section is not None else []


def allowed(all_endpoints: Iterable[Endpoint], mode: Mode) -> list[Endpoint]:
    if mode is Mode.ISOLATED:
        return []
    if mode is Mode.NO_EGRESS:
        return [e for e in all_endpoints if e.kind in NO_EGRESS_KINDS]
    return list(all_endpoints)


def _match(e: Endpoint, protocol: str) -> str:
    where = f"{protocol} dport {e.port}"
    if e.address.is_unspecified:
        # One family only: interlock's listeners on [::] are IPv6-only (asyncio sets
        # IPV6_V6ONLY), so the same port on the other family may be someone else's.
        family = "ipv4" if e.address.version == 4 else "ipv6"
        return f"meta nfproto {family} fib daddr type local {where}"
    family = "ip" if e.address.version == 4 else "ip6"
    return f"{family} daddr {e.address} {where}"


def chain(uid: int, mode: Mode, all_endpoints: Iterable[Endpoint], group: int) -> list[str]:
    """The rules of one agent user's chain, in order."""
    rules = []
    if mode is not Mode.ISOLATED:
        # Answers on connections a local process opened to the agent's own sockets (a
        # dev server a person browses) are not the agent reaching out. Only local ones:
        # a remote party opening a connection (or sending the first datagram) to the
        # agent would otherwise be a way out the proxies never see.
        rules.append("ct direction reply fib daddr type local accept")
    for e in allowed(all_endpoints, mode):
        rules.extend(f"{_match(e, p)} accept" for p in e.protocols)
    rules.append(
        f'ct state new limit rate {LOG_RATE} log group {group} prefix "{PREFIX} {uid} {mode}"'
    )
    rules.append("counter drop")
    return rules


def ruleset(uids: Mapping[int, Mode], all_endpoints: Iterable[Endpoint], group: int) -> str:
    """An `nft -f` script replacing the whole table in one transaction: the kernel never
    holds a half-built table, and no other table is named."""
    points = list(all_endpoints)
    lines = [
        f"table inet {TABLE} {{}}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "  chain output {",
        "    type filter hook output priority filter - 10; policy accept;",
    ]
    lines.extend(f"    meta skuid {uid} jump agent_{uid}" for uid in sorted(uids))
    lines.append("  }")
    for uid in sorted(uids):
        lines.append(f"  chain agent_{uid} {{")
        lines.extend(f"    {rule}" for rule in chain(uid, uids[uid], points, group))
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def acl_denials(
    uids: Mapping[str, int], tools: Mapping[str, Path], disabled: Mapping[str, frozenset[str]]
) -> frozenset[tuple[int, Path]]:
    """(uid, binary) pairs whose execute permission must be removed; a disabled tool
    without a mapped binary has no host-side effect (the proxies still refuse it)."""
    return frozenset(
        (uids[agent], tools[name])
        for agent, names in disabled.items()
        for name in names
        if name in tools and agent in uids
    )
