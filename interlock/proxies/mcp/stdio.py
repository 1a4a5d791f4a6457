"""The gateway's pipes: this process's stdin/stdout (the host) and a child server's.

The child's stderr is this process's stderr (the host shows server logs as it would
without interlock). The gateway ends with the child, with its exit status; when the host
closes stdin or the gateway is told to stop (SIGTERM, SIGINT), holds are withdrawn, the
child's stdin is closed and the child is given time to exit, then terminated, as the MCP
stdio transport asks of a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import sys
import threading
from collections.abc import Callable, Mapping
from typing import BinaryIO, Protocol

from interlock.errors import UsageError
from interlock.proxies.mcp.gateway import Gateway
from interlock.proxies.mcp.relay import MAX_MESSAGE, Side

EXIT_GRACE_S = 2.0
"""How long the child has to exit after its stdin closes, and again after SIGTERM."""


async def _lines(
    reader: asyncio.StreamReader, on_line: Callable[[bytes], None], too_long: Callable[[], None]
) -> None:
    """Feed each line of `reader` to `on_line`; an over-long line is skipped whole (its
    sender is told) and reading goes on at the next line."""
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                on_line(exc.partial)
            return
        except asyncio.LimitOverrunError:
            too_long()
            while True:
                try:
                    await reader.readuntil(b"\n")
                    break
                except asyncio.LimitOverrunError as exc:
                    await reader.readexactly(exc.consumed)
                except asyncio.IncompleteReadError:
                    return
            continue
        on_line(line)


def exit_code(returncode: int) -> int:
    """A child killed by signal N ends the gateway as a shell reports it: 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class Out(Protocol):
    """Where lines are written: a pipe's StreamWriter, or a blocking file."""

    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...

    async def drain(self) -> None: ...


class _FileOut:
    """stdout that is a file or a terminal (no pipe transport for those): plain writes."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.out.flush()

    def is_closing(self) -> bool:
        return self.out.closed

    async def drain(self) -> None:
        return None


def _is_pipe(f: BinaryIO) -> bool:
    mode = os.fstat(f.fileno()).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _read_in_thread(f: BinaryIO, reader: asyncio.StreamReader) -> None:
    """stdin that is a file or a device (/dev/null): read by a thread, fed to `reader`."""
    loop = asyncio.get_running_loop()

    def pump() -> None:
        while data := os.read(f.fileno(), 65536):
            loop.call_soon_threadsafe(reader.feed_data, data)
        loop.call_soon_threadsafe(reader.feed_eof)

    threading.Thread(target=pump, name="interlock-mcp-stdin", daemon=True).start()


async def _stdio(stdin: BinaryIO, stdout: BinaryIO) -> tuple[asyncio.StreamReader, Out]:
    """The host's side as a reader and a writer: pipes (what hosts give) get non-blocking
    transports; anything else (a file, /dev/null, a terminal) plain reads and writes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_MESSAGE + 1, loop=loop)
    if _is_pipe(stdin):
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        await loop.connect_read_pipe(lambda: protocol, stdin)
    else:
        _read_in_thread(stdin, reader)
    if not _is_pipe(stdout):
        return reader, _FileOut(stdout)
    transport, flow = await loop.connect_write_pipe(
        lambda: asyncio.streams.FlowControlMixin(loop=loop), stdout
    )
    return reader, asyncio.StreamWriter(transport, flow, None, loop)


async def run(
    argv: list[str],
    make_gateway: Callable[[Callable[[Side, bytes], None]], Gateway],
    env: Mapping[str, str] | None = None,
    stop: asyncio.Event | None = None,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
) -> int:
    """Relay until the child exits, the host goes away, or `stop` is set (a signal, the
    agent's isolation); the exit status to end with. `env` is the child's environment
    (the agent's token is not the server's business)."""
    try:
        child = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            limit=MAX_MESSAGE + 1,
        )
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot start the server {argv[0]!r}: {exc}") from None
    assert child.stdin is not None
    assert child.stdout is not None
    host_in, host_out = await _stdio(stdin or sys.stdin.buffer, stdout or sys.stdout.buffer)
    to_server = child.stdin

    def send(to: Side, data: bytes) -> None:
        target = host_out if to is Side.HOST else to_server
        if not target.is_closing():
            target.write(data)

    gateway = make_gateway(send)
    too_long = f"message over {MAX_MESSAGE} bytes"
    host = asyncio.create_task(
        _lines(host_in, gateway.host_line, lambda: gateway.too_long(Side.HOST, too_long))
    )
    server = asyncio.create_task(
        _lines(child.stdout, gateway.server_line, lambda: gateway.too_long(Side.SERVER, too_long))
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({host, server, stopping}, return_when=asyncio.FIRST_COMPLETED)
        await gateway.close()
        if not server.done():
            # The host is gone (or we were told to stop): the child's turn to end.
            with contextlib.suppress(ConnectionError):
                to_server.close()
            await _end(child)
        with contextlib.suppress(ConnectionError):
            await host_out.drain()
        returncode = await child.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        for task in (host, server, stopping):
            task.cancel()
        if child.returncode is None:
            child.kill()
            await child.wait()
    return exit_code(returncode)


async def _end(child: asyncio.subprocess.Process) -> None:
    """Stdin closed: wait, then SIGTERM, wait, then SIGKILL."""
    for step in (None, child.terminate, child.kill):
        if step is not None:
            with contextlib.suppress(ProcessLookupError):
                step()
        try:
            await asyncio.wait_for(child.wait(), EXIT_GRACE_S)
            return
        except TimeoutError:
            continue
