"""SFTP (and scp, which asyncssh serves on the same interface) proxied operation by
operation to the target's SFTP server.

Opening a file for reading and listing a directory are `file_read` actions; opening for
writing, remove, rename, mkdir, rmdir, setstat, symlink and link are `file_write` actions,
each on its path. Metadata lookups (stat, realpath, readlink) pass undecided. Every
method of asyncssh's SFTPServer that would touch the proxy's own filesystem is overridden:
nothing here ever reads or writes a local file.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncssh
from asyncssh import SFTPAttrs, SFTPError, SFTPName

from interlock.classify.shellpath import normalise
from interlock.core.model import Action, Effect, Operation
from interlock.core.refusal import guard_action
from interlock.proxies.ssh.connection import Connection

log = logging.getLogger(__name__)

_WRITE_FLAGS = asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC


PRIVILEGE_BITS = 0o6000
"""Setuid and setgid: a mode with either is `privilege_escalation`, as `chmod u+s` or
`g+s` is over exec (the file then runs as its owner or group)."""


def _attr_details(attrs: SFTPAttrs) -> dict[str, Any]:
    """What setting `attrs` changes that a policy must see: the mode (setuid or setgid
    flagged) and a new owner or group. Times and size are not shown: they grant nothing."""
    details: dict[str, Any] = {}
    if attrs.permissions is not None:
        details["mode"] = attrs.permissions & 0o7777
        if attrs.permissions & PRIVILEGE_BITS:
            details["flags"] = ["privilege_escalation"]
    if attrs.uid is not None:
        details["uid"] = attrs.uid
    if attrs.gid is not None:
        details["gid"] = attrs.gid
    return details


def _file(obj: object) -> asyncssh.SFTPClientFile:
    """asyncssh hands back the handle `open` returned, typed as object: ours are the
    target's SFTP files."""
    return cast(asyncssh.SFTPClientFile, obj)


class ProxySFTP(asyncssh.SFTPServer):
    """One instance per SFTP (or scp) channel."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], conn: Connection) -> None:
        super().__init__(chan)
        self.conn = conn
        self._client: asyncssh.SFTPClient | None = None
        self._opened: dict[int, tuple[str, bool]] = {}
        """id(handle) -> (decided path, opened for writing)."""

    def _path(self, raw: bytes) -> str:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self._refused(asyncssh.FX_FAILURE, "path is not UTF-8", raw) from None
        if "\x00" in text:
            raise self._refused(asyncssh.FX_FAILURE, "NUL in path", raw)
        return text

    def _refused(self, code: int, reason: str, path: bytes | str = "") -> SFTPError:
        """The error for a request this proxy refuses itself, audited as a refusal."""
        shown = path if isinstance(path, str) else path.decode("utf-8", "replace")
        action = guard_action(self.conn.agent, "ssh", Operation.FILE_READ, shown, {"sftp": True})
        self.conn.proxy.refusals.soon(action, reason)
        return SFTPError(code, reason)

    async def _sftp(self) -> asyncssh.SFTPClient:
        if self._client is None:
            try:
                upstream = await self.conn.upstream()
                self._client = await upstream.start_sftp_client()
            except (OSError, asyncssh.Error) as exc:
                raise SFTPError(asyncssh.FX_CONNECTION_LOST, f"target unreachable: {exc}") from None
        return self._client

    async def _decide(
        self, operation: Operation, path: str, follow: bool = True, **details: Any
    ) -> str:
        """Decide on the resolved path; return it (the operation then uses that very path,
        so a symlink swapped in between cannot redirect it elsewhere)."""
        absolute = await self._absolute(path, follow)
        action = Action(
            self.conn.agent,
            "ssh",
            operation,
            absolute,
            {"sftp": True, **details},
        )
        decision = await self.conn.proxy.decide(action, held=self.conn.held)
        if decision.effect is not Effect.ALLOW:
            reason = "; ".join(decision.reasons) or decision.effect.value
            raise SFTPError(
                asyncssh.FX_PERMISSION_DENIED,
                f"denied by interlock ({decision.decision_id}): {reason}",
            )
        return absolute

    async def _absolute(self, path: str, follow: bool = True) -> str:
        """Decide on the path the target will really use: relative paths against its home,
        symlinks resolved (a link to /etc/shadow is a read of /etc/shadow). For a file that
        does not exist yet, or an operation on a link itself (`follow` false: remove,
        rename, symlink, link), its directory is resolved instead."""
        client = await self._sftp()
        if follow:
            try:
                return str(await client.realpath(path))
            except (OSError, asyncssh.Error):
                pass
            with contextlib.suppress(OSError, asyncssh.Error):
                if (await client.lstat(path)).type == asyncssh.FILEXFER_TYPE_SYMLINK:
                    # Opening it would create whatever it points to, undecided.
                    why = f"{path!r}: dangling symlink"
                    raise self._refused(asyncssh.FX_PERMISSION_DENIED, why, path)
        parent, name = posixpath.split(path.rstrip("/") or "/")
        if name in ("", ".", ".."):
            parent, name = path, ""
        try:
            resolved = str(await client.realpath(parent or "."))
        except (OSError, asyncssh.Error):
            if not parent.startswith("/"):
                why = f"cannot resolve {path!r}"
                raise self._refused(asyncssh.FX_NO_SUCH_FILE, why, path) from None
            resolved = parent
        return normalise(posixpath.join(resolved, name) if name else resolved)

    # --- files ----------------------------------------------------------------------------

    async def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> object:
        p = self._path(path)
        writing = bool(pflags & _WRITE_FLAGS)
        # A file created is given the mode in `attrs` (setuid included): decided with it.
        created = _attr_details(attrs) if pflags & asyncssh.FXF_CREAT else {}
        resolved = await self._decide(
            Operation.FILE_WRITE if writing else Operation.FILE_READ,
            p,
            op="open",
            open_flags=pflags,
            **created,
        )
        client = await self._sftp()
        handle = await client.open(resolved.encode(), pflags, attrs, encoding=None)
        self._opened[id(handle)] = (resolved, writing)
        return handle

    async def open56(
        self, path: bytes, desired_access: int, flags: int, attrs: SFTPAttrs
    ) -> object:
        raise self._refused(asyncssh.FX_OP_UNSUPPORTED, "SFTPv5+ open is not proxied", path)

    async def close(self, file_obj: object) -> None:
        self._opened.pop(id(file_obj), None)
        await _file(file_obj).close()

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        data: bytes = await _file(file_obj).read(size, offset)
        return data

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        written: int = await _file(file_obj).write(data, offset)
        return written

    async def fstat(self, file_obj: object) -> SFTPAttrs:
        attrs: SFTPAttrs = await _file(file_obj).stat()
        return attrs

    async def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:
        # Changing attributes is a write, even on a handle opened for reading; on one
        # opened for writing, a new mode or owner is decided too (the open did not see it).
        path, writing = self._opened.get(id(file_obj), ("", False))
        changes = _attr_details(attrs)
        if not writing or changes:
            await self._decide(Operation.FILE_WRITE, path or "/", op="fsetstat", **changes)
        await _file(file_obj).setstat(attrs)

    async def fsync(self, file_obj: object) -> None:
        await _file(file_obj).fsync()

    async def fstatvfs(self, file_obj: object) -> Any:
        return await _file(file_obj).statvfs()

    def lock(self, file_obj: object, offset: int, length: int, flags: int) -> None:
        raise self._refused(asyncssh.FX_OP_UNSUPPORTED, "locking is not proxied")

    def unlock(self, file_obj: object, offset: int, length: int) -> None:
        raise self._refused(asyncssh.FX_OP_UNSUPPORTED, "locking is not proxied")

    # --- paths ----------------------------------------------------------------------------

    async def stat(self, path: bytes) -> SFTPAttrs:
        return await (await self._sftp()).stat(path)

    async def lstat(self, path: bytes) -> SFTPAttrs:
        return await (await self._sftp()).lstat(path)

    async def realpath(self, path: bytes) -> bytes:
        result = await (await self._sftp()).realpath(path)
        return result if isinstance(result, bytes) else str(result).encode()

    async def readlink(self, path: bytes) -> bytes:
        result = await (await self._sftp()).readlink(path)
        return result if isinstance(result, bytes) else str(result).encode()

    async def statvfs(self, path: bytes) -> Any:
        return await (await self._sftp()).statvfs(path)

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        decided = await self._decide(Operation.FILE_READ, self._path(path), op="list")
        # Asked with bytes, the names come back as bytes, as asyncssh's legacy scp joins
        # them to the directory's (bytes) path; str names failed `scp -O -r` silently.
        async for name in (await self._sftp()).scandir(decided.encode()):
            yield name

    async def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        decided = await self._decide(
            Operation.FILE_WRITE, self._path(path), op="setstat", **_attr_details(attrs)
        )
        await (await self._sftp()).setstat(decided, attrs)

    async def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        decided = await self._decide(
            Operation.FILE_WRITE, self._path(path), False, op="setstat", **_attr_details(attrs)
        )
        await (await self._sftp()).setstat(decided, attrs, follow_symlinks=False)

    async def remove(self, path: bytes) -> None:
        decided = await self._decide(Operation.FILE_WRITE, self._path(path), False, op="remove")
        await (await self._sftp()).remove(decided)

    async def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        decided = await self._decide(Operation.FILE_WRITE, self._path(path), False, op="mkdir")
        await (await self._sftp()).mkdir(decided, attrs)

    async def rmdir(self, path: bytes) -> None:
        decided = await self._decide(Operation.FILE_WRITE, self._path(path), False, op="rmdir")
        await (await self._sftp()).rmdir(decided)

    async def _pointing(self, link: str, place: str) -> str | None:
        """Where the symlink `link` points once it is at `place` (renamed or hard-linked
        there): a relative target is read from `place`'s directory, not the one it is in
        now (`../x` moved one level up points one level higher). None: not a symlink."""
        client = await self._sftp()
        try:
            if (await client.lstat(link)).type != asyncssh.FILEXFER_TYPE_SYMLINK:
                return None
            to = str(await client.readlink(link))
        except (OSError, asyncssh.Error):
            return None
        return await self._absolute(posixpath.join(posixpath.dirname(place), to))

    async def _renamed(self, oldpath: bytes, newpath: bytes) -> tuple[str, str]:
        # Moving a symlink carries what it points to into its new place: the target, as
        # the link will resolve it there, is decided with the new name (a link into /etc
        # moved under an allowed root, a relative link moved to another directory).
        old = await self._decide(Operation.FILE_WRITE, self._path(oldpath), False, op="rename_from")
        text = self._path(newpath)
        pointed = await self._pointing(old, await self._absolute(text, follow=False))
        new = await self._decide(
            Operation.FILE_WRITE,
            text,
            False,
            op="rename_to",
            **({"link_targets": [pointed]} if pointed is not None else {}),
        )
        return old, new

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        await (await self._sftp()).rename(*await self._renamed(oldpath, newpath))

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await (await self._sftp()).posix_rename(*await self._renamed(oldpath, newpath))

    async def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        # A symlink is a write of its own name and a way to reach its target later: the
        # target (relative to the link's directory, resolved on the target) is decided
        # with it, as `link_targets`. It is made as the client asked (a relative target
        # stays relative: relocatable trees, `current -> releases/x`): where it leads
        # after a move is decided where it is used, since every path an operation or a
        # command names is resolved on the target first, links followed.
        text = self._path(oldpath)
        if not text:
            # The kernel refuses an empty target; resolved, it would be the directory.
            raise self._refused(asyncssh.FX_NO_SUCH_FILE, "empty symlink target", newpath)
        new = await self._absolute(self._path(newpath), follow=False)
        target = await self._absolute(posixpath.join(posixpath.dirname(new), text))
        decided = await self._decide(
            Operation.FILE_WRITE, new, False, op="symlink", to=text, link_targets=[target]
        )
        await (await self._sftp()).symlink(text, decided)

    async def link(self, oldpath: bytes, newpath: bytes) -> None:
        # A hard link is a second name for the file: both names are decided (the file as
        # `link_targets`), so linking a protected file somewhere harmless is refused.
        # A hard link to a symlink is another symlink: what it points to is read from
        # the new name's directory.
        text = self._path(oldpath)
        old = await self._decide(Operation.FILE_WRITE, text, False, op="link_from")
        newtext = self._path(newpath)
        place = await self._absolute(newtext, follow=False)
        target = await self._pointing(old, place) or await self._absolute(text)
        new = await self._decide(
            Operation.FILE_WRITE,
            newtext,
            False,
            op="link",
            to=text,
            link_targets=[target],
        )
        await (await self._sftp()).link(old, new)

    def exit(self) -> None:
        if self._client is not None:
            self._client.exit()
            self._client = None
        # asyncssh ends an SFTP or scp channel without an exit status, which OpenSSH's
        # scp reports as a failure after a good transfer; errors travel in the protocol.
        with contextlib.suppress(Exception):
            self.channel.exit(0)
