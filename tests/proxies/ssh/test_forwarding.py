"""Forwarding is refused by default (-L, -D, -W, -R, -A), isolation ends every session,
and bad clients get clean errors while the proxy keeps serving."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from interlock.core.model import Effect, Operation
from interlock.core.refusal import refusals_counted
from tests.proxies.ssh.conftest import Rig, make_rig
from tests.services import free_port, sshd_server

pytestmark = pytest.mark.integration


async def until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_stdio_forwarding_is_refused(rig: Rig) -> None:
    args = rig.ssh_args("coder", "-W", f"127.0.0.1:{rig.sshd.port}")
    r = await asyncio.to_thread(subprocess.run, args, capture_output=True, timeout=60)
    assert r.returncode == 255
    assert b"administratively prohibited" in r.stderr
    record = rig.sink.last
    assert record.action.operation is Operation.EGRESS
    assert record.action.target == f"127.0.0.1:{rig.sshd.port}"
    assert record.decision.effect is Effect.DENY


@pytest.mark.parametrize("kind", ["-L", "-D"])
async def test_local_and_dynamic_forwards_carry_nothing(rig: Rig, kind: str) -> None:
    local = free_port()
    spec = f"{local}:127.0.0.1:{rig.sshd.port}" if kind == "-L" else str(local)
    proc = await asyncio.create_subprocess_exec(
        *rig.ssh_args("coder", "-N", kind, spec), stderr=asyncio.subprocess.DEVNULL
    )

    try:
        for _ in range(100):
            try:
                sock = socket.create_connection(("127.0.0.1", local), 0.2)
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the forward never listened")
        if kind == "-D":  # SOCKS5: no auth, then CONNECT 127.0.0.1:port
            sock.sendall(b"\x05\x01\x00")
            await asyncio.to_thread(sock.recv, 2)
            sock.sendall(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + rig.sshd.port.to_bytes(2, "big"))
        sock.settimeout(10)
        data = await asyncio.to_thread(sock.recv, 64)
        sock.close()
        assert not data.startswith(b"SSH-")  # the target's banner never came through
        await until(lambda: rig.sink.records != [])
        assert rig.sink.last.action.details["forward"] == "direct-tcpip"
        assert rig.sink.last.decision.effect is Effect.DENY
    finally:
        proc.terminate()
        await proc.wait()


async def test_remote_forwarding_is_refused(rig: Rig) -> None:
    r = await rig.ssh("true", "-R", "0:127.0.0.1:22", "-o", "ExitOnForwardFailure=yes")
    assert r.returncode == 255
    assert b"forwarding failed" in r.stderr
    assert rig.sink.records[0].action.operation is Operation.FORWARD
    assert rig.sink.records[0].decision.effect is Effect.DENY


async def test_agent_forwarding_is_not_offered(rig: Rig) -> None:
    agent = await asyncio.to_thread(
        subprocess.run, ["ssh-agent", "-s"], capture_output=True, text=True, timeout=30
    )
    env_line = next(x for x in agent.stdout.split(";") if "SSH_AUTH_SOCK=" in x)
    sock = env_line.split("=", 1)[1]
    try:
        args = [*rig.ssh_args("coder", "-A", "-v"), "echo sock=$SSH_AUTH_SOCK"]
        r = await asyncio.to_thread(
            subprocess.run,
            args,
            capture_output=True,
            timeout=60,
            env={"SSH_AUTH_SOCK": sock, "PATH": "/usr/bin:/bin"},
        )
        assert r.stdout == b"sock=\n"
        assert b"agent forwarding" in r.stderr.lower() or b"forwarding" in r.stderr.lower()
    finally:
        pid = next(x for x in agent.stdout.split(";") if "SSH_AGENT_PID=" in x).split("=")[1]
        await asyncio.to_thread(subprocess.run, ["kill", pid.strip()], check=False)


async def test_an_agent_isolated_mid_session_is_disconnected(rig: Rig) -> None:
    proc = await rig.started("sleep 30; echo finished")
    t0 = time.monotonic()
    await rig.proxy.pdp.store.restrict("coder", (), isolate=True)
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    assert time.monotonic() - t0 < 1.0 + 1.0  # disconnect within a second (plus exit)
    assert b"finished" not in out
    assert proc.returncode == 255
    again = await rig.ssh("echo hi")
    assert again.returncode == 126
    assert b"isolated" in again.stderr
    await rig.proxy.pdp.store.restore("coder")
    assert (await rig.ssh("echo back")).stdout == b"back\n"


async def test_login_timeout_and_garbage_leave_the_proxy_serving(rig: Rig) -> None:
    assert rig.proxy.address is not None
    reader, writer = await asyncio.open_connection(*rig.proxy.address)
    banner = await asyncio.wait_for(reader.readline(), 10)
    assert banner.startswith(b"SSH-2.0-")
    writer.write(b"SSH-2.0-evil\r\n" + b"\xff" * 4096)
    await writer.drain()
    rest = await asyncio.wait_for(reader.read(), 10)  # the proxy hangs up
    writer.close()
    assert b"interlock" not in rest
    silent_r, silent_w = await asyncio.open_connection(*rig.proxy.address)
    t0 = time.monotonic()
    await asyncio.wait_for(silent_r.read(), 20)  # never authenticates: dropped at login_timeout
    assert time.monotonic() - t0 < 15
    silent_w.close()
    assert (await rig.ssh("echo still-serving")).stdout == b"still-serving\n"
    await rig.proxy.flood.stop()  # writes what the flood limit still counted
    refused = [r for r in rig.sink.records if r.action.details.get("guard")]
    assert refusals_counted(refused) == 2, "the garbage and the silent client"
    reasons = sorted(r.decision.reasons[0] for r in refused if "summary" not in r.action.details)
    assert reasons[0].startswith("connection closed before login: ")
    assert reasons in (
        [
            "connection closed before login: Login timeout expired",
            "connection closed before login: Max packet size exceeded",
        ],
        ["connection closed before login: Max packet size exceeded"],
    )


async def test_unknown_keys_and_targets_are_refused(rig: Rig) -> None:
    for user in ("coder+nowhere", "mallory", "+web1"):
        r = await rig.ssh("echo hi", user=user)
        assert r.returncode == 255
        assert b"Permission denied" in r.stderr
    # No decision was asked; each failed login is recorded under `anonymous`, with the
    # user it offered, or counted in a later record of its address (the flood limit; its
    # sweep writes what is left). The proxy sees a client go shortly after the client has.
    for _ in range(200):
        await rig.proxy.flood.refusals.drain()
        if refusals_counted(rig.sink.records) >= 3:
            break
        await asyncio.sleep(0.05)
    assert refusals_counted(rig.sink.records) == 3
    offered = [r for r in rig.sink.records if not r.action.details.get("summary")]
    assert offered, "the first failed login is recorded"
    assert {(r.action.agent.id, r.action.details["user"]) for r in offered} <= {
        ("anonymous", u) for u in ("coder+nowhere", "mallory", "+web1")
    }
    assert all(r.engine is None for r in rig.sink.records)


async def test_a_target_that_dies_mid_command_ends_the_session_cleanly(tmp_path: Path) -> None:
    with sshd_server() as dying:
        rig = await make_rig(tmp_path, dying)
        try:
            proc = await asyncio.create_subprocess_exec(
                *rig.ssh_args("coder"),
                "echo started; sleep 30",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            assert proc.stdout is not None
            assert await asyncio.wait_for(proc.stdout.readline(), 20) == b"started\n"
            # Kill the target's session processes (children of the listening sshd).
            await asyncio.to_thread(
                subprocess.run, ["pkill", "-KILL", "-P", str(dying.pid)], check=False
            )
            _, err = await asyncio.wait_for(proc.communicate(), 20)
            assert proc.returncode == 255
            assert b"interlock: target connection lost" in err
            # The proxy still serves; the target is still up for new sessions.
            assert (await rig.ssh("echo again")).stdout == b"again\n"
        finally:
            await rig.proxy.stop()
