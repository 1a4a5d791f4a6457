"""What the proxy does to stay cheap per command: AES ciphers on both legs, and a
command classified once and reused, without changing what a policy sees."""

from __future__ import annotations

import asyncio
from types import MappingProxyType

import pytest
from pydantic import ValidationError

from interlock.classify.shellpath import Where
from interlock.config import SshConfig
from interlock.core.model import Agent
from interlock.proxies.ssh.session import CACHED_COMMAND_CHARS, _classified, command_action
from tests.proxies.ssh.conftest import Rig

AGENT = Agent("coder")


@pytest.mark.integration
async def test_both_legs_use_aes_and_a_chacha_only_client_is_refused(rig: Rig) -> None:
    only_chacha = await rig.ssh("true", "-o", "Ciphers=chacha20-poly1305@openssh.com")
    assert only_chacha.returncode == 255
    assert b"no matching cipher" in only_chacha.stderr
    # The upstream leg is read while the session is open: it goes when the client does.
    running = asyncio.create_task(rig.ssh("echo aes; sleep 2", "-o", "Ciphers=aes128-ctr"))
    for _ in range(200):
        if rig.proxy._by_agent.get("coder") or running.done():
            break
        await asyncio.sleep(0.02)
    (conn,) = rig.proxy._by_agent["coder"]
    upstream = await conn.upstream()
    assert upstream.get_extra_info("send_cipher") == "aes128-gcm@openssh.com"
    r = await running
    assert r.stdout == b"aes\n", r.stderr


def test_ciphers_are_checked_when_the_config_is_read() -> None:
    with pytest.raises(ValidationError, match="unknown or no ciphers"):
        SshConfig(ciphers=["aes128-gcm@openssh.com", "rot13"])
    with pytest.raises(ValidationError, match="unknown or no ciphers"):
        SshConfig(ciphers=[])
    chacha = SshConfig(ciphers=["chacha20-poly1305@openssh.com"])
    assert chacha.ciphers == ["chacha20-poly1305@openssh.com"]


def test_a_repeated_command_is_classified_once_and_the_result_cannot_change() -> None:
    _classified.cache_clear()
    first, _ = command_action(AGENT, "web1", "cat notes.txt | grep x", 16384)
    again, _ = command_action(AGENT, "web1", "cat notes.txt | grep x", 16384)
    assert _classified.cache_info().hits == 1
    assert again.details is first.details
    assert isinstance(first.details, MappingProxyType)
    with pytest.raises(TypeError):
        # The write mypy rightly refuses (a read-only Mapping) is what is being tested.
        first.details["command"] = "rm -rf /"  # type: ignore[index]
    # Where it runs is part of the key: the same text resolves to other paths elsewhere.
    home, _ = command_action(AGENT, "web1", "cat notes.txt", 16384, Where("/home/a", "a"))
    other, _ = command_action(AGENT, "web1", "cat notes.txt", 16384, Where("/home/b", "b"))
    assert home.details["reads"] != other.details["reads"]


def test_a_long_command_is_classified_every_time_and_still_refused_when_too_long() -> None:
    _classified.cache_clear()
    long = "echo " + "x" * CACHED_COMMAND_CHARS
    action, _ = command_action(AGENT, "web1", long, 64)
    assert _classified.cache_info().currsize == 0
    assert "truncated" in action.details["flags"]
