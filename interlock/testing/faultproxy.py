"""A TCP fault proxy for tests: forwards to a dependency, or delays, freezes or cuts it.

Put it between interlock and a dependency (Redis, the audit database, an upstream) and
switch its `mode` under live traffic:

- `pass`: forward both ways; `latency` seconds are added to every chunk each way.
- `freeze`: keep every connection open and accept new ones, forward nothing (what a
  SIGSTOPped process or a black-holed route looks like from outside).
- `down`: stop listening (new connections are refused) and reset the open ones (a
  killed process, a restarted host).

Back to `pass`, it listens on the same port again and frozen bytes flow in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Literal

Mode = Literal["pass", "freeze", "down"]
CHUNK = 64 * 1024


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a dying peer's kernel would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    def __init__(self, host: str, port: int, latency: float = 0.0) -> None:
        self.target = (host, port)
        self.latency = latency
        self.mode: Mode = "pass"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen (on a free port the first time, the same one after `down`)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def set(self, mode: Mode) -> None:
        if mode == self.mode:
            return
        previous, self.mode = self.mode, mode
        if mode == "freeze":
            self._flowing.clear()
        elif mode == "down":
            if self._server is not None:
                self._server.close()
                self._server = None
            for writer in list(self._open):
                _reset(writer)
            self._open.clear()
            self._flowing.set()
        else:
            if previous == "down":
                await self.start()
            self._flowing.set()

    async def stop(self) -> None:
        await self.set("down")
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        self._open.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(CHUNK):
                await self._flowing.wait()
                if self.latency:
                    await asyncio.sleep(self.latency)
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if dst in self._open:
                self._open.discard(dst)
                dst.close()
