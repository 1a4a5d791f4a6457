"""The table and ACLs computed from posture (sans-IO): what each mode lets through."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.config import parse_config
from interlock.core.context import Posture
from interlock.errors import ConfigError
from interlock.host.rules import (
    Endpoint,
    Mode,
    acl_denials,
    chain,
    disabled_tools,
    endpoints,
    mode_of,
    ruleset,
)

CONFIG = {
    "http": {"listen": "127.0.0.1:8080"},
    "postgres": {"listen": "127.0.0.1:6432"},
    "ssh": {"listen": "[::1]:2222"},
    "host": {"agents": {"coder": {"uid": 1001}}, "dns": ["127.0.0.53"]},
}
POINTS = endpoints(parse_config(CONFIG))


def accepts(rules: list[str]) -> list[str]:
    return [r for r in rules if r.endswith(" accept") and "ct direction reply" not in r]


def test_endpoints_come_from_the_proxy_sections_and_the_resolvers() -> None:
    assert [(e.kind, str(e.address), e.port, e.protocols) for e in POINTS] == [
        ("http", "127.0.0.1", 8080, ("tcp",)),
        ("postgres", "127.0.0.1", 6432, ("tcp",)),
        ("ssh", "::1", 2222, ("tcp",)),
        ("dns", "127.0.0.53", 53, ("udp", "tcp")),
    ]


def test_lockdown_reaches_the_proxies_and_resolvers_and_logs_then_drops_the_rest() -> None:
    rules = chain(1001, Mode.LOCKDOWN, POINTS, 7)
    assert rules[0] == "ct direction reply fib daddr type local accept"
    assert accepts(rules) == [
        "ip daddr 127.0.0.1 tcp dport 8080 accept",
        "ip daddr 127.0.0.1 tcp dport 6432 accept",
        "ip6 daddr ::1 tcp dport 2222 accept",
        "ip daddr 127.0.0.53 udp dport 53 accept",
        "ip daddr 127.0.0.53 tcp dport 53 accept",
    ]
    assert 'log group 7 prefix "interlock 1001 lockdown"' in rules[-2]
    assert rules[-1] == "counter drop"


def test_no_egress_keeps_only_postgres_and_ssh() -> None:
    assert accepts(chain(1001, Mode.NO_EGRESS, POINTS, 7)) == [
        "ip daddr 127.0.0.1 tcp dport 6432 accept",
        "ip6 daddr ::1 tcp dport 2222 accept",
    ]


def test_isolation_accepts_nothing_not_even_replies() -> None:
    rules = chain(1001, Mode.ISOLATED, POINTS, 7)
    assert [r for r in rules if "accept" in r] == []
    assert rules[-1] == "counter drop"


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("0.0.0.0:8080", ["meta nfproto ipv4 fib daddr type local tcp dport 8080 accept"]),
        ("[::]:8080", ["meta nfproto ipv6 fib daddr type local tcp dport 8080 accept"]),
        (
            "localhost:8080",
            ["ip daddr 127.0.0.1 tcp dport 8080 accept", "ip6 daddr ::1 tcp dport 8080 accept"],
        ),
    ],
)
def test_wildcard_and_named_listeners(listen: str, expected: list[str]) -> None:
    points = endpoints(parse_config({"http": {"listen": listen}, "host": {}}))
    assert accepts(chain(5, Mode.LOCKDOWN, points, 1)) == expected


def test_host_proxies_override_the_sections() -> None:
    config = dict(CONFIG, host={"proxies": {"http": ["10.0.0.2:3128"]}})
    http = [e for e in endpoints(parse_config(config)) if e.kind == "http"]
    assert http == [Endpoint("http", ipaddress.ip_address("10.0.0.2"), 3128)]


def test_a_listener_on_port_zero_cannot_be_allowed() -> None:
    with pytest.raises(ConfigError, match="port 0"):
        endpoints(parse_config({"http": {"listen": "127.0.0.1:0"}, "host": {}}))


@pytest.mark.parametrize(
    ("host", "error"),
    [
        ({"agents": {"a": {"uid": 0}}}, "greater than or equal to 1"),
        ({"agents": {"a": {"uid": 5}, "b": {"uid": 5}}}, "uid 5 is also a's"),
        ({"tools": {"curl": "bin/curl"}}, "absolute"),
        ({"dns": ["resolver.local"]}, "does not appear to be an IPv4 or IPv6"),
    ],
)
def test_bad_host_config_names_the_key(host: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_config({"host": host})


def test_posture_maps_to_modes_and_expires() -> None:
    assert mode_of(Posture(), 0) is Mode.LOCKDOWN
    assert mode_of(Posture(frozenset({"read_only"})), 0) is Mode.LOCKDOWN
    assert mode_of(Posture(frozenset({"no_egress"})), 0) is Mode.NO_EGRESS
    assert mode_of(Posture(frozenset({"no_egress"}), isolated=True), 0) is Mode.ISOLATED
    assert mode_of(Posture(isolated=True, until=10.0), 10.0) is Mode.LOCKDOWN


def test_only_mapped_tools_of_known_agents_lose_their_acl() -> None:
    posture = Posture(frozenset({"tool:curl", "tool:git", "read_only"}))
    assert disabled_tools(posture, 0) == {"curl", "git"}
    denials = acl_denials(
        {"coder": 1001},
        {"curl": Path("/usr/bin/curl")},
        {"coder": disabled_tools(posture, 0), "ghost": frozenset({"curl"})},
    )
    assert denials == {(1001, Path("/usr/bin/curl"))}


postures = st.builds(
    Posture,
    st.frozensets(st.sampled_from(["no_egress", "read_only", "tool:x", "no_delegation"])),
    st.booleans(),
    st.one_of(st.none(), st.floats(0, 20)),
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.integers(1, 2**32 - 2), postures, max_size=4), st.floats(0, 20))
def test_every_ruleset_touches_only_its_table_and_drops_what_it_does_not_allow(
    agents: dict[int, Posture], now: float
) -> None:
    modes = {uid: mode_of(p, now) for uid, p in agents.items()}
    script = ruleset(modes, POINTS, 29)
    assert set(re.findall(r"table (\S+ \S+)", script)) <= {"inet interlock"}
    assert script.count("meta skuid") == len(agents)
    for uid, mode in modes.items():
        rules = chain(uid, mode, POINTS, 29)
        assert rules[-1] == "counter drop"
        allowed = {e.kind for e in POINTS if any(f"dport {e.port} accept" in r for r in rules)}
        expected = {
            Mode.LOCKDOWN: {"http", "postgres", "ssh", "dns"},
            Mode.NO_EGRESS: {"postgres", "ssh"},
            Mode.ISOLATED: set(),
        }[mode]
        assert allowed == expected
        assert f"\n  chain agent_{uid} {{\n" in script


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(1, 5000), max_size=3),
    st.dictionaries(st.sampled_from(["curl", "git", "ssh"]), st.sampled_from(["/x", "/y"])),
    st.dictionaries(
        st.sampled_from(["a", "b", "c", "d"]),
        st.frozensets(st.sampled_from(["curl", "git", "ssh", "psql"])),
    ),
)
def test_acl_denials_are_exactly_the_mapped_tools_of_configured_agents(
    uids: dict[str, int], tools: dict[str, str], disabled: dict[str, frozenset[str]]
) -> None:
    paths = {name: Path(p) for name, p in tools.items()}
    denials = acl_denials(uids, paths, disabled)
    expected = {
        (uids[agent], paths[name])
        for agent, names in disabled.items()
        for name in names
        if agent in uids and name in paths
    }
    assert denials == expected
    assert all(uid in uids.values() for uid, _ in denials)
