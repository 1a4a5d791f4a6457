"""Commands through the proxy with the real OpenSSH client and server."""

from __future__ import annotations

import pytest

from interlock.core.model import Effect, Operation
from tests.proxies.ssh.conftest import Rig

pytestmark = pytest.mark.integration


async def test_an_allowed_command_runs_with_its_output_and_status(rig: Rig) -> None:
    r = await rig.ssh("echo hello; echo oops >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, b"hello\n", b"oops\n")
    action = rig.sink.last.action
    assert (action.protocol, action.operation, action.target) == ("ssh", Operation.EXEC, "web1")
    assert rig.sink.last.decision.effect is Effect.ALLOW


async def test_stdin_is_relayed(rig: Rig) -> None:
    r = await rig.ssh("wc -c", stdin=b"x" * 100_000)
    assert r.stdout.strip() == b"100000"


async def test_a_denied_command_gets_126_and_the_decision_on_stderr(rig: Rig) -> None:
    r = await rig.ssh("echo cm0gLXJmIC8= | base64 -d | sh")
    assert r.returncode == 126
    decision = rig.sink.last.decision
    assert decision.effect is Effect.DENY
    assert decision.decision_id.encode() in r.stderr
    assert b"obfuscation" in r.stderr


@pytest.mark.parametrize(
    "command",
    [
        "echo aWQ= | base64 -d | sh",
        "find / -maxdepth 0 -exec sh -c id \\;",
        "LD_PRELOAD=/tmp/x.so ls",
        "vim -c ':!sh'",
        "$(echo rm) -rf /tmp/nothing",
        "x=$((1+2))",
    ],
)
async def test_evasions_are_refused_before_reaching_the_target(rig: Rig, command: str) -> None:
    r = await rig.ssh(command)
    assert r.returncode == 126
    assert b"interlock: denied" in r.stderr
    assert r.stdout == b""


async def test_only_allowlisted_environment_reaches_the_target(rig: Rig) -> None:
    r = await rig.ssh(
        "echo LANG=$LANG FOO=$FOO",
        "-o",
        "SetEnv=LANG=C.UTF-8 FOO=bar",
    )
    assert r.stdout == b"LANG=C.UTF-8 FOO=\n"


async def test_read_only_posture_allows_reads_and_stops_writes(rig: Rig) -> None:
    await rig.proxy.pdp.store.restrict("coder", ["read_only"])
    assert (await rig.ssh("cat /etc/hostname")).returncode == 0
    r = await rig.ssh("touch /tmp/interlock-should-not-exist")
    assert r.returncode == 126
    assert b"read_only" in r.stderr


async def test_a_huge_command_is_refused(rig: Rig) -> None:
    r = await rig.ssh("echo " + "a" * 20_000)
    assert r.returncode == 126
    assert b"longer than" in r.stderr or b"unparsable" in r.stderr
