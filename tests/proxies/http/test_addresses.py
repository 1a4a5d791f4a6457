"""The SSRF table: every spelling of a forbidden address is recognised and refused."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from interlock.proxies.http.addresses import blocked, parse_host, parse_ipv4


@pytest.mark.parametrize(
    ("host", "ip"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0177.0.0.01", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("169.254.169.254", "169.254.169.254"),
        ("0xA9FEA9FE", "169.254.169.254"),
        ("[::1]", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("[fe80::1%eth0]", "fe80::1"),
        ("example.com", None),
        ("1.2.3.4.5", None),
        ("256.1.1.1", None),
        ("08.1.1.1", None),
    ],
)
def test_every_spelling_is_read_as_the_address_it_is(host: str, ip: str | None) -> None:
    parsed = parse_host(host)
    assert parsed == (ipaddress.ip_address(ip) if ip is not None else None)


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "127.0.0.1",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "127.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 (a target under test, not a bind address)
        "224.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:169.254.169.254]",
        "[64:ff9b::a9fe:a9fe]",
        "[64:ff9b::127.0.0.1]",
        "[2002:7f00:1::]",
        "[fd00::1]",
        "[fe80::1]",
        "[ff02::1]",
        "[::]",
        "[::127.0.0.1]",
    ],
)
def test_forbidden_addresses_are_blocked(host: str) -> None:
    ip = parse_host(host)
    assert ip is not None
    assert blocked(ip) is not None, host


@pytest.mark.parametrize(
    "host", ["93.184.216.34", "8.8.8.8", "[2606:4700::1111]", "[64:ff9b::808:808]"]
)
def test_public_addresses_pass(host: str) -> None:
    ip = parse_host(host)
    assert ip is not None
    assert blocked(ip) is None


@given(st.integers(0, 2**32 - 1))
def test_decimal_and_hex_spellings_agree_with_dotted(n: int) -> None:
    dotted = ipaddress.IPv4Address(n)
    assert parse_ipv4(str(n)) == dotted
    assert parse_ipv4(hex(n)) == dotted
    assert blocked(dotted) == blocked(parse_ipv4(oct(n).replace("0o", "0")) or dotted)
