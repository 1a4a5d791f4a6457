"""The embedded audit store: one SQLite file in WAL mode, fsynced on every commit.

Appends go to a writer process (interlock/audit/writer.py), so that hashing and SQLite
never wait for the GIL of the process that runs the proxies; the log starts it when it
starts (`start_writer`), and an append starts a new one after it died or failed. Reads,
checkpoints and the schema run on one thread of this process (SQLite connections are not
shareable across threads). Appends take `BEGIN IMMEDIATE`, so another process appending
to the same file waits its turn instead of building on a stale tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import interlock
from interlock.audit import sqlitefile, writer
from interlock.audit.merkle import NodeKey
from interlock.audit.sqlitefile import SCHEMA as SCHEMA
from interlock.audit.store import StoredRecord
from interlock.errors import AuditError

T = TypeVar("T")

WRITER_STOP_S = 5.0
"""How long `close` waits for the writer process to finish its batch and exit."""
WRITER_START_S = 30.0
"""How long a start waits for the writer process to say its file is open (a Python start
takes about 0.1 s; a loaded machine can take many times that)."""


_PACKAGE_ROOT = str(Path(interlock.__file__).resolve().parents[1])


async def _killed(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    return await proc.wait()


def _closing(proc: asyncio.subprocess.Process) -> bool:
    return proc.stdin is None or proc.stdin.transport.is_closing()


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._pool: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self._writer: asyncio.subprocess.Process | None = None
        self._writing = asyncio.Lock()
        self._closed = False
        self._unsure = False
        """The last append's outcome is unknown (its writer failed or it was cancelled
        after sending): the next one asks the writer to skip what the log already has."""

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._pool is None or self._db is None:
            raise AuditError("audit store is not open")
        db = self._db
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn, db)
        except sqlite3.Error as exc:
            raise AuditError(f"sqlite audit store {self.path}: {exc}") from exc

    async def open(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="audit-sqlite")
        loop = asyncio.get_running_loop()
        try:
            self._db = await loop.run_in_executor(self._pool, sqlitefile.connect, self.path)
        except sqlite3.Error as exc:
            raise AuditError(f"cannot open sqlite audit store {self.path}: {exc}") from exc
        self.path.chmod(0o600)

    async def close(self) -> None:
        async with self._writing:
            self._closed = True
            await self._stop_writer()
        if self._db is not None and self._pool is not None:
            db = self._db
            await asyncio.get_running_loop().run_in_executor(self._pool, db.close)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._db = self._pool = None

    async def append(self, entries: Sequence[tuple[str, bytes]]) -> int:
        async with self._writing:
            if self._closed or self._db is None:
                raise AuditError("audit store is not open")
            try:
                request = writer.encode_append(entries, recheck=self._unsure)
            except UnicodeEncodeError as exc:
                raise AuditError(f"sqlite audit store {self.path}: decision id: {exc}") from exc
            proc = self._writer
            if proc is None or proc.returncode is not None or _closing(proc):
                await self._kill_writer()  # it died while idle: nothing was sent to it
                proc = await self._start_writer()
            assert proc.stdin is not None  # both are pipes: created with PIPE
            assert proc.stdout is not None
            try:
                proc.stdin.write(request)
                await proc.stdin.drain()
                (length,) = writer.LENGTH.unpack(await proc.stdout.readexactly(writer.LENGTH.size))
                reply = await proc.stdout.readexactly(length)
            except BaseException as exc:
                # The batch may or may not have been committed, and the pipe is out of
                # step: the writer goes at once (a commit is atomic), and the next append
                # asks the new one to skip whatever of its batch the log already holds.
                self._unsure = True
                code = await self._kill_writer()
                if isinstance(exc, (OSError, RuntimeError, asyncio.IncompleteReadError)):
                    raise AuditError(
                        f"sqlite audit store {self.path}: the writer process failed "
                        f"({code}: {exc or type(exc).__name__}); the batch is retried"
                    ) from exc
                raise  # cancelled (the log's write timeout), or the loop is going away
            first = writer.decode_reply(reply)
            self._unsure = False
            return first

    async def start_writer(self) -> None:
        """Start the writer process now rather than at the first append, and wait until
        it has the file open: the log calls this when it starts, so that the process
        start-up (about 0.1 s of a core) is paid before serving, not by the first
        decisions, and a file the writer cannot open stops the start with its reason."""
        async with self._writing:
            if self._closed or self._db is None:
                raise AuditError("audit store is not open")
            if self._writer is None:
                await self._start_writer()

    async def _start_writer(self) -> asyncio.subprocess.Process:
        # -P: nothing from the working directory is imported into the process that
        # writes the log; the parent's own interlock comes first on the child's path.
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (_PACKAGE_ROOT, env.get("PYTHONPATH"))))
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-P",
                "-m",
                "interlock.audit.writer",
                str(self.path.resolve()),  # the same file whatever the child's directory
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C at the terminal is the parent's to handle
                env=env,
            )
        except OSError as exc:
            raise AuditError(f"cannot start the audit writer process: {exc}") from exc
        assert proc.stdout is not None  # created with PIPE
        try:
            async with asyncio.timeout(WRITER_START_S):
                (length,) = writer.LENGTH.unpack(await proc.stdout.readexactly(writer.LENGTH.size))
                writer.decode_reply(await proc.stdout.readexactly(length))
        except BaseException as exc:
            # It becomes the store's writer only once it said so: one that has not
            # (failed, timed out, or the start was cancelled, say by the log's write
            # timeout) goes, or its late "open" would be read as the next batch's reply.
            code = await _killed(proc)
            if isinstance(exc, (OSError, TimeoutError, asyncio.IncompleteReadError)):
                raise AuditError(
                    f"the audit writer process for {self.path} did not start "
                    f"({code}: {exc or type(exc).__name__})"
                ) from exc
            raise
        self._writer = proc
        return proc

    async def _stop_writer(self) -> int | None:
        """End the writer: its input closed, it commits what it holds and exits; killed
        if it does not within WRITER_STOP_S. Its exit code."""
        proc, self._writer = self._writer, None
        if proc is None:
            return None
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            return await asyncio.wait_for(proc.wait(), WRITER_STOP_S)
        except TimeoutError:
            return await _killed(proc)

    async def _kill_writer(self) -> int | None:
        proc, self._writer = self._writer, None
        return None if proc is None else await _killed(proc)

    async def size(self) -> int:
        return await self._run(
            lambda db: int(db.execute("SELECT size FROM audit_head WHERE id = 1").fetchone()[0])
        )

    async def nodes(self, keys: Collection[NodeKey]) -> dict[NodeKey, bytes]:
        return await self._run(lambda db: sqlitefile.nodes(db, keys))

    async def records(self, start: int, end: int) -> list[StoredRecord]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT idx, decision_id, data FROM audit_records WHERE idx >= ? AND idx < ? "
                "ORDER BY idx",
                (start, end),
            ).fetchall()
        )
        return [StoredRecord(int(i), str(d), bytes(b)) for i, d, b in rows]

    async def find(self, decision_id: str) -> StoredRecord | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT idx, decision_id, data FROM audit_records WHERE decision_id = ? "
                "ORDER BY idx LIMIT 1",
                (decision_id,),
            ).fetchone()
        )
        return None if row is None else StoredRecord(int(row[0]), str(row[1]), bytes(row[2]))

    async def add_checkpoint(self, size: int, note: str) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO audit_checkpoints (size, note) VALUES (?, ?)", (size, note)
            )
        )

    async def checkpoints(self) -> list[tuple[int, str]]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT size, note FROM audit_checkpoints ORDER BY size"
            ).fetchall()
        )
        return [(int(s), str(n)) for s, n in rows]
