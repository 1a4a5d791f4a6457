"""Agents log in with a registered key or a certificate from a trusted user CA."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from interlock.testing.services import Sshd
from tests.proxies.ssh.conftest import make_rig

pytestmark = pytest.mark.integration


def keygen(*args: str) -> None:
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True)


async def test_a_certificate_from_a_trusted_ca_logs_in(tmp_path: Path, sshd: Sshd) -> None:
    ca = tmp_path / "ca"
    await asyncio.to_thread(keygen, "-t", "ed25519", "-N", "", "-f", str(ca))
    rig = await make_rig(tmp_path, sshd, user_ca_keys=[(tmp_path / "ca.pub").read_text()])
    try:
        certified = tmp_path / "certified"
        await asyncio.to_thread(keygen, "-t", "ed25519", "-N", "", "-f", str(certified))
        await asyncio.to_thread(
            keygen, "-s", str(ca), "-I", "coder-cert", "-n", "coder", "-V", "+5m",
            str(certified) + ".pub",
        )  # fmt: skip
        rig.agent_key = certified
        r = await rig.ssh("echo via-cert")
        assert r.stdout == b"via-cert\n", r.stderr
        assert rig.sink.last.action.agent.authn == "ssh_cert"
        # A certificate for another principal does not log in as coder.
        await asyncio.to_thread(
            keygen, "-s", str(ca), "-I", "other", "-n", "someone-else", "-V", "+5m",
            str(certified) + ".pub",
        )  # fmt: skip
        r = await rig.ssh("echo no")
        assert r.returncode == 255
    finally:
        await rig.proxy.stop()


async def test_the_target_host_key_is_checked_not_learned(tmp_path: Path, sshd: Sshd) -> None:
    wrong = tmp_path / "wrong_known_hosts"
    other = tmp_path / "other"
    await asyncio.to_thread(keygen, "-t", "ed25519", "-N", "", "-f", str(other))
    pub = (tmp_path / "other.pub").read_text().split()
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")
    rig = await make_rig(tmp_path, sshd)
    try:
        target = rig.proxy.config.targets["web1"]
        rig.proxy.config.targets["web1"] = target.model_copy(update={"known_hosts": wrong})
        r = await rig.ssh("echo should-not-run")
        assert r.returncode == 255
        assert b"cannot reach target" in r.stderr
        assert wrong.read_text().count("\n") == 1  # nothing was added
    finally:
        await rig.proxy.stop()


async def test_reloaded_agents_close_a_withdrawn_keys_connection_and_admit_a_new_key(
    tmp_path: Path, sshd: Sshd
) -> None:
    """SIGHUP's `use_agents`: the agent's key is replaced; the connection that logged in
    with the old key is closed within a second, the old key is refused, the new one works."""
    from interlock.config import AgentConfig

    rig = await make_rig(tmp_path, sshd)
    try:
        proc = await rig.started("sleep 30; echo finished")
        fresh = tmp_path / "fresh"
        await asyncio.to_thread(keygen, "-t", "ed25519", "-N", "", "-f", str(fresh))
        agents = {"coder": AgentConfig(ssh_keys=[(tmp_path / "fresh.pub").read_text()])}
        rig.proxy.use_agents(agents)
        out, _ = await asyncio.wait_for(proc.communicate(), 5)
        assert b"finished" not in out
        assert proc.returncode == 255
        assert (await rig.ssh("echo old")).returncode == 255, "the withdrawn key is refused"
        rig.agent_key = fresh
        assert (await rig.ssh("echo new")).stdout == b"new\n"
        # Reloading the same agents again leaves the new key's connections alone.
        proc = await rig.started("sleep 1; echo finished")
        rig.proxy.use_agents(agents)
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
        assert out == b"finished\n"
        assert proc.returncode == 0
    finally:
        await rig.proxy.stop()
