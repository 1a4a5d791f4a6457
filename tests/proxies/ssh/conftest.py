"""A real sshd as the target, the SSH proxy in front of it, and OpenSSH's client."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from interlock.config import AgentConfig, SshConfig, SshTarget
from interlock.identity.registry import AgentRegistry
from interlock.proxies.ssh.server import SshProxy
from interlock.testing import CaptureSink, make_pdp
from interlock.testing.services import Sshd
from tests.services import sshd_server


@dataclass
class Rig:
    proxy: SshProxy
    sink: CaptureSink
    sshd: Sshd
    agent_key: Path
    known_hosts: Path
    """Names the proxy's host key, for the agent's client."""

    @property
    def port(self) -> int:
        assert self.proxy.address is not None
        return self.proxy.address[1]

    def options(self) -> list[str]:
        """What every OpenSSH client here is told: this key only, the proxy's pinned host
        key, no prompts, no user config."""
        return [
            "-i",
            str(self.agent_key),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
            "-F",
            "/dev/null",
        ]

    def ssh_args(self, user: str = "coder", *extra: str) -> list[str]:
        return ["ssh", "-p", str(self.port), *self.options(), *extra, f"{user}@127.0.0.1"]

    async def ssh(
        self, command: str, *extra: str, user: str = "coder", stdin: bytes = b""
    ) -> subprocess.CompletedProcess[bytes]:
        return await asyncio.to_thread(
            subprocess.run,
            [*self.ssh_args(user, *extra), command],
            input=stdin,
            capture_output=True,
            timeout=60,
        )

    async def started(self, command: str, user: str = "coder") -> asyncio.subprocess.Process:
        """OpenSSH running `echo started; <command>`, once it printed `started` (the
        session is open through the proxy)."""
        proc = await asyncio.create_subprocess_exec(
            *self.ssh_args(user),
            f"echo started; {command}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 20) == b"started\n"
        return proc

    def scp_args(self, *extra: str) -> list[str]:
        return ["scp", "-P", str(self.port), *self.options(), *extra]


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    with sshd_server() as s:
        yield s


@pytest.fixture
async def rig(tmp_path: Path, sshd: Sshd) -> AsyncIterator[Rig]:
    r = await make_rig(tmp_path, sshd)
    yield r
    await r.proxy.stop()


async def make_rig(
    tmp_path: Path,
    sshd: Sshd,
    user_ca_keys: list[str] | None = None,
    *,
    bundle: Path | None = None,
    approval_timeout: float = 30.0,
) -> Rig:
    agent_key = tmp_path / "agent_key"
    await asyncio.to_thread(
        subprocess.run,
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(agent_key)],
        check=True,
        capture_output=True,
    )
    config = SshConfig(
        listen="127.0.0.1:0",
        targets={
            "web1": SshTarget(
                host="127.0.0.1",
                port=sshd.port,
                user=sshd.user,
                key=sshd.client_key,
                known_hosts=sshd.known_hosts,
            )
        },
        routes={"coder": "web1"},
        login_timeout=5,
        user_ca_keys=user_ca_keys or [],
        approval_timeout=approval_timeout,
    )
    agents = {
        "coder": AgentConfig(
            ssh_keys=[(tmp_path / "agent_key.pub").read_text()], owner="alice@example.com"
        )
    }
    sink = CaptureSink()
    proxy = SshProxy(
        config,
        agents,
        tmp_path / "data",
        make_pdp(bundle, sink=sink),
        AgentRegistry.from_config(agents),
    )
    await proxy.start()
    assert proxy.address is not None
    host_pub = (await asyncio.to_thread(Path(f"{proxy.host_key_path}.pub").read_text)).split()
    known = tmp_path / "proxy_known_hosts"
    known.write_text(f"[127.0.0.1]:{proxy.address[1]} {host_pub[0]} {host_pub[1]}\n")
    return Rig(proxy, sink, sshd, agent_key, known)
