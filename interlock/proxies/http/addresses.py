"""SSRF guard arithmetic: what an address really is, and whether an agent may reach it.

Pure functions. `parse_host` reads every spelling an IPv4 address can hide behind
(`2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1`, as `inet_aton` and curl accept them)
and bracketed IPv6 with zone ids; `blocked` says why an address is off limits, looking
inside the IPv6 forms that carry an IPv4 address (mapped, NAT64, 6to4, Teredo).
"""

from __future__ import annotations

import ipaddress
import re

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

_BLOCKED_V4 = [
    (ipaddress.ip_network("0.0.0.0/8"), "this-network"),
    (ipaddress.ip_network("10.0.0.0/8"), "private"),
    (ipaddress.ip_network("100.64.0.0/10"), "carrier-grade NAT"),
    (ipaddress.ip_network("127.0.0.0/8"), "loopback"),
    (ipaddress.ip_network("169.254.0.0/16"), "link-local (cloud metadata)"),
    (ipaddress.ip_network("172.16.0.0/12"), "private"),
    (ipaddress.ip_network("192.0.0.0/24"), "IETF protocol assignments"),
    (ipaddress.ip_network("192.168.0.0/16"), "private"),
    (ipaddress.ip_network("198.18.0.0/15"), "benchmarking"),
    (ipaddress.ip_network("224.0.0.0/4"), "multicast"),
    (ipaddress.ip_network("240.0.0.0/4"), "reserved"),
]
_BLOCKED_V6 = [
    (ipaddress.ip_network("::/128"), "unspecified"),
    (ipaddress.ip_network("::1/128"), "loopback"),
    (ipaddress.ip_network("fc00::/7"), "unique-local"),
    (ipaddress.ip_network("fe80::/10"), "link-local"),
    (ipaddress.ip_network("fec0::/10"), "site-local"),
    (ipaddress.ip_network("ff00::/8"), "multicast"),
    (ipaddress.ip_network("100::/64"), "discard-only"),
]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_COMPAT = ipaddress.ip_network("::/96")
_V4_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*)$")


def _v4_number(part: str) -> int | None:
    if not _V4_PART.match(part):
        return None
    if part.lower().startswith("0x"):
        return int(part[2:] or "0", 16)
    if part.startswith("0") and len(part) > 1:
        return int(part, 8)
    return int(part)


def parse_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """IPv4 in any inet_aton spelling: 1 to 4 parts, each decimal, octal or hex."""
    parts = text.split(".")
    if text.endswith("."):
        parts = parts[:-1]
    if not 1 <= len(parts) <= 4:
        return None
    nums = [_v4_number(p) for p in parts]
    if any(n is None for n in nums):
        return None
    values = [n for n in nums if n is not None]
    *head, last = values
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(values)):
        return None
    value = 0
    for n in head:
        value = value * 256 + n
    value = value * 256 ** (5 - len(values)) + last
    return ipaddress.IPv4Address(value)


def parse_host(host: str) -> IP | None:
    """The address `host` names literally, or None when it is a DNS name."""
    h = host.strip().rstrip(".") if not host.endswith("..") else host
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if ":" in h:
        try:
            return ipaddress.IPv6Address(h.split("%", 1)[0])
        except ValueError:
            return None
    return parse_ipv4(h)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside mapped, NAT64, 6to4, Teredo and compatible forms."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or ip in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _COMPAT and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def blocked(ip: IP) -> str | None:
    """Why an agent may not reach `ip` by default, or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        for net, why in _BLOCKED_V6:
            if ip in net:
                return why
        inner = embedded_ipv4(ip)
        if inner is not None:
            why4 = blocked(inner)
            return f"{why4} (IPv4 inside IPv6)" if why4 else None
        return None
    for net, why4 in _BLOCKED_V4:
        if ip in net:
            return why4
    if ip == ipaddress.IPv4Address("255.255.255.255"):
        return "broadcast"
    return None


def allowed_by(ip: IP, allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    return any(ip.version == net.version and ip in net for net in allow)
