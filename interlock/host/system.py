"""The enforcer's hands on the machine: `nft` for the table, `setfacl` for tool binaries."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from interlock.errors import HostError
from interlock.host.rules import TABLE

ACL_DENY = "---"
"""The entry written for a disabled tool: no execute, and no read either, so the agent
cannot copy the binary and run the copy."""


async def _run(*argv: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def require_tools() -> None:
    """HostError naming the package when `nft` or `setfacl` is missing."""
    for tool, package in (("nft", "nftables"), ("setfacl", "acl"), ("getfacl", "acl")):
        if shutil.which(tool) is None:
            raise HostError(f"{tool} not found; install it: apt-get install {package}")


async def load(script: str) -> None:
    """Replace the table with `script` (one kernel transaction: all of it or none)."""
    code, _, err = await _run("nft", "-f", "-", stdin=script.encode())
    if code != 0:
        raise HostError(f"nft refused the ruleset: {err.strip()}")


async def remove_table() -> None:
    code, _, err = await _run("nft", "delete", "table", "inet", TABLE)
    if code != 0 and "No such file" not in err:
        raise HostError(f"nft could not remove table inet {TABLE}: {err.strip()}")


async def table_present() -> bool:
    code, _, _ = await _run("nft", "list", "table", "inet", TABLE)
    return code == 0


async def acl_entry(uid: int, path: Path) -> str | None:
    """The permissions of `path`'s ACL entry for `uid` (e.g. "---"), None without one."""
    code, out, err = await _run("getfacl", "-n", "-c", "-p", str(path))
    if code != 0:
        raise HostError(f"getfacl {path}: {err.strip()}")
    for line in out.splitlines():
        kind, _, rest = line.partition(":")
        who, _, perms = rest.partition(":")
        if kind == "user" and who == str(uid):
            return perms.split()[0][:3]
    return None


async def deny_execute(uid: int, path: Path) -> None:
    code, _, err = await _run("setfacl", "-m", f"u:{uid}:{ACL_DENY}", str(path))
    if code != 0:
        raise HostError(f"setfacl {path}: {err.strip()}")


async def restore_execute(uid: int, path: Path) -> None:
    """Remove the entry this enforcer writes; an entry someone else set differently is
    theirs and stays."""
    if await acl_entry(uid, path) != ACL_DENY:
        return
    code, _, err = await _run("setfacl", "-x", f"u:{uid}", str(path))
    if code != 0:
        raise HostError(f"setfacl {path}: {err.strip()}")


def kill_user(uid: int, sig: int) -> int:
    """Signal every process whose real uid is `uid`; how many were signalled."""
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue  # exited meanwhile
        line = next((x for x in status.splitlines() if x.startswith("Uid:")), "")
        fields = line.split()
        if len(fields) > 1 and fields[1] == str(uid):
            try:
                os.kill(int(entry.name), sig)
                killed += 1
            except ProcessLookupError:
                continue
    return killed
