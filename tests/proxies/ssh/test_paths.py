"""Paths as the target resolves them, links, and whole argument lists, through the proxy to
an sshd whose ForceCommand logs every command it runs: what was refused never ran."""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest

from interlock.core.model import Effect
from interlock.testing.services import sshd_server
from tests.proxies.ssh.conftest import LoggedSshd, Rig, make_rig, rooted_bundle

pytestmark = pytest.mark.integration


@pytest.fixture
async def logged(tmp_path: Path, logged_sshd: LoggedSshd) -> AsyncIterator[Rig]:
    r = await make_rig(tmp_path, logged_sshd.sshd)
    yield r
    await r.proxy.stop()


@pytest.fixture
def short() -> Iterator[Path]:
    """A directory with a short name: long random-looking paths in a command look like
    secrets to the content scanner, which raises the risk of the command."""
    path = Path(tempfile.mkdtemp(prefix="il", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def rooted(tmp_path: Path, short: Path, logged_sshd: LoggedSshd) -> AsyncIterator[Rig]:
    """The bundled policy confining paths to `short`/share."""
    (short / "share").mkdir()
    bundle = rooted_bundle(tmp_path, [str(short / "share")])
    r = await make_rig(tmp_path, logged_sshd.sshd, bundle=bundle)
    yield r
    await r.proxy.stop()


async def refused_and_never_ran(rig: Rig, log: LoggedSshd, command: str) -> None:
    r = await rig.ssh(command)
    assert r.returncode == 126, (command, r.stdout, r.stderr)
    assert b"interlock: denied" in r.stderr
    assert r.stdout == b""
    assert command not in log.commands()


@pytest.mark.parametrize(
    "command",
    [
        "cat /etc//shadow",
        "cat /etc/./shadow",
        "cat ../../../../etc/shadow",
        "cat /etc/shad*",
        "cat /etc/sh[a]dow",
        "cat /etc/{shadow,hostname}",
        "cat $HOME/.ssh/authorized_keys",
        "cat ${HOME}/.ssh/authorized_keys",
        "cd /etc && cat shadow",
        "grep -h --file=/etc/shadow x /etc/hostname",
        "sh -c 'cat /etc/'\"'\"'shadow'\"'\"''",
        "cat $'\\x2fetc/shadow'",
        "cat $F",
        "cat /proc/self/root/etc/shadow",
        "grep -r root /etc",
        "find /etc -name shadow -exec cat {} +",
        "ln -s / /tmp/interlock-root-link",
        "ln -s /etc /tmp/interlock-etc-link",
    ],
)
async def test_respelled_protected_paths_never_run(
    logged: Rig, logged_sshd: LoggedSshd, command: str
) -> None:
    await refused_and_never_ran(logged, logged_sshd, command)


async def test_forty_arguments_are_decided_whole(
    logged: Rig, logged_sshd: LoggedSshd, short: Path
) -> None:
    files = [f"f{i}" for i in range(39)]
    for name in files:
        (short / name).write_text(f"{name}\n")
    allowed = f"cd {short} && cat " + " ".join(files)
    r = await logged.ssh(allowed)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "".join(f"{name}\n" for name in files).encode()
    assert logged_sshd.commands()[-1] == allowed
    reads = logged.sink.last.action.details["reads"]
    assert {str(short / name) for name in files} <= set(reads)
    await refused_and_never_ran(logged, logged_sshd, allowed + " /etc/shadow")


async def test_relative_paths_resolve_against_the_home_the_target_reports(
    logged: Rig, logged_sshd: LoggedSshd
) -> None:
    home = Path.home()
    depth = len(home.parts) - 1
    command = "cat " + "../" * depth + "etc/hostname"
    r = await logged.ssh(command)
    assert r.returncode == 0, r.stderr
    assert r.stdout == await asyncio.to_thread(Path("/etc/hostname").read_bytes)
    assert list(logged.sink.last.action.details["reads"]) == ["/etc/hostname"]
    assert logged.proxy._where["web1"].home == str(home)
    await refused_and_never_ran(logged, logged_sshd, "cat " + "../" * depth + "etc/shadow")


async def test_a_symlink_out_of_the_allowed_directory_is_refused_over_exec(
    rooted: Rig, logged_sshd: LoggedSshd, short: Path
) -> None:
    data = short / "share"
    for command in (
        f"ln -s /etc/passwd {data}/link",
        f"ln -s /etc {data}/etc",
        f"cd {data} && ln -s ../../../../../etc/passwd link",
        f"ln /etc/passwd {data}/hard",
    ):
        await refused_and_never_ran(rooted, logged_sshd, command)
    assert list(data.iterdir()) == []
    r = await rooted.ssh(f"echo hi > {data}/a && ln -s a {data}/b && cat {data}/b")
    assert (r.returncode, r.stdout) == (0, b"hi\n"), r.stderr


async def test_links_over_sftp_are_decided_on_their_targets(rooted: Rig, short: Path) -> None:
    data = short / "share"
    (data / "own.txt").write_text("mine")
    async with await rooted.client() as conn, conn.start_sftp_client() as sftp:
        for target in ("/etc/passwd", "/etc", "../../../../../../etc/passwd", "/etc/shadow"):
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.symlink(target, str(data / "link"))
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.link("/etc/passwd", str(data / "hard"))
        assert sorted(p.name for p in data.iterdir()) == ["own.txt"]
        (short / "outside").symlink_to("/etc")
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.rename(str(short / "outside"), str(data / "moved"))
        assert sorted(p.name for p in data.iterdir()) == ["own.txt"]
        await sftp.symlink("own.txt", str(data / "alias"))
        async with sftp.open(str(data / "alias")) as f:
            assert await f.read() == "mine"
    decision = [x for x in rooted.sink.records if x.action.details.get("op") == "symlink"][-1]
    assert list(decision.action.details["link_targets"]) == [str(data / "own.txt")]
    assert decision.decision.effect is Effect.ALLOW


async def test_openssh_sftp_links_are_decided_on_their_targets(rooted: Rig, short: Path) -> None:
    """OpenSSH's sftp sends symlink arguments in its own (reversed) order."""
    data = short / "share"
    (data / "own.txt").write_text("mine")
    batch = (
        f"-ln -s /etc/passwd {data}/l1\n-symlink /etc {data}/l2\n-ln /etc/passwd {data}/h\n"
        f"ln -s {data}/own.txt {data}/ok\n"
    )
    args = rooted.scp_args()
    args[0] = "sftp"
    r = await asyncio.to_thread(
        subprocess.run, [*args, "-b", "-", "coder@127.0.0.1"], input=batch.encode(),
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in data.iterdir()) == ["ok", "own.txt"]
    assert (data / "ok").resolve() == data / "own.txt"
    refused = [x.action.details for x in rooted.sink.records if x.decision.effect is Effect.DENY]
    assert [d["op"] for d in refused] == ["symlink", "symlink", "link_from"]
    assert [list(d["link_targets"]) for d in refused[:2]] == [["/etc/passwd"], ["/etc"]]


async def test_a_symlink_to_a_protected_file_is_refused_by_default(
    logged: Rig, tmp_path: Path
) -> None:
    async with await logged.client() as conn, conn.start_sftp_client() as sftp:
        for target in ("/etc/shadow", "/etc/ssh", "/root/.ssh", "/etc", "/", "/root"):
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.symlink(target, str(tmp_path / "l"))
    assert not (tmp_path / "l").is_symlink()


async def test_a_relative_symlink_moved_elsewhere_is_decided_where_it_lands(
    rooted: Rig, short: Path
) -> None:
    """`../secret.txt` in share/a points into share; renamed or hard-linked into share
    itself it points out of it, and a command reading the link (exec does not follow
    links) would read the file outside."""
    data = short / "share"
    (short / "secret.txt").write_text("SECRET\n")
    (data / "a").mkdir()
    (data / "a" / "l").symlink_to("../secret.txt")  # as a command could have made it
    async with await rooted.client() as conn, conn.start_sftp_client() as sftp:
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.rename(str(data / "a" / "l"), str(data / "l"))
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.link(str(data / "a" / "l"), str(data / "h"))
        assert sorted(p.name for p in data.iterdir()) == ["a"]
        refused = rooted.sink.last.action.details
        assert list(refused["link_targets"]) == [str(short / "secret.txt")]
        # Made over SFTP as asked (relative), a link whose directory then moves leads
        # elsewhere: reading through it is decided where it leads now.
        await sftp.mkdir(str(data / "a" / "b"))
        await sftp.symlink("../../secret.txt", str(data / "a" / "b" / "m"))
        assert (data / "a" / "b" / "m").readlink() == Path("../../secret.txt")
        await sftp.rename(str(data / "a" / "b"), str(data / "b"))
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.open(str(data / "b" / "m"))
    r = await rooted.ssh(f"cat {data}/b/m")
    assert r.returncode == 126, r.stderr
    assert r.stdout == b""


async def test_a_link_already_on_the_target_is_decided_where_it_leads(
    rooted: Rig, logged_sshd: LoggedSshd, short: Path
) -> None:
    """Links the agent did not make through the proxy (another process's, an earlier
    command's, a relative one moved): the target resolves each path of a command before
    it is decided, so reading through them is reading what they point to."""
    data = short / "share"
    (short / "secret.txt").write_text("SECRET\n")
    (data / "own.txt").write_text("mine\n")
    (data / "direct").symlink_to(short / "secret.txt")
    (data / "a").mkdir()
    (data / "a" / "l").symlink_to("../secret.txt")  # into share, from share/a
    (data / "a" / "l").rename(data / "moved")  # now ../secret.txt is outside share
    (data / "dir").symlink_to(short)
    for command in (
        f"cat {data}/direct",
        f"cat {data}/moved",
        f"cat {data}/dir/secret.txt",
        f"cd {data} && cat moved",
        f"cp {data}/own.txt {data}/dir/copy.txt",
        f"grep -r SECRET {data}/dir",
    ):
        await refused_and_never_ran(rooted, logged_sshd, command)
        resolved = rooted.sink.last.action.details["resolved"]
        assert any(not p.startswith(f"{data}/") for p in resolved.values()), resolved
    assert not (short / "copy.txt").exists()
    # Made and moved in one command, before any resolution could see where it leads:
    await refused_and_never_ran(
        rooted,
        logged_sshd,
        f"ln -s ../secret.txt {data}/a/m && mv {data}/a/m {data} && cat {data}/m",
    )
    assert not (data / "m").exists()
    r = await rooted.ssh(f"cat {data}/own.txt {data}/nothing-here")
    assert r.stdout == b"mine\n"  # a path that does not exist resolves to nothing more
    assert "resolved" not in rooted.sink.last.action.details


async def test_a_target_without_sftp_leaves_a_command_with_paths_unresolved(
    tmp_path: Path,
) -> None:
    """No SFTP channel, no lookup: a command naming paths is refused (a link could take
    it anywhere), one naming none runs."""
    with sshd_server(sftp=False) as bare:
        rig = await make_rig(tmp_path, bare)
        try:
            r = await rig.ssh("cat /etc/hostname")
            assert r.returncode == 126, r.stderr
            details = rig.sink.last.action.details
            assert "unresolved" in details["flags"]
            assert "not resolved on the target" in details["resolve_error"]
            assert (await rig.ssh("true")).returncode == 0
        finally:
            await rig.proxy.stop()
        # The operator's choice for such a target: paths decided as written.
        (tmp_path / "written").mkdir()
        rig = await make_rig(tmp_path / "written", bare, resolve_links=False)
        try:
            r = await rig.ssh("cat /etc/hostname")
            assert r.returncode == 0, r.stderr
            assert "resolve_error" not in rig.sink.last.action.details
        finally:
            await rig.proxy.stop()


def _tar_with_link(path: Path, name: str, target: Path) -> None:
    """A tar archive holding one symbolic link (as an agent could upload over SFTP)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE
        info.linkname = str(target)
        tar.addfile(info)
    path.write_bytes(buf.getvalue())


async def test_a_link_a_command_places_and_then_reads_is_refused(
    rooted: Rig, logged_sshd: LoggedSshd, short: Path
) -> None:
    """Paths are resolved before the command runs: a link the command itself extracts,
    copies or moves into place, then reads or writes through, is where no resolution
    looked (review: each of these read a file outside path_roots)."""
    data = short / "share"
    (short / "x").write_text("SECRET\n")
    (data / "x").write_text("inside\n")
    _tar_with_link(data / "t.tar", "l", short / "x")
    (data / "a" / "sub").mkdir(parents=True)
    (data / "a" / "sub" / "l").symlink_to("../../x")  # share/x: inside, from where it is
    (data / "a" / "m").symlink_to("../x")  # share/x too
    for command in (
        f"tar -xf {data}/t.tar -C {data} && cat {data}/l",
        f"cp -a {data}/a/sub {data}/c && cat {data}/c/l",
        f"mv {data}/a/m {data}/m && cat {data}/m",
    ):
        await refused_and_never_ran(rooted, logged_sshd, command)
        unresolved = rooted.sink.last.action.details["unresolved"]
        assert any("moves, copies, links or checks out" in u for u in unresolved), unresolved
    assert not (data / "l").exists()
    assert not (data / "m").exists()
    r = await rooted.ssh(f"mv {data}/x {data}/y && cat {data}/y")  # no link moved elsewhere
    assert r.stdout == b"inside\n", r.stderr


async def test_a_write_through_a_link_into_directories_not_made_yet_is_refused(
    rooted: Rig, logged_sshd: LoggedSshd, short: Path
) -> None:
    """A path that does not exist yet resolves through its deepest existing directory:
    `dir` links out of path_roots, so `dir/x/y/f` is outside too (review: mkdir -p and
    cp wrote there)."""
    data = short / "share"
    (data / "own.txt").write_text("mine\n")
    (data / "dir").symlink_to(short)  # a link another process made (a cloned repository)
    await refused_and_never_ran(
        rooted, logged_sshd, f"mkdir -p {data}/dir/x/y && cp {data}/own.txt {data}/dir/x/y/f"
    )
    assert not (short / "x").exists()
