"""NFLOG over netfilter netlink: the bind request out, dropped packets in (no I/O).

Message layouts are the kernel's uapi headers: linux/netlink.h (nlmsghdr, nlattr),
linux/netfilter/nfnetlink.h (nfgenmsg) and linux/netfilter/nfnetlink_log.h.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NFULA_UID = 11
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 2
NLA_TYPE_MASK = 0x3FFF
"""Attribute type without the NLA_F_NESTED / NLA_F_NET_BYTEORDER flag bits."""
COPY_RANGE = 128
"""Payload bytes copied per packet: an IPv4 header with options (60) or an IPv6 header
(40) plus the ports; nothing of the data itself is read."""
_NLMSG = struct.Struct("=IHHII")
_NFGEN = struct.Struct("=BBH")
"""nfgenmsg: family, version, res_id (the group, big-endian)."""
_NLA = struct.Struct("=HH")


class NetlinkError(Exception):
    """The kernel refused a request; `errno` says why (EPERM: another socket reads the group)."""

    def __init__(self, errno: int) -> None:
        super().__init__(f"netlink error {errno}")
        self.errno = errno


@dataclass(frozen=True, slots=True)
class Dropped:
    """One packet the table logged before dropping it."""

    prefix: str
    uid: int | None
    protocol: str
    """tcp, udp, or the IP protocol number for anything else."""
    source_port: int | None
    destination: str
    port: int | None


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, value: bytes) -> bytes:
    size = _NLA.size + len(value)
    return _NLA.pack(size, kind) + value + b"\0" * (_align(size) - size)


def _config(group: int, seq: int, attrs: bytes, family: int = 0) -> bytes:
    body = _NFGEN.pack(family, 0, 0)[:2] + struct.pack("!H", group) + attrs
    kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    return _NLMSG.pack(_NLMSG.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def bind_request(group: int) -> bytes:
    """Bind the socket to `group` and ask for the packet headers (two messages, each
    acknowledged)."""
    bind = _config(group, 1, _attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])))
    mode = _config(
        group, 2, _attr(NFULA_CFG_MODE, struct.pack("!IBB", COPY_RANGE, NFULNL_COPY_PACKET, 0))
    )
    return bind + mode


def _attrs(data: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    at = 0
    while at + _NLA.size <= len(data):
        size, kind = _NLA.unpack_from(data, at)
        if size < _NLA.size or at + size > len(data):
            break
        found[kind & NLA_TYPE_MASK] = data[at + _NLA.size : at + size]
        at += _align(size)
    return found


def parse(data: bytes) -> list[Dropped | NetlinkError | None]:
    """Every message in one datagram: a dropped packet, a refusal, or None for an
    acknowledgement or anything else."""
    out: list[Dropped | NetlinkError | None] = []
    at = 0
    while at + _NLMSG.size <= len(data):
        size, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, at)
        if size < _NLMSG.size or at + size > len(data):
            break
        body = data[at + _NLMSG.size : at + size]
        at += _align(size)
        if kind == NLMSG_ERROR:
            code = struct.unpack_from("=i", body)[0] if len(body) >= 4 else 0
            out.append(NetlinkError(-code) if code else None)
        elif kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
            out.append(_packet(_attrs(body[_NFGEN.size :])))
        else:
            out.append(None)
    return out


def _packet(attrs: dict[int, bytes]) -> Dropped | None:
    raw_prefix = attrs.get(NFULA_PREFIX)
    payload = attrs.get(NFULA_PAYLOAD)
    if raw_prefix is None or payload is None:
        return None
    prefix = raw_prefix.split(b"\0", 1)[0].decode("ascii", "replace")
    uid = struct.unpack("!I", attrs[NFULA_UID])[0] if len(attrs.get(NFULA_UID, b"")) == 4 else None
    header = _ip(payload)
    if header is None:
        return None
    proto, destination, ports = header
    sport = dport = None
    if proto in (6, 17) and len(ports) >= 4:
        sport, dport = struct.unpack_from("!HH", ports)
    name = {6: "tcp", 17: "udp"}.get(proto, str(proto))
    return Dropped(prefix, uid, name, sport, destination, dport)


def _ip(payload: bytes) -> tuple[int, str, bytes] | None:
    """(protocol, destination, the transport header) of an IPv4 or IPv6 packet; IPv6
    extension headers are not followed (the protocol is then reported as the header's)."""
    if not payload:
        return None
    version = payload[0] >> 4
    if version == 4 and len(payload) >= 20:
        ihl = (payload[0] & 0x0F) * 4
        dst = str(ipaddress.IPv4Address(payload[16:20]))
        return payload[9], dst, payload[ihl:]
    if version == 6 and len(payload) >= 40:
        dst = str(ipaddress.IPv6Address(payload[24:40]))
        return payload[6], dst, payload[40:]
    return None
