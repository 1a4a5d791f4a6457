"""SSRF guard arithmetic: what an address really is, and whether an agent may reach it.

Pure functions. `parse_host` reads every spelling an IPv4 address can hide behind
(`2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1`, as `inet_aton` and curl accept them)
and bracketed IPv6 with zone ids; `blocked` says why an address is off limits. An IPv6
address that carries an IPv4 address is decided by every IPv4 address it carries
(`embedded`): the translation forms (mapped, translated, compatible) reach that address
on a dual-stack host; the tunnelling forms (NAT64, 6to4, Teredo) reach it through a
gateway, and are refused outright unless the operator allows them (as Smokescreen does);
an ISATAP interface identifier names an IPv4 node in any prefix.
"""

from __future__ import annotations

import ipaddress
import re

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Networks = list[ipaddress.IPv4Network | ipaddress.IPv6Network] | tuple[()]

_BLOCKED_V4 = [
    (ipaddress.ip_network("0.0.0.0/8"), "this-network"),
    (ipaddress.ip_network("10.0.0.0/8"), "private"),
    (ipaddress.ip_network("100.64.0.0/10"), "carrier-grade NAT"),
    (ipaddress.ip_network("127.0.0.0/8"), "loopback"),
    (ipaddress.ip_network("169.254.0.0/16"), "link-local (cloud metadata)"),
    (ipaddress.ip_network("172.16.0.0/12"), "private"),
    (ipaddress.ip_network("192.0.0.0/24"), "IETF protocol assignments"),
    (ipaddress.ip_network("192.0.2.0/24"), "documentation"),
    (ipaddress.ip_network("192.88.99.0/24"), "6to4 relay anycast"),
    (ipaddress.ip_network("192.168.0.0/16"), "private"),
    (ipaddress.ip_network("198.18.0.0/15"), "benchmarking"),
    (ipaddress.ip_network("198.51.100.0/24"), "documentation"),
    (ipaddress.ip_network("203.0.113.0/24"), "documentation"),
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
    (ipaddress.ip_network("2001:2::/48"), "benchmarking"),
    (ipaddress.ip_network("2001:10::/28"), "ORCHID"),
    (ipaddress.ip_network("2001:db8::/32"), "documentation"),
    (ipaddress.ip_network("3fff::/20"), "documentation"),
]
_RESERVED_V6 = ipaddress.ip_network("::/8")
"""Reserved by the IETF; holds the IPv4-carrying forms below, decided by what they carry."""
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_COMPAT = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_SIXTOFOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
_NAT64_LENGTHS = (48, 56, 64, 96)
"""RFC 6052 prefix lengths that fit inside the local-use /48 (RFC 8215); the operator's
choice is not visible in the address, so every position is read."""
_ISATAP = (0x00005EFE, 0x02005EFE)
"""RFC 5214 interface identifiers: `0:5efe:a.b.c.d` and `200:5efe:a.b.c.d`."""
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


def _rfc6052(value: int, length: int) -> ipaddress.IPv4Address:
    """The IPv4 address at RFC 6052's position for a prefix of `length` bits: after
    the prefix, skipping bits 64-71 (the u octet)."""
    if length == 96:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    bits = f"{value:0128b}"
    without_u = bits[:64] + bits[72:]
    return ipaddress.IPv4Address(int(without_u[length : length + 32], 2))


def embedded(ip: ipaddress.IPv6Address) -> list[tuple[str, bool, ipaddress.IPv4Address]]:
    """Every IPv4 address `ip` carries: (form, whether the form tunnels, address)."""
    value = int(ip)
    low = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if ip in _MAPPED:
        return [("IPv4-mapped", False, low)]
    if ip in _TRANSLATED:
        return [("IPv4-translated", False, low)]
    if ip in _COMPAT and value > 1:
        return [("IPv4-compatible", False, low)]
    if ip in _NAT64:
        return [("NAT64", True, low)]
    if ip in _NAT64_LOCAL:
        return [("NAT64 local-use", True, _rfc6052(value, n)) for n in _NAT64_LENGTHS]
    found: list[tuple[str, bool, ipaddress.IPv4Address]] = []
    if ip in _SIXTOFOUR:
        found.append(("6to4", True, ipaddress.IPv4Address(value >> 80 & 0xFFFFFFFF)))
    if ip in _TEREDO:
        server, client = ip.teredo or (low, low)
        found += [("Teredo server", True, server), ("Teredo client", True, client)]
    if value >> 32 & 0xFFFFFFFF in _ISATAP:
        found.append(("ISATAP", False, low))
    return found


def blocked(ip: IP, allow: Networks = (), tunnels: bool = False) -> str | None:
    """Why an agent may not reach `ip`, or None. `allow` are networks the operator
    opened (they cover an IPv4 address inside an IPv6 one too); `tunnels` lets the
    tunnelling forms through when every IPv4 address they carry may be reached."""
    if allowed_by(ip, allow):
        return None
    if isinstance(ip, ipaddress.IPv4Address):
        for net4, what in _BLOCKED_V4:
            if ip in net4:
                return what
        if ip == ipaddress.IPv4Address("255.255.255.255"):
            return "broadcast"
        return None
    for net, why in _BLOCKED_V6:
        if ip in net:
            return why
    carried = embedded(ip)
    if not carried and ip in _RESERVED_V6:
        return "reserved"
    for form, _, inner in carried:
        inside = blocked(inner, allow)
        if inside is not None:
            return f"{inside} (IPv4 {inner} inside the {form} address)"
    for form, tunnelling, inner in carried:
        if tunnelling and not tunnels:
            return f"{form} (tunnels to IPv4 {inner}; allow_tunnelled_ipv6 is off)"
    return None


def allowed_by(ip: IP, allow: Networks) -> bool:
    return any(ip.version == net.version and ip in net for net in allow)


def canonical_host(host: str) -> str:
    """The address `host` names literally, written one way (dotted-quad IPv4, an
    IPv4-mapped IPv6 address as its IPv4, other IPv6 compressed, no brackets), or the DNS
    name as DNS compares names (lower case, without the trailing dot of a fully
    qualified name). What the SSRF guard connects to is what a decision (and a
    threat-intel CIDR) sees: `2130706433`, `0x7f.1`, `127.1` are all `127.0.0.1`, and
    `API.Example.COM.` is `api.example.com`, so a rule naming a host meets every spelling
    of it. (A non-ASCII name never gets here: the proxy refuses it, `hygiene`.)"""
    ip = parse_host(host)
    if ip is None:
        return host.lower().rstrip(".") or host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
