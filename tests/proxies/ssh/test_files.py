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


async def test_setuid_and_new_owners_over_sftp_are_decided_with_the_mode(
    rig: Rig, tmp_path: Path
) -> None:
    """`chmod u+s` is refused over exec; over SFTP the mode is in the decision too: a
    setstat, a handle's fsetstat (even one opened for writing) and a file created with it."""
    import asyncssh

    prog = tmp_path / "prog"
    prog.write_text("x")
    prog.chmod(0o755)
    async with await rig.client() as conn, conn.start_sftp_client() as sftp:
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.chmod(str(prog), 0o4755)
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.chmod(str(prog), 0o2755)
        async with sftp.open(str(tmp_path / "up"), "wb") as f:
            await f.write(b"x")
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await f.chmod(0o4755)
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.open(str(tmp_path / "new"), "wb", asyncssh.SFTPAttrs(permissions=0o4755))
        await sftp.chmod(str(prog), 0o700)
        assert rig.sink.last.action.details["mode"] == 0o700
        await sftp.chown(str(prog), 0, 0)
        assert (rig.sink.last.action.details["uid"], rig.sink.last.action.details["gid"]) == (0, 0)
    assert not (tmp_path / "new").exists()
    assert prog.stat().st_mode & 0o7777 == 0o700
    assert (tmp_path / "up").stat().st_mode & 0o6000 == 0


async def test_legacy_scp_preserving_a_setuid_mode_is_refused(rig: Rig, tmp_path: Path) -> None:
    local = tmp_path / "suid"
    local.write_text("x")
    local.chmod(0o4755)
    (tmp_path / "dst").mkdir()
    r = await run(rig.scp_args("-O", "-p", str(local), f"coder@127.0.0.1:{tmp_path / 'dst'}"))
    assert r.returncode == 0, r.stderr  # asyncssh's scp reports a failed setstat to no one
    assert (tmp_path / "dst" / "suid").stat().st_mode & 0o6000 == 0
    assert "forbidden construct: privilege_escalation" in rig.sink.last.decision.reasons


@pytest.mark.parametrize("mode", [[], ["-O"]], ids=["sftp-scp", "legacy-scp"])
async def test_recursive_scp_download_decides_every_entry(
    rig: Rig, tmp_path: Path, mode: list[str]
) -> None:
    """`scp -r` copies a tree (legacy scp copied nothing, silently, before), and is refused
    a link to a protected file and a `.ssh` directory inside one (where the transfer
    stops after a refusal depends on the order the directory lists its entries)."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "ok").write_text("ok")
    (src / "sub" / "ok2").write_text("ok2")
    out = tmp_path / "out"
    r = await run(rig.scp_args(*mode, "-r", f"coder@127.0.0.1:{src}", str(out)))
    assert r.returncode == 0, r.stderr
    assert (out / "ok").read_text() == "ok"
    assert (out / "sub" / "ok2").read_text() == "ok2"
    (src / "sub" / ".ssh").mkdir()
    (src / "sub" / ".ssh" / "authorized_keys").write_text("KEY")
    (src / "sh").symlink_to("/etc/shadow")
    again = tmp_path / "again"
    r = await run(rig.scp_args(*mode, "-r", f"coder@127.0.0.1:{src}", str(again)))
    assert r.returncode != 0
    assert not (again / "sh").exists()
    assert not (again / "sub" / ".ssh" / "authorized_keys").exists()
