"""A dropped packet as an action, and the decision recorded for it (sans-IO)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.core.model import Decision, Effect, Risk, Tier
from interlock.host.nflog import Dropped
from interlock.host.reports import ISOLATED_REASON, REASON, action_of, enforced

AGENTS = {1001: "coder"}


def test_a_dropped_connection_is_the_agents_connect_action() -> None:
    action = action_of(
        Dropped("interlock 1001 lockdown", 1001, "tcp", 4000, "10.0.0.5", 5432), AGENTS
    )
    assert action is not None
    assert (action.agent.id, action.agent.authn) == ("coder", "uid")
    assert (action.protocol, action.operation.value) == ("host", "connect")
    assert action.target == "tcp://10.0.0.5:5432"
    assert dict(action.details) == {
        "uid": 1001, "transport": "tcp", "destination": "10.0.0.5", "port": 5432,
        "mode": "lockdown", "enforced_by": "nftables",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("dropped", "target"),
    [
        (
            Dropped("interlock 1001 isolated", None, "udp", 53, "2001:db8::1", 53),
            "udp://[2001:db8::1]:53",
        ),
        (Dropped("interlock 1001 lockdown", None, "1", None, "10.0.0.1", None), "1://10.0.0.1"),
    ],
)
def test_targets_name_the_destination(dropped: Dropped, target: str) -> None:
    action = action_of(dropped, AGENTS)
    assert action is not None
    assert action.target == target


@pytest.mark.parametrize(
    "prefix",
    ["interlock 1002 lockdown", "other 1001 lockdown", "interlock x lockdown", "interlock"],
)
def test_a_prefix_not_ours_or_an_unknown_uid_is_no_action(prefix: str) -> None:
    assert action_of(Dropped(prefix, 1001, "tcp", 1, "10.0.0.1", 2), AGENTS) is None


def decision(effect: Effect, *reasons: str) -> Decision:
    return Decision("id", effect, Risk(10, Tier.LOW), "v", reasons)


def test_an_allow_is_recorded_as_the_deny_that_happened() -> None:
    d = enforced(decision(Effect.ALLOW, "fine"), "lockdown")
    assert (d.effect, d.reasons) == (Effect.DENY, (REASON,))
    assert enforced(decision(Effect.APPROVE), "isolated").reasons == (ISOLATED_REASON,)


@pytest.mark.parametrize("effect", [Effect.DENY, Effect.RESTRICT, Effect.ISOLATE])
def test_a_stricter_answer_stands(effect: Effect) -> None:
    d = enforced(decision(effect, "policy says"), "lockdown")
    assert (d.effect, d.reasons) == (effect, (REASON, "policy says"))


@settings(max_examples=100, deadline=None)
@given(
    st.text(max_size=40),
    st.sampled_from(["tcp", "udp", "1", "58"]),
    st.one_of(st.none(), st.integers(0, 65535)),
    st.ip_addresses().map(str),
)
def test_every_action_is_a_configured_agents_and_names_its_destination(
    prefix: str, transport: str, port: int | None, destination: str
) -> None:
    for text in (prefix, f"interlock 1001 {prefix}"):
        action = action_of(Dropped(text, None, transport, None, destination, port), AGENTS)
        if action is not None:
            assert action.agent.id == "coder"
            assert destination in action.target
            assert action.details["port"] == port
