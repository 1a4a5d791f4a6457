"""Shadow mode through the SSH proxy: real OpenSSH client and server, whose ForceCommand
log says what ran."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from interlock.config import Config, SshConfig
from interlock.core.model import Effect
from tests.proxies.ssh.conftest import LoggedSshd, Rig, make_rig

pytestmark = pytest.mark.integration
INJECTED = "LD_PRELOAD= id -u"
"""Readable, harmless here, and denied by the bundled policy (env_injection)."""


@pytest.fixture
async def logged_rig(tmp_path: Path, logged_sshd: LoggedSshd) -> AsyncIterator[Rig]:
    r = await make_rig(tmp_path, logged_sshd.sshd)
    yield r
    await r.proxy.stop()


async def test_a_denied_command_runs_in_shadow_and_is_refused_when_enforced(
    logged_rig: Rig, logged_sshd: LoggedSshd
) -> None:
    pdp = logged_rig.proxy.pdp
    pdp.modes = Config(ssh=SshConfig(mode="shadow")).modes()
    before = len(logged_sshd.commands())
    shadowed = await logged_rig.ssh(INJECTED)
    assert shadowed.returncode == 0, shadowed.stderr
    assert shadowed.stdout.strip().isdigit()
    shadow_record = logged_rig.sink.last
    assert (shadow_record.decision.effect, shadow_record.enforced) == (Effect.DENY, False)
    # What interlock cannot read is refused in shadow too.
    unreadable = await logged_rig.ssh("echo 'unterminated")
    assert unreadable.returncode == 126
    assert logged_sshd.commands()[before:] == [INJECTED]

    pdp.modes = Config(ssh=SshConfig(mode="enforce")).modes()
    enforced = await logged_rig.ssh(INJECTED)
    assert enforced.returncode == 126
    assert logged_rig.sink.last.decision.reasons == shadow_record.decision.reasons
    assert logged_rig.sink.last.enforced is True
    assert logged_sshd.commands()[before:] == [INJECTED], "nothing more ran"
