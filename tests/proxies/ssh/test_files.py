"""scp (legacy and SFTP-based) and sftp through the proxy, decided per path."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from interlock.core.model import Operation
from tests.proxies.ssh.conftest import Rig

pytestmark = pytest.mark.integration


async def run(args: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return await asyncio.to_thread(
        subprocess.run, args, input=stdin, capture_output=True, timeout=60
    )


@pytest.mark.parametrize("mode", [[], ["-O"]], ids=["sftp-scp", "legacy-scp"])
async def test_scp_upload_and_download(rig: Rig, tmp_path: Path, mode: list[str]) -> None:
    local = tmp_path / "up.txt"
    local.write_text("payload\n")
    remote = tmp_path / "remote.txt"
    r = await run(rig.scp_args(*mode, str(local), f"coder@127.0.0.1:{remote}"))
    assert r.returncode == 0, r.stderr
    assert remote.read_text() == "payload\n"
    writes = [x.action for x in rig.sink.records if x.action.operation is Operation.FILE_WRITE]
    assert any(a.target == str(remote) for a in writes)
    back = tmp_path / "back.txt"
    r = await run(rig.scp_args(*mode, f"coder@127.0.0.1:{remote}", str(back)))
    assert r.returncode == 0, r.stderr
    assert back.read_text() == "payload\n"


@pytest.mark.parametrize("mode", [[], ["-O"]], ids=["sftp-scp", "legacy-scp"])
async def test_scp_of_a_protected_path_is_denied(rig: Rig, tmp_path: Path, mode: list[str]) -> None:
    r = await run(rig.scp_args(*mode, "coder@127.0.0.1:/etc/shadow", str(tmp_path / "s")))
    assert r.returncode != 0
    assert b"denied by interlock" in r.stderr or b"ermission denied" in r.stderr
    assert not (tmp_path / "s").exists()
    assert "protected path: /etc/shadow" in rig.sink.last.decision.reasons


async def test_sftp_batch_by_path(rig: Rig, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("A")
    await rig.proxy.pdp.store.restrict("coder", ["read_only"])
    batch = (
        f"get {tmp_path / 'a.txt'} {tmp_path / 'got.txt'}\n"
        f"-put {tmp_path / 'a.txt'} {tmp_path / 'new.txt'}\n"
        f"-rm {tmp_path / 'a.txt'}\n"
        f"-mkdir {tmp_path / 'dir'}\n"
        f"ls {tmp_path}\n"
    )
    args = rig.scp_args()
    args[0] = "sftp"
    r = await run([*args, "-b", "-", "coder@127.0.0.1"], batch.encode())
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "got.txt").read_text() == "A"  # reads still work
    assert not (tmp_path / "new.txt").exists()  # writes do not
    assert (tmp_path / "a.txt").exists()
    assert not (tmp_path / "dir").exists()
    denied = [x for x in rig.sink.records if x.decision.effect.value == "deny"]
    assert {x.action.details["op"] for x in denied} >= {"open", "remove", "mkdir"}


async def test_a_symlink_does_not_launder_a_protected_path(rig: Rig, tmp_path: Path) -> None:
    link = tmp_path / "innocent"
    link.symlink_to("/etc/shadow")
    r = await run(rig.scp_args(f"coder@127.0.0.1:{link}", str(tmp_path / "copy")))
    assert r.returncode != 0
    assert "protected path: /etc/shadow" in rig.sink.last.decision.reasons


async def test_a_hard_link_to_a_protected_file_is_refused(rig: Rig, tmp_path: Path) -> None:
    args = rig.scp_args()
    args[0] = "sftp"
    r = await run([*args, "-b", "-", "coder@127.0.0.1"], f"ln /etc/shadow {tmp_path}/k\n".encode())
    assert r.returncode != 0
    assert not (tmp_path / "k").exists()
    assert any("protected path: /etc/shadow" in x.decision.reasons for x in rig.sink.records)


async def test_changing_attributes_through_a_read_handle_is_a_write(
    rig: Rig, tmp_path: Path
) -> None:
    import asyncssh

    target = tmp_path / "plain.txt"
    target.write_text("x")
    target.chmod(0o600)
    await rig.proxy.pdp.store.restrict("coder", ["read_only"])
    async with (
        await rig.client() as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(str(target), "rb") as f,
    ):
        assert await f.read() == b"x"
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await f.chmod(0o777)
    assert target.stat().st_mode & 0o777 == 0o600
