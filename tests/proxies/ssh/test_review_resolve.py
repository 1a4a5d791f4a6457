"""Review: paths the target cannot resolve before the command runs."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests.proxies.ssh.conftest import LoggedSshd, Rig
from tests.proxies.ssh.test_paths import rooted, short  # noqa: F401

pytestmark = pytest.mark.integration


async def test_link_extracted_and_read_in_one_command(rooted: Rig, short: Path) -> None:
    data = short / "share"
    (short / "secret.txt").write_text("SECRET\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("l")
        info.type = tarfile.SYMTYPE
        info.linkname = str(short / "secret.txt")
        tar.addfile(info)
    (data / "t.tar").write_bytes(buf.getvalue())  # as uploaded by the agent over SFTP
    r = await rooted.ssh(f"cd {data} && tar xf t.tar && cat l")
    print("TAR", r.returncode, r.stdout, r.stderr, rooted.sink.last.action.details.get("flags"))
    assert r.stdout != b"SECRET\n", "read outside path_roots through an extracted link"


async def test_write_through_link_to_missing_directories(rooted: Rig, short: Path) -> None:
    data = short / "share"
    (data / "own.txt").write_text("mine\n")
    (data / "dir").symlink_to(short)  # a link another process made (a cloned repo)
    r = await rooted.ssh(f"mkdir -p {data}/dir/x/y && cp {data}/own.txt {data}/dir/x/y/f")
    print("MKDIR", r.returncode, r.stderr, rooted.sink.last.action.details)
    assert not (short / "x" / "y" / "f").exists(), "wrote outside path_roots"


@pytest.mark.parametrize("how", ["tar", "cp"])
async def test_link_made_and_read_in_one_command(rooted: Rig, short: Path, how: str) -> None:
    data = short / "share"
    (short / "x").write_text("SECRET\n")
    if how == "tar":
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo("l")
            info.type = tarfile.SYMTYPE
            info.linkname = str(short / "x")
            tar.addfile(info)
        (data / "t.tar").write_bytes(buf.getvalue())  # as uploaded by the agent over SFTP
        command = f"tar -xf {data}/t.tar -C {data} && cat {data}/l"
    else:
        (data / "a" / "sub").mkdir(parents=True)
        (data / "x").write_text("inside\n")
        (data / "a" / "sub" / "l").symlink_to("../../x")  # share/x: inside
        command = f"cp -a {data}/a/sub {data}/c && cat {data}/c/l"
    r = await rooted.ssh(command)
    print(how, r.returncode, r.stdout, r.stderr[:300], rooted.sink.last.action.details.get("flags"))
    assert r.stdout != b"SECRET\n", "read outside path_roots through a link made by the command"


async def test_existing_relative_link_moved_and_read_in_one_command(rooted: Rig, short: Path) -> None:
    data = short / "share"
    (short / "x").write_text("SECRET\n")
    (data / "x").write_text("inside\n")
    (data / "a").mkdir()
    (data / "a" / "l").symlink_to("../x")  # share/x: inside, made by another process
    r = await rooted.ssh(f"mv {data}/a/l {data}/l && cat {data}/l")
    print("MV", r.returncode, r.stdout, r.stderr[:300], rooted.sink.last.action.details.get("flags"))
    assert r.stdout != b"SECRET\n", "read outside path_roots through a link the command moved"
