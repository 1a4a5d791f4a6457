"""The SSRF table: every spelling of a forbidden address is recognised and refused."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from interlock.proxies.http.addresses import blocked, canonical_host, parse_host, parse_ipv4
from interlock.proxies.http.ssrf import own_listener


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
        "[::ffff:0:127.0.0.1]",
        "[::ffff:0:a9fe:a9fe]",
        "[64:ff9b:1::7f00:1]",
        "[64:ff9b:1:7f00:0:100::]",
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
        "[2001:0:a00:1:8000:63bf:f7f7:f7f7]",
        "[2606:4700::5efe:a00:1]",
        "[2606:4700::200:5efe:7f00:1]",
        "[2001:db8::1]",
        "[2002:808:808::1]",
        "[64:ff9b::808:808]",
        "[::1:0:0:1]",
        "[::102:304:0:0]",
    ],
)
def test_forbidden_addresses_are_blocked(host: str) -> None:
    ip = parse_host(host)
    assert ip is not None
    assert blocked(ip) is not None, host


@pytest.mark.parametrize(
    "host", ["93.184.216.34", "8.8.8.8", "[2606:4700::1111]", "[::ffff:8.8.8.8]"]
)
def test_public_addresses_pass(host: str) -> None:
    ip = parse_host(host)
    assert ip is not None
    assert blocked(ip) is None


@pytest.mark.parametrize(
    "host",
    ["[64:ff9b::808:808]", "[2002:808:808::1]", "[2001:0:4136:e378:8000:63bf:f7f7:f7f7]"],
)
def test_tunnelling_prefixes_are_refused_unless_allowed(host: str) -> None:
    ip = parse_host(host)
    assert ip is not None
    assert "allow_tunnelled_ipv6 is off" in (blocked(ip) or "")
    assert blocked(ip, tunnels=True) is None


def test_an_allowed_network_covers_its_addresses_inside_ipv6() -> None:
    allow = [ipaddress.ip_network("10.20.0.0/16")]
    assert blocked(ipaddress.ip_address("::ffff:10.20.0.5"), allow) is None
    assert blocked(ipaddress.ip_address("::ffff:10.21.0.5"), allow) is not None


PRIVATE_V4 = st.sampled_from(
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
    ]
).flatmap(
    lambda n: st.integers(0, ipaddress.ip_network(n).num_addresses - 1).map(
        lambda i: ipaddress.ip_network(n)[i]
    )
)
"""Private, loopback, metadata (link-local) and other non-public IPv4 addresses."""


def _v6(value: int) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(value)


def _nat64_local(v4: int, length: int, fill: int) -> ipaddress.IPv6Address:
    """`v4` at its RFC 6052 position for a `length`-bit prefix inside 64:ff9b:1::/48."""
    at = length if length < 96 else 88  # where it starts once the u octet is left out
    prefix = f"{int(ipaddress.IPv6Address('64:ff9b:1::')) >> 80:048b}"
    bits = (prefix + f"{fill:0128b}"[48:at] + f"{v4:032b}" + "0" * 120)[:120]
    return _v6(int(bits[:64] + "00000000" + bits[64:], 2))


EMBEDDINGS = [
    lambda v4, fill: _v6(0xFFFF << 32 | v4),
    lambda v4, fill: _v6(0xFFFF << 48 | v4),
    lambda v4, fill: _v6(v4) if v4 > 1 else _v6(0xFFFF << 32 | v4),
    lambda v4, fill: _v6(int(ipaddress.IPv6Address("64:ff9b::")) | v4),
    lambda v4, fill: _nat64_local(v4, 48, fill),
    lambda v4, fill: _nat64_local(v4, 56, fill),
    lambda v4, fill: _nat64_local(v4, 64, fill),
    lambda v4, fill: _nat64_local(v4, 96, fill),
    lambda v4, fill: _v6(0x2002 << 112 | v4 << 80 | fill & (2**80 - 1)),
    # Teredo: the client address is stored XOR-ed; the server address in clear.
    lambda v4, fill: _v6(0x20010000 << 96 | (fill & (2**64 - 1)) << 32 | v4 ^ 0xFFFFFFFF),
    lambda v4, fill: _v6(0x20010000 << 96 | v4 << 64 | fill & (2**64 - 1)),
    lambda v4, fill: _v6(0x2606_4700 << 96 | 0x5EFE << 32 | v4),
    lambda v4, fill: _v6(0x2606_4700 << 96 | 0x0200_5EFE << 32 | v4),
]
"""Every IPv6 form that carries an IPv4 address, filled with arbitrary other bits."""


@given(
    PRIVATE_V4,
    st.sampled_from(range(len(EMBEDDINGS))),
    st.integers(0, 2**128 - 1),
    st.booleans(),
)
def test_any_ipv6_embedding_of_a_private_ipv4_is_refused(
    v4: ipaddress.IPv4Address, form: int, fill: int, tunnels: bool
) -> None:
    ip = EMBEDDINGS[form](int(v4), fill)
    assert blocked(ip, tunnels=tunnels) is not None, (str(ip), str(v4))
    for spelling in (f"[{ip}]", f"[{ip.exploded}]", f"[{ip.exploded.upper()}%eth0]"):
        parsed = parse_host(spelling)
        assert parsed == ip
        assert blocked(parsed, tunnels=tunnels) is not None


@given(st.integers(0, 2**32 - 1), st.sampled_from([3, 8, 9]), st.integers(0, 2**128 - 1))
def test_a_tunnelling_prefix_is_refused_by_default_whatever_it_carries(
    v4: int, form: int, fill: int
) -> None:
    assert blocked(EMBEDDINGS[form](v4, fill)) is not None


@given(st.integers(0, 2**32 - 1))
def test_decimal_and_hex_spellings_agree_with_dotted(n: int) -> None:
    dotted = ipaddress.IPv4Address(n)
    assert parse_ipv4(str(n)) == dotted
    assert parse_ipv4(hex(n)) == dotted
    assert blocked(dotted) == blocked(parse_ipv4(oct(n).replace("0o", "0")) or dotted)


@pytest.mark.parametrize(
    ("host", "target"),
    [
        ("api.example.com", "api.example.com"),
        ("API.Example.COM", "api.example.com"),
        ("api.example.com.", "api.example.com"),
        ("LOCALHOST.", "localhost"),
        ("xn--caf-dma.example", "xn--caf-dma.example"),
        ("[::FFFF:7F00:1]", "127.0.0.1"),
    ],
)
def test_the_decision_target_is_one_spelling_of_a_host(host: str, target: str) -> None:
    # A rule (or a trial's deny_egress_hosts) naming a host meets every spelling DNS
    # treats as that host: case and the trailing dot of a fully qualified name.
    assert canonical_host(host) == target


@given(st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True))
def test_every_case_and_trailing_dot_of_a_name_is_one_target(name: str) -> None:
    spellings = {name, name.upper(), name.title(), name + ".", name.upper() + "."}
    assert {canonical_host(s) for s in spellings} == {name}


ANY = "0.0.0.0"  # noqa: S104 (an address a listener is bound to, not a bind)


@pytest.mark.parametrize(
    ("listener", "destination", "own"),
    [
        (("127.0.0.1", 9180), "127.0.0.1", True),
        (("127.0.0.1", 9180), "127.0.0.2", True),
        (("127.0.0.1", 9180), ANY, True),
        (("127.0.0.1", 9180), "::ffff:127.0.0.1", True),
        (("127.0.0.1", 9180), "::1", True),
        ((ANY, 9180), "10.20.0.5", True),
        (("::", 9180), "192.168.1.9", True),
        (("10.20.0.5", 9180), "10.20.0.5", True),
        (("10.20.0.5", 9180), "10.20.0.6", False),
        ((ANY, 9180), "93.184.216.34", False),
        (("127.0.0.1", 9180), "10.20.0.5", False),
    ],
)
def test_interlocks_own_listeners_are_recognised(
    listener: tuple[str, int], destination: str, own: bool
) -> None:
    ip = ipaddress.ip_address(destination)
    assert (own_listener(ip, 9180, [listener]) is not None) is own
    assert own_listener(ip, 9181, [listener]) is None
