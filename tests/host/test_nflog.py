"""The NFLOG codec: the bind request's bytes, and dropped packets read back (sans-IO)."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.host import nflog


def attr(kind: int, value: bytes) -> bytes:
    size = 4 + len(value)
    return struct.pack("=HH", size, kind) + value + b"\0" * ((-size) % 4)


def message(kind: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body + b"\0" * ((-len(body)) % 4)


def packet(prefix: bytes, payload: bytes, uid: int | None = 1001) -> bytes:
    attrs = attr(nflog.NFULA_PREFIX, prefix + b"\0") + attr(nflog.NFULA_PAYLOAD, payload)
    if uid is not None:
        attrs += attr(nflog.NFULA_UID | 0x4000, struct.pack("!I", uid))
    return message(nflog.NFNL_SUBSYS_ULOG << 8, b"\x02\x00\x00\x1d" + attrs)


def ipv4_tcp(dst: str, sport: int, dport: int) -> bytes:
    header = bytes([0x45, 0, 0, 60, 0, 0, 0, 0, 64, 6, 0, 0]) + bytes(4)
    return header + ipaddress.IPv4Address(dst).packed + struct.pack("!HH", sport, dport)


def ipv6_udp(dst: str, sport: int, dport: int) -> bytes:
    header = bytes([0x60, 0, 0, 0, 0, 8, 17, 64]) + bytes(16) + ipaddress.IPv6Address(dst).packed
    return header + struct.pack("!HH", sport, dport)


def test_bind_request_binds_the_group_and_asks_for_headers() -> None:
    data = nflog.bind_request(0x1D29)
    size, kind, flags, seq, _ = struct.unpack_from("=IHHII", data)
    assert (kind, flags, seq) == ((4 << 8) | 1, nflog.NLM_F_REQUEST | nflog.NLM_F_ACK, 1)
    assert data[16:20] == b"\x00\x00\x1d\x29"  # family 0, version 0, group big-endian
    assert data[20:28] == struct.pack("=HH", 5, nflog.NFULA_CFG_CMD) + b"\x01\x00\x00\x00"
    mode = data[size:]
    assert struct.unpack_from("!IBB", mode, 16 + 4 + 4) == (nflog.COPY_RANGE, 2, 0)


def test_a_dropped_ipv4_tcp_connection() -> None:
    [d] = nflog.parse(packet(b"interlock 1001 lockdown", ipv4_tcp("10.1.2.3", 40000, 5432)))
    assert d == nflog.Dropped("interlock 1001 lockdown", 1001, "tcp", 40000, "10.1.2.3", 5432)


def test_a_dropped_ipv6_udp_datagram_without_uid() -> None:
    [d] = nflog.parse(packet(b"interlock 7 isolated", ipv6_udp("2001:db8::1", 5353, 53), None))
    assert d == nflog.Dropped("interlock 7 isolated", None, "udp", 5353, "2001:db8::1", 53)


def test_acknowledgements_and_refusals() -> None:
    ok = message(nflog.NLMSG_ERROR, struct.pack("=i", 0) + bytes(16))
    busy = message(nflog.NLMSG_ERROR, struct.pack("=i", -16) + bytes(16))
    items = nflog.parse(ok + busy)
    assert items[0] is None
    assert isinstance(items[1], nflog.NetlinkError)
    assert items[1].errno == 16


def test_a_truncated_message_is_not_read_past_its_end() -> None:
    whole = packet(b"interlock 1 lockdown", ipv4_tcp("1.1.1.1", 1, 2))
    assert nflog.parse(whole[:-8]) == []


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    nflog.parse(data)


@settings(max_examples=100, deadline=None)
@given(
    st.ip_addresses(),
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.integers(0, 2**32 - 1),
)
def test_every_address_and_port_reads_back(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, sport: int, dport: int, uid: int
) -> None:
    payload = (
        ipv4_tcp(str(address), sport, dport)
        if address.version == 4
        else ipv6_udp(str(address), sport, dport)
    )
    [d] = nflog.parse(packet(f"interlock {uid} lockdown".encode(), payload, uid))
    assert isinstance(d, nflog.Dropped)
    assert (d.destination, d.source_port, d.port, d.uid) == (str(address), sport, dport, uid)
