"""SSH upstream logins with certificates from a real OpenBao SSH CA, accepted by a real
OpenSSH server that trusts only that CA (the proxy holds no standing key for it)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import pytest

from interlock.config import AgentConfig, CredentialsConfig, SshConfig, SshTarget, VaultSshConfig
from interlock.credentials.broker import Broker
from interlock.identity.registry import AgentRegistry
from interlock.proxies.ssh.server import SshProxy
from interlock.testing import make_pdp
from interlock.testing.openbao import OpenBao
from interlock.testing.services import Sshd
from tests.services import openbao_server, sshd_server

pytestmark = pytest.mark.integration


@dataclass
class Rig:
    proxy: SshProxy
    bao: OpenBao
    key: Path
    known_hosts: Path

    async def ssh(self, command: str) -> subprocess.CompletedProcess[bytes]:
        assert self.proxy.address is not None
        args = [
            "ssh", "-p", str(self.proxy.address[1]), "-i", str(self.key),
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-F", "/dev/null",
            "coder@127.0.0.1", command,
        ]  # fmt: skip
        return await asyncio.to_thread(subprocess.run, args, capture_output=True, timeout=60)


@pytest.fixture
def ca_bao(tmp_path: Path) -> Iterator[tuple[OpenBao, Path]]:
    with openbao_server() as bao:
        c = hvac.Client(url=bao.address, token=bao.root_token)
        c.sys.enable_secrets_engine("ssh", path="ssh")
        c.secrets.ssh.submit_ca_information(generate_signing_key=True, key_type="ed25519")
        ca = tmp_path / "vault_ca.pub"
        ca.write_text(c.secrets.ssh.read_public_key()["data"]["public_key"])
        c.secrets.ssh.create_role(
            name="interlock", key_type="ca", allow_user_certificates=True,
            allowed_users="root", default_user="root", ttl="5m", max_ttl="1h",
        )  # fmt: skip
        yield bao, ca


@pytest.fixture
def ca_sshd(ca_bao: tuple[OpenBao, Path]) -> Iterator[Sshd]:
    with sshd_server(extra=f"TrustedUserCAKeys {ca_bao[1]}\n") as sshd:
        yield sshd


@pytest.fixture
async def rig(tmp_path: Path, ca_bao: tuple[OpenBao, Path], ca_sshd: Sshd) -> AsyncIterator[Rig]:
    bao = ca_bao[0]
    key = tmp_path / "agent_key"
    keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)]
    await asyncio.to_thread(subprocess.run, keygen, check=True)
    agents = {"coder": AgentConfig(ssh_keys=[(tmp_path / "agent_key.pub").read_text()])}
    config = SshConfig(
        listen="127.0.0.1:0",
        targets={
            "web1": SshTarget(
                host="127.0.0.1", port=ca_sshd.port, user=ca_sshd.user,
                known_hosts=ca_sshd.known_hosts,
            )  # no key: only a certificate signed for this connection gets in
        },
        routes={"coder": "web1"},
    )  # fmt: skip
    creds = CredentialsConfig(
        address=bao.address,
        token=bao.root_token,
        timeout=2,
        ssh=VaultSshConfig(role="interlock", ttl="2m"),
    )
    pdp = make_pdp()
    broker = Broker(creds, tmp_path / "data")
    await broker.start(pdp.store)
    proxy = SshProxy(
        config, agents, tmp_path / "data", pdp, AgentRegistry.from_config(agents),
        credentials=broker,
    )  # fmt: skip
    await proxy.start()
    assert proxy.address is not None
    host = (await asyncio.to_thread(Path(f"{proxy.host_key_path}.pub").read_text)).split()
    known = tmp_path / "proxy_known_hosts"
    known.write_text(f"[127.0.0.1]:{proxy.address[1]} {host[0]} {host[1]}\n")
    yield Rig(proxy, bao, key, known)
    await proxy.stop()
    await broker.stop()


async def test_the_proxy_logs_in_with_a_certificate_signed_for_the_session(rig: Rig) -> None:
    done = await rig.ssh("echo hello from $(whoami)")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"hello from root\n"


async def test_with_vault_down_the_command_fails_with_the_reason(rig: Rig) -> None:
    rig.bao.stop()
    done = await rig.ssh("echo never")
    assert done.returncode == 255
    assert b"no login credentials: Vault unreachable" in done.stderr
    assert b"never" not in done.stdout
