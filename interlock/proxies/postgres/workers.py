"""Several Postgres proxy processes on one port (`[postgres] workers`).

One Python process relays on one core; a database proxy's clients are many independent
sessions, so the way to a second core is a second process, as PgBouncer does with
`so_reuseport`. Every worker binds the same address with SO_REUSEPORT and the kernel
spreads new connections over them. The first worker is the `interlock up` process itself;
once its listener is bound it starts the others (`Workers`), each
`python -m interlock.worker` with the same config minus everything but the Postgres proxy,
and stops them with it.

What must hold across workers, and how:

- **One agent, one context.** Context, taints, posture and approvals live in the shared
  state store (Redis, required by the config for more than one worker), which pushes
  posture to every process, as it does between instances on different hosts.
- **One audit tree.** Every worker appends to the one audit store, signed with the one
  key: PostgreSQL's appenders serialise on the log's head row, SQLite's take turns on
  the one file (`BEGIN IMMEDIATE`), each extending the tree the others left.
- **Cancel requests reach the session.** A CancelRequest arrives on a new connection,
  which the kernel may hand to any worker. Each worker's keys are its index modulo the
  number of workers (`Slot.new_key`), so the worker that receives a cancel for a key
  that is not its own passes the 16 bytes to the owner over a Unix socket in a directory
  only interlock's user can enter (`relay_cancel`); the owner forwards it with the
  server's key if the (pid, key) is one of its sessions and ignores it otherwise. The
  server's key never leaves its worker.
- **One configuration.** SIGHUP reaches every worker, and a worker started again after a
  crash gets what the first one serves now (agents and modes as last reloaded, per-agent
  mode overrides set through the admin API), not what it started with.
- **One checkpointer.** Only the first worker signs checkpoints (and asks witnesses) of
  the shared tree; the others append.

Only the first worker serves the admin API; its `/metrics` asks the others for their
numbers (`Workers.reports`) and adds them up, while `/readyz` describes it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import secrets
import shutil
import signal
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interlock.core.modes import Mode
from interlock.proxies.postgres import messages as m

if TYPE_CHECKING:
    from collections.abc import Callable

    from interlock.config import Config
    from interlock.core.pdp import PDP

log = logging.getLogger(__name__)

CANCEL = struct.Struct("!IIII")
READY = b"ready\n"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
RESTART_DELAY_S = 1.0
REPORT_TIMEOUT_S = 1.0
"""How long `/metrics` waits for the other workers' numbers."""
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])
"""Where this interlock is imported from: first on a worker's path (it runs with -P)."""
ENTRY = "interlock.worker"
"""The module a worker other than the first runs (`python -m`): it builds a runtime, so it
sits above `interlock.runtime`, which starts the first worker and its `Workers`."""


@dataclass(frozen=True)
class Slot:
    """This process's place among `count` workers; `directory` holds this run's cancel
    sockets (made by the first worker, mode 0700: no other user can connect to them or
    take a name while a worker restarts)."""

    index: int
    count: int
    directory: str

    def owner(self, key: int) -> int:
        """The worker that made cancel key `key`."""
        return key % self.count

    def address(self, index: int) -> str:
        """Worker `index`'s cancel socket."""
        return os.path.join(self.directory, f"{index}.sock")

    def new_key(self) -> int:
        """A random 32-bit cancel key that names this worker."""
        return secrets.randbelow((1 << 32) // self.count) * self.count + self.index


def parse_cancel(data: bytes) -> m.CancelRequest | None:
    """The CancelRequest in 16 bytes, or None if they are not one."""
    length, code, pid, key = CANCEL.unpack(data)
    if length != CANCEL.size or code != m.CANCEL_REQUEST_CODE:
        return None
    return m.CancelRequest(pid, key)


async def relay_cancel(address: str, msg: m.CancelRequest) -> None:
    """Give a cancel to the worker listening on `address`, and wait until it has dealt
    with it (it closes the socket), so the client's cancel connection ends after its
    cancel went on, as it does with the server itself."""
    try:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_unix_connection(address)
            try:
                writer.write(msg.encode())
                await writer.drain()
                await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        # Anyone can send cancels: a worker that is down (restarting) costs a debug line.
        log.debug("postgres proxy: could not pass a cancel request to its worker: %s", exc)


def worker_config(config: Config, listen: str, public_url: str | None) -> Config:
    """What a worker other than the first runs: the Postgres proxy alone, on the address
    the first worker bound (its port may have been 0). Approval links point at the first
    worker's admin API, where they are answered."""
    assert config.postgres is not None
    approvals = config.approvals
    if approvals.public_url is None and public_url is not None:
        approvals = approvals.model_copy(update={"public_url": public_url})
    return config.model_copy(
        update={
            "postgres": config.postgres.model_copy(update={"listen": listen}),
            "http": None,
            "ssh": None,
            "extauthz": None,
            "admin": None,
            "host": None,
            "approvals": approvals,
        }
    )


def own_dir(config: Config, index: int) -> Path:
    """A worker's own files (its credential lease journal, which each process holds and
    locks, and the bundles it downloads): the first worker's are the data directory's."""
    return config.data_dir if index == 0 else config.data_dir / f"postgres-worker-{index}"


class Workers:
    """The first worker's supervisor of the others: starts them (and fails the start if
    one cannot), passes SIGHUP and per-agent mode overrides on, starts again one that
    dies, and at shutdown closes their stdin, which makes each stop as `interlock up`
    stops (sessions end, the audit log is flushed)."""

    def __init__(
        self,
        pdp: PDP,
        config: Callable[[], Config],
        source: Path | None,
        slot: Slot,
        listen: str,
        public_url: str | None,
    ):
        """`config` gives the configuration the first worker serves now (SIGHUP replaces
        it); `source` is the file it was read from, which each worker re-reads on SIGHUP."""
        self.pdp = pdp
        self.config = config
        self.source = source
        self.slot = slot
        self.listen = listen
        self.public_url = public_url
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._ready: set[int] = set()
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False
        self._reloads = 0
        """SIGHUPs passed on so far: a worker whose order predates one is sent it."""
        self._asked: dict[tuple[int, int], asyncio.Future[Any]] = {}
        """Report requests (worker, id) waiting for the worker's answer (`reports`)."""
        self._ids = itertools.count()
        self._listeners: dict[int, asyncio.Task[None]] = {}
        pdp.mode_listeners.append(self._mode)

    async def start(self) -> None:
        """Start workers 1..count-1 and wait until each serves; raise if one cannot."""
        from interlock.errors import ConfigError

        indexes = range(1, self.slot.count)
        results = await asyncio.gather(*(self._spawn(i) for i in indexes), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            await self.stop()
            raise ConfigError(f"postgres worker could not start: {failed[0]}")
        for i in indexes:
            self._watchers.append(asyncio.create_task(self._watch(i)))

    def _overrides(self) -> dict[str, str]:
        return {a: mode.value for a, mode in self.pdp.mode_overrides.items()}

    def _order(self, index: int, overrides: dict[str, str]) -> bytes:
        """What worker `index` runs: the config the first worker serves now (as SIGHUP
        last left it) and the per-agent overrides in force."""
        order = {
            "config": worker_config(self.config(), self.listen, self.public_url).model_dump_json(),
            "index": index,
            "count": self.slot.count,
            "directory": self.slot.directory,
            "source": str(self.source) if self.source else None,
            "public_url": self.public_url,
            "overrides": overrides,
            "verbose": logging.getLogger().level <= logging.DEBUG,
            "log_format": _log_format(),
        }
        return json.dumps(order).encode() + b"\n"

    async def _spawn(self, index: int) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (_PACKAGE_ROOT, env.get("PYTHONPATH"))))
        self._ready.discard(index)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",  # nothing imported from the working directory
            "-m",
            ENTRY,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C at the terminal is the first worker's
            env=env,
        )
        self._procs[index] = proc
        assert proc.stdin is not None
        assert proc.stdout is not None
        reloads, overrides = self._reloads, self._overrides()
        proc.stdin.write(self._order(index, overrides))
        await proc.stdin.drain()
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
        except TimeoutError:
            line = b"error: did not start in %d s" % START_TIMEOUT_S
        if line != READY:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            why = line.decode("utf-8", "replace").strip() or f"exit status {proc.returncode}"
            raise RuntimeError(f"worker {index}: {why}")
        # What changed while it started, which its order did not carry: a SIGHUP (the
        # first worker's config was replaced) and per-agent overrides set or cleared.
        if self._reloads != reloads:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGHUP)
        now = self._overrides()
        for agent_id in sorted(overrides.keys() | now.keys()):
            if overrides.get(agent_id) != now.get(agent_id):
                proc.stdin.write(_mode_line(agent_id, now.get(agent_id)))
        self._ready.add(index)
        self._listeners[index] = asyncio.create_task(self._listen(index, proc))

    async def _listen(self, index: int, proc: asyncio.subprocess.Process) -> None:
        """Hand worker `index`'s answers (JSON lines on its stdout) to whoever asked."""
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                doc = json.loads(line)
                key = (index, int(doc["report"]))
            except (ValueError, KeyError, TypeError):
                log.error("postgres worker %d: unreadable line on its stdout", index)
                continue
            asked = self._asked.pop(key, None)
            if asked is not None and not asked.done():
                asked.set_result(doc)

    async def reports(self) -> list[Any]:
        """What each serving worker reports (its decision counts, audit status and open
        sessions), for the first worker's `/metrics`; one that does not answer within
        REPORT_TIMEOUT_S (restarting, stuck) is left out, and `/metrics` says how many
        answered."""
        loop = asyncio.get_running_loop()
        asked: list[tuple[tuple[int, int], asyncio.Future[Any]]] = []
        for index, proc in self._procs.items():
            if index not in self._ready or proc.stdin is None or proc.stdin.is_closing():
                continue
            key = (index, next(self._ids))
            self._asked[key] = future = loop.create_future()
            proc.stdin.write(json.dumps({"report": key[1]}).encode() + b"\n")
            asked.append((key, future))
        if asked:
            await asyncio.wait([f for _, f in asked], timeout=REPORT_TIMEOUT_S)
        out = []
        for key, future in asked:
            self._asked.pop(key, None)
            if future.done():
                out.append(future.result())
            else:
                future.cancel()
        return out

    async def _watch(self, index: int) -> None:
        """Start worker `index` again whenever it ends while the first serves (a crash,
        a kill, a stray SIGTERM): its sessions are gone with it, its share of the port's
        new connections must not be."""
        delay = RESTART_DELAY_S
        while not self._stopping:
            code = await self._procs[index].wait()
            self._ready.discard(index)
            if self._stopping:
                return
            log.error("postgres worker %d exited with status %d; starting it again", index, code)
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._spawn(index)
                delay = RESTART_DELAY_S
            except Exception as exc:
                log.error("postgres worker %d: %s", index, exc)
                delay = min(delay * 2, 30.0)

    def _mode(self, agent_id: str, mode: Mode | None) -> None:
        """A per-agent override set through the admin API: every worker applies it (the
        first one's audit record stands for all)."""
        line = _mode_line(agent_id, mode.value if mode else None)
        for index, proc in self._procs.items():
            if index in self._ready and proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.write(line)

    def reload(self) -> None:
        """SIGHUP: each worker re-reads the policy, the feeds and the agents itself (one
        still starting is sent it once it serves, `_spawn`)."""
        self._reloads += 1
        for index, proc in self._procs.items():
            if index in self._ready and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGHUP)

    async def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(ValueError):
            self.pdp.mode_listeners.remove(self._mode)
        for task in (*self._watchers, *self._listeners.values()):
            task.cancel()
        for proc in self._procs.values():
            if proc.stdin is not None:
                proc.stdin.close()
        for index, proc in self._procs.items():
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                log.error("postgres worker %d did not stop in time; killed", index)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        shutil.rmtree(self.slot.directory, ignore_errors=True)


def _log_format() -> str:
    from interlock.logs import JsonFormatter

    handlers = logging.getLogger().handlers
    return "json" if any(isinstance(h.formatter, JsonFormatter) for h in handlers) else "text"


def _mode_line(agent_id: str, mode: str | None) -> bytes:
    """A per-agent override as a worker reads it on its stdin (None clears it)."""
    return json.dumps({"mode": [agent_id, mode]}).encode() + b"\n"
