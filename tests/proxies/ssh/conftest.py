"""A real sshd as the target, the SSH proxy in front of it, and OpenSSH's client."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from interlock.config import AgentConfig, SshConfig, SshTarget
from interlock.core.bundle import bundled_policy_dir
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

    async def client(self) -> asyncssh.SSHClientConnection:
        """asyncssh's client logged in to the proxy as the agent (for SFTP calls
        OpenSSH's sftp does not make)."""
        return await asyncssh.connect(
            "127.0.0.1",
            self.port,
            username="coder",
            client_keys=[str(self.agent_key)],
            known_hosts=str(self.known_hosts),
            agent_path=None,
            config=[],
        )

    def scp_args(self, *extra: str) -> list[str]:
        return ["scp", "-P", str(self.port), *self.options(), *extra]


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    with sshd_server() as s:
        yield s


@dataclass
class LoggedSshd:
    """An sshd whose ForceCommand writes every command it is asked to run to `log`
    (NUL-terminated) before running it with bash: the target's own record of what ran."""

    sshd: Sshd
    log: Path

    def commands(self) -> list[str]:
        """The commands run, without the SFTP servers started for the proxy's path
        lookups (`proxies/ssh/resolve.py`): a lookup runs no command."""
        data = self.log.read_bytes() if self.log.exists() else b""
        ran = [c.decode() for c in data.split(b"\0")[:-1]]
        return [c for c in ran if not c.endswith("/sftp-server")]

    def sftp_servers(self) -> int:
        data = self.log.read_bytes() if self.log.exists() else b""
        return sum(c.endswith(b"/sftp-server") for c in data.split(b"\0")[:-1])


@pytest.fixture(scope="session")
def logged_sshd() -> Iterator[LoggedSshd]:
    root = Path(tempfile.mkdtemp(prefix="interlock-forcecommand-"))
    log, wrapper = root / "commands.log", root / "log-and-run"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\0' \"$SSH_ORIGINAL_COMMAND\" >> {log}\n"
        'exec /bin/bash -c "$SSH_ORIGINAL_COMMAND"\n'
    )
    wrapper.chmod(0o755)
    with sshd_server(f"ForceCommand {wrapper}\n") as s:
        yield LoggedSshd(s, log)
    shutil.rmtree(root, ignore_errors=True)


def rooted_bundle(directory: Path, roots: list[str]) -> Path:
    """The bundled policy with `path_roots.ssh` set: agents' paths confined to `roots`."""
    bundle = directory / "bundle"
    shutil.copytree(
        bundled_policy_dir(), bundle, ignore=shutil.ignore_patterns("*_test.rego", "__*")
    )
    data = json.loads((bundle / "data.json").read_text())
    data["interlock"]["policy"]["path_roots"] = {"ssh": roots}
    (bundle / "data.json").write_text(json.dumps(data))
    return bundle


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
    resolve_links: bool = True,
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
                resolve_links=resolve_links,
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
