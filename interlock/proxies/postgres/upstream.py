"""Logging the proxy in to the upstream PostgreSQL (SCRAM-SHA-256, MD5 or cleartext)."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import struct
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from interlock.proxies.postgres import messages as m
from interlock.proxies.postgres.codec import BackendReader, ProtocolError
from interlock.proxies.postgres.scram import MECHANISM, ScramClient, ScramError

CONNECT_TIMEOUT_S = 10.0


class UpstreamError(Exception):
    """The upstream refused or broke the login; the message is safe to show a client."""


@dataclass(frozen=True, slots=True)
class Upstream:
    host: str
    port: int
    user: str
    password: str
    database: str

    @classmethod
    def parse(cls, url: str) -> Upstream:
        u = urlsplit(url)
        return cls(
            u.hostname or "127.0.0.1",
            u.port or 5432,
            unquote(u.username or ""),
            unquote(u.password or ""),
            unquote(u.path.lstrip("/")) or "postgres",
        )


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    backend: BackendReader
    pid: int
    key: int
    parameters: list[m.ParameterStatus]
    status: str

    async def next(self) -> m.Message:
        while (msg := self.backend.next()) is None:
            data = await self.reader.read(65536)
            if not data:
                raise UpstreamError("the database closed the connection")
            self.backend.feed(data)
        return msg


async def connect(
    up: Upstream, params: dict[str, str], tls: ssl.SSLContext | None = None
) -> Connection:
    """Open and authenticate a connection; `params` are the client's allowed startup
    parameters (database, application_name, ...). With `tls`, the connection must be
    encrypted: a server that declines SSLRequest is refused."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(up.host, up.port), CONNECT_TIMEOUT_S
        )
        if tls is not None:
            writer.write(m.SSLRequest().encode())
            await writer.drain()
            answer = await asyncio.wait_for(reader.readexactly(1), CONNECT_TIMEOUT_S)
            if answer != b"S":
                writer.close()
                raise UpstreamError("the database does not accept TLS")
            await writer.start_tls(tls, server_hostname=up.host)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
        raise UpstreamError(f"cannot reach the database: {exc}") from exc
    conn = Connection(reader, writer, BackendReader(), 0, 0, [], "I")
    startup = {"database": up.database, **params, "user": up.user}
    writer.write(m.StartupMessage(startup).encode())
    try:
        await asyncio.wait_for(_login(conn, up), CONNECT_TIMEOUT_S)
    except (TimeoutError, ProtocolError, ScramError, OSError) as exc:
        writer.close()
        raise UpstreamError(f"database login failed: {exc}") from exc
    except UpstreamError:
        writer.close()
        raise
    return conn


async def _login(conn: Connection, up: Upstream) -> None:
    scram: ScramClient | None = None
    while True:
        msg = await conn.next()
        if isinstance(msg, m.ErrorResponse):
            raise UpstreamError(f"database refused the login: {msg.message}")
        if isinstance(msg, m.Authentication):
            if msg.code == 0:
                continue
            if msg.code == 3:
                conn.writer.write(m.AuthResponse(m.cstr(up.password)).encode())
            elif msg.code == 5:
                inner = hashlib.md5((up.password + up.user).encode()).hexdigest()  # noqa: S324
                outer = hashlib.md5(inner.encode() + msg.data[:4]).hexdigest()  # noqa: S324
                conn.writer.write(m.AuthResponse(m.cstr("md5" + outer)).encode())
            elif msg.code == 10:
                if MECHANISM.encode() not in msg.data.split(b"\0"):
                    raise UpstreamError("database offers no SCRAM-SHA-256")
                scram = ScramClient(up.password)
                first = scram.first()
                body = m.cstr(MECHANISM) + struct.pack("!i", len(first)) + first
                conn.writer.write(m.AuthResponse(body).encode())
            elif msg.code == 11 and scram is not None:
                conn.writer.write(m.AuthResponse(scram.final(msg.data)).encode())
            elif msg.code == 12 and scram is not None:
                scram.verify(msg.data)
            else:
                raise UpstreamError(f"unsupported authentication request {msg.code}")
        elif isinstance(msg, m.ParameterStatus):
            conn.parameters.append(msg)
        elif isinstance(msg, m.BackendKeyData):
            conn.pid, conn.key = msg.pid, msg.key
        elif isinstance(msg, m.ReadyForQuery):
            conn.status = msg.status
            return
        elif isinstance(msg, m.NoticeResponse):
            continue
        else:
            raise UpstreamError(f"unexpected message during login: {type(msg).__name__}")


async def cancel(up: Upstream, pid: int, key: int) -> None:
    """Send a CancelRequest for an upstream backend (fire and forget, as libpq does)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(up.host, up.port), 5)
    except (OSError, TimeoutError):
        return
    writer.write(m.CancelRequest(pid, key).encode())
    try:
        await writer.drain()
    finally:
        writer.close()
