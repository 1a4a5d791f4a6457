"""A raw-socket HTTP/1.1 upstream that logs every request it reads, per connection.

It reads framing the way a plain HTTP/1.1 server does (RFC 9112 6.3): Content-Length,
else chunked, else no body; whatever follows is the next request. So a body forwarded
without framing shows up in its log as a second request, which is what the smuggling
tests look for. A WebSocket upgrade is answered with 101, after which bytes are logged
as tunnelled data, not parsed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
from dataclasses import dataclass, field


@dataclass
class Received:
    conn: int
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


@dataclass
class RawUpstream:
    tls: ssl.SSLContext | None = None
    requests: list[Received] = field(default_factory=list)
    tunnelled: dict[int, bytearray] = field(default_factory=dict)
    port: int = 0
    _server: asyncio.Server | None = None
    _conns: int = 0
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns += 1
        conn = self._conns
        self._writers.append(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
                    return
                line, *lines = head[:-4].split(b"\r\n")
                method, target, _ = [*line.split(b" ", 2), b"", b""][:3]
                headers = [(n.strip(), v.strip()) for n, _, v in (x.partition(b":") for x in lines)]
                got = Received(conn, method, target, headers, b"")
                got.body = await self._body(reader, got)
                self.requests.append(got)
                self.arrived.set()
                if [v.lower() for v in got.header(b"upgrade")] == [b"websocket"]:
                    await self._websocket(reader, writer, got)
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        finally:
            writer.close()

    async def _body(self, reader: asyncio.StreamReader, got: Received) -> bytes:
        if got.header(b"content-length"):
            return await reader.readexactly(int(got.header(b"content-length")[0]))
        if got.header(b"transfer-encoding"):
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass  # trailer fields
                    return body
                body += (await reader.readexactly(size + 2))[:-2]
        return b""

    async def _websocket(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, got: Received
    ) -> None:
        key = got.header(b"sec-websocket-key")[0]
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()  # noqa: S324 (RFC 6455)
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        await writer.drain()
        data = self.tunnelled.setdefault(got.conn, bytearray())
        while chunk := await reader.read(65536):
            data += chunk
            self.arrived.set()
