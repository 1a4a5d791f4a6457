"""Token authentication against the agent registry."""

from __future__ import annotations

import hashlib

from interlock.config import AgentConfig
from interlock.identity.registry import AgentRegistry

TOKEN = "reporter-secret-token-1"


def registry() -> AgentRegistry:
    return AgentRegistry.from_config(
        {
            "reporter": AgentConfig(token=TOKEN, roles=["analyst"], owner="alice@example.com"),
            "hashed": AgentConfig(
                token_sha256=hashlib.sha256(b"hashed-secret-token-2").hexdigest()
            ),
            "keyonly": AgentConfig(ssh_keys=["ssh-ed25519 AAAA"]),
        }
    )


def test_right_token_authenticates_with_roles_and_owner() -> None:
    agent = registry().authenticate("reporter", TOKEN)
    assert agent is not None
    assert (agent.id, agent.roles, agent.owner, agent.authn) == (
        "reporter",
        ("analyst",),
        "alice@example.com",
        "token",
    )


def test_token_given_only_as_a_hash_works() -> None:
    assert registry().authenticate("hashed", "hashed-secret-token-2") is not None


def test_wrong_token_unknown_agent_and_tokenless_agent_fail() -> None:
    reg = registry()
    assert reg.authenticate("reporter", TOKEN + "x") is None
    assert reg.authenticate("reporter", "") is None
    assert reg.authenticate("nobody", TOKEN) is None
    assert reg.authenticate("keyonly", "") is None
    assert reg.authenticate("keyonly", "anything-at-all-here") is None


def test_hostile_tokens_do_not_raise() -> None:
    reg = registry()
    for token in ["\x00" * 100, "\ud800", "é" * 10_000]:
        assert reg.authenticate("reporter", token) is None
