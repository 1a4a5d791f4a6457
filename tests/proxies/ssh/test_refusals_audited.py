"""What the SSH proxy refuses or ends is a decision in the log: an isolation's ending of
an open session (the real OpenSSH client is cut off), a failed login, a subsystem it
does not serve."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import asyncssh
import pytest

from interlock.core.record import DecisionRecord
from interlock.core.refusal import refusals_counted
from interlock.proxies.ssh.server import closed_by_proxy
from tests.proxies.ssh.conftest import Rig

pytestmark = pytest.mark.integration

CAUSE = "01a24dc8-0000-7000-8000-000000000002"


async def guard_records(rig: Rig) -> list[DecisionRecord]:
    await rig.proxy.refusals.drain()
    await rig.proxy.flood.refusals.drain()
    return [r for r in rig.sink.records if r.action.details.get("guard")]


async def test_isolation_ending_a_session_is_recorded_as_its_consequence(rig: Rig) -> None:
    proc = await rig.started("sleep 30")
    await rig.proxy.pdp.store.restrict("coder", [], isolate=True, reason=f"decision {CAUSE}")
    await asyncio.wait_for(proc.wait(), 20)
    assert proc.returncode != 0
    [ended] = await guard_records(rig)
    assert ended.decision.reasons == ("session ended: agent isolated",)
    assert (ended.action.agent.id, ended.action.parents) == ("coder", (CAUSE,))
    assert ended.engine is None


async def test_a_failed_login_is_recorded_as_anonymous(rig: Rig, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)]
    await asyncio.to_thread(subprocess.run, keygen, check=True)
    args = [a if a != str(rig.agent_key) else str(stranger) for a in rig.ssh_args()]
    done = await asyncio.to_thread(subprocess.run, [*args, "true"], capture_output=True, timeout=60)
    assert done.returncode == 255
    for _ in range(100):  # the proxy sees the client go only after it has
        if records := await guard_records(rig):
            break
        await asyncio.sleep(0.02)
    [failed] = records
    assert failed.action.agent.id == "anonymous"
    assert failed.action.details["user"] == "coder"
    assert failed.decision.reasons == ("authentication failed for 'coder'",)


async def test_failed_logins_are_recorded_or_counted(rig: Rig) -> None:
    """Anyone can fail a login: one record per address per interval, the rest counted in
    the next record of that address, none lost."""
    rig.proxy.flood.budget.interval = 60.0  # every failed login after the first is counted
    for user in ("mallory", "coder+nowhere", "+web1", "eve"):
        assert (await rig.ssh("true", user=user)).returncode == 255
    for _ in range(200):  # the proxy sees a client go shortly after the client has
        if rig.proxy.flood.budget.counted("127.0.0.1") == 3:
            break
        await asyncio.sleep(0.05)
    await rig.proxy.flood.stop()  # writes what it still counted
    written, summary = [r for r in rig.sink.records if r.action.details.get("guard")]
    assert written.action.details["user"] in ("mallory", "coder+nowhere", "+web1", "eve")
    assert (written.action.details["client"], written.action.details["suppressed_since_last"]) == (
        "127.0.0.1",
        0,
    )
    assert (summary.action.details["summary"], summary.action.details["client"]) == (
        True,
        "127.0.0.1",
    )
    assert summary.action.details["suppressed_since_last"] == 3
    assert refusals_counted(rig.sink.records) == 4


async def test_a_subsystem_not_served_is_a_recorded_denial(rig: Rig) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [*rig.ssh_args("coder", "-s"), "netconf"],
        capture_output=True,
        timeout=60,
    )
    [refused] = await guard_records(rig)
    assert refused.decision.decision_id in done.stderr.decode()
    assert "netconf" in refused.decision.reasons[0]


@pytest.mark.parametrize(
    ("exc", "refused"),
    [
        (None, False),  # the client disconnected
        (asyncssh.ConnectionLost("Connection lost"), False),  # it closed its socket
        (ConnectionResetError(104, "Connection reset by peer"), False),
        (asyncssh.ProtocolError("Max packet size exceeded"), True),
        (asyncssh.ConnectionLost("Login timeout expired"), True),
    ],
)
def test_only_a_connection_the_proxy_closed_before_login_is_a_refusal(
    exc: Exception | None, refused: bool
) -> None:
    assert closed_by_proxy(exc) is refused
