"""Framing and decoding of PostgreSQL protocol 3.0 byte streams, without any I/O.

`FrontendReader` turns what a client sends into messages, `BackendReader` what a server
sends. Feed bytes with `feed`, take messages with `next` until it returns None. Anything
malformed raises `ProtocolError` saying whose fault it is; nothing is ever guessed.
"""

from __future__ import annotations

import struct

from interlock.proxies.postgres import messages as m

MAX_STARTUP_PACKET = 10_000
"""PostgreSQL's own MAX_STARTUP_PACKET_LENGTH (src/include/libpq/pqcomm.h)."""
MAX_CLIENT_MESSAGE = 64 * 1024 * 1024
"""Largest client message accepted. PostgreSQL allows 1 GB (PQ_LARGE_MESSAGE_LIMIT); an
agent sending more than 64 MiB in one statement or COPY chunk is refused, which bounds the
memory one connection can pin."""
MAX_SERVER_MESSAGE = 1024 * 1024 * 1024
"""The server's own limit on one message (a row can be up to 1 GB)."""
SMALL_MESSAGES = frozenset(b"SHXc")
"""Messages with an empty body: Sync, Flush, Terminate, CopyDone."""
FRONTEND_TYPES = frozenset(b"QPBDECSHXpdcfF")
"""Every message type a client may send after startup (PostgreSQL docs, Message Formats)."""
_LENGTH = struct.Struct("!i")
_UINT16 = struct.Struct("!H")


class ProtocolError(Exception):
    """Malformed protocol data. `remote` is True when the peer sent it."""

    def __init__(self, message: str, *, remote: bool = True) -> None:
        super().__init__(message)
        self.remote = remote


class _Cursor:
    """Bounds-checked reads over one message body."""

    __slots__ = ("body", "pos")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.body):
            raise ProtocolError("message shorter than its fields")
        out = self.body[self.pos : self.pos + n]
        self.pos += n
        return out

    def int32(self) -> int:
        return int(struct.unpack("!i", self._take(4))[0])

    def uint32(self) -> int:
        return int(struct.unpack("!I", self._take(4))[0])

    def int16(self) -> int:
        return int(struct.unpack("!h", self._take(2))[0])

    def uint16(self) -> int:
        return int(struct.unpack("!H", self._take(2))[0])

    def byte(self) -> str:
        return self._take(1).decode("latin-1")

    def cstr(self) -> str:
        end = self.body.find(b"\0", self.pos)
        if end < 0:
            raise ProtocolError("string field without its terminating NUL")
        raw = self.body[self.pos : end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("string field is not valid UTF-8") from None

    def rest(self) -> bytes:
        out = self.body[self.pos :]
        self.pos = len(self.body)
        return out

    def done(self) -> None:
        if self.pos != len(self.body):
            raise ProtocolError("trailing bytes after the message fields")


def _fields(c: _Cursor) -> dict[str, str]:
    out: dict[str, str] = {}
    while True:
        code = c.byte()
        if code == "\0":
            break
        out[code] = c.cstr()
    c.done()
    return out


class _Reader:
    """A byte buffer consumed from `_pos`: frames are found by type and length without
    copying, and the consumed prefix is dropped once per `feed`, not once per message."""

    def __init__(self, max_message: int) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.max_message = max_message

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    @property
    def data(self) -> bytearray:
        """The buffer `next_frame` positions index into (valid until the next `feed`)."""
        return self._buf

    def next_frame(self) -> tuple[int, int, int] | None:
        """(type byte, start, end) of the next whole typed message in `data`, checked
        like every message (type, length bounds), its body not read; None until one has
        arrived."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 5:
            return None
        kind = buf[pos]
        if self._role == "client" and kind not in FRONTEND_TYPES:
            # Refuse at once rather than wait for a body whose length is garbage.
            raise ProtocolError(f"unknown frontend message type {bytes([kind])!r}")
        (length,) = _LENGTH.unpack_from(buf, pos + 1)
        if length < 4:
            raise ProtocolError(f"message length {length} is below the minimum of 4")
        if length > self.max_message:
            raise ProtocolError(
                f"message of {length} bytes exceeds the {self.max_message} byte limit"
            )
        if kind in SMALL_MESSAGES and self._role == "client" and length != 4:
            raise ProtocolError(f"message {bytes([kind])!r} must have an empty body")
        end = pos + 1 + length
        if len(buf) < end:
            return None
        self._pos = end
        return kind, pos, end

    def _typed(self) -> tuple[bytes, bytes] | None:
        got = self.next_frame()
        if got is None:
            return None
        kind, start, end = got
        return bytes((kind,)), bytes(self._buf[start + 5 : end])

    _role = "server"


class FrontendReader(_Reader):
    """Messages from a client: first the startup packet(s), then typed messages."""

    _role = "client"

    def __init__(self, max_message: int = MAX_CLIENT_MESSAGE) -> None:
        super().__init__(max_message)
        self.in_startup = True

    def next(self) -> m.Message | None:
        if self.in_startup:
            return self._startup()
        got = self._typed()
        if got is None:
            return None
        kind, body = got
        return decode_frontend(kind, body)

    def _startup(self) -> m.Message | None:
        # Startup packets come before any typed frame, so `_pos` is 0 here.
        if len(self._buf) < 4:
            return None
        (length,) = struct.unpack("!i", self._buf[:4])
        if length < 8 or length > MAX_STARTUP_PACKET:
            raise ProtocolError(f"startup packet length {length} is out of range")
        if len(self._buf) < length:
            return None
        body = bytes(self._buf[4:length])
        del self._buf[:length]
        (code,) = struct.unpack("!I", body[:4])
        if code == m.SSL_REQUEST_CODE and length == 8:
            return m.SSLRequest()
        if code == m.GSSENC_REQUEST_CODE and length == 8:
            return m.GSSENCRequest()
        if code == m.CANCEL_REQUEST_CODE and length == 16:
            pid, key = struct.unpack("!II", body[4:12])
            return m.CancelRequest(pid, key)
        if code >> 16 != 3:
            raise ProtocolError(f"unsupported protocol version {code >> 16}.{code & 0xFFFF}")
        c = _Cursor(body[4:])
        params: dict[str, str] = {}
        while True:
            key = c.cstr()
            if not key:
                break
            params[key] = c.cstr()
        c.done()
        if "user" not in params:
            raise ProtocolError("startup packet has no user")
        self.in_startup = False
        return m.StartupMessage(params, code)


def decode_frontend(kind: bytes, body: bytes) -> m.Message:
    c = _Cursor(body)
    if kind == b"Q":
        sql = c.cstr()
        c.done()
        return m.Query(sql)
    if kind == b"P":
        name, sql = c.cstr(), c.cstr()
        n = c.uint16()
        types = tuple(c.uint32() for _ in range(n))
        c.done()
        return m.Parse(name, sql, types)
    if kind == b"B":
        portal, statement = c.cstr(), c.cstr()
        formats = tuple(c.uint16() for _ in range(c.uint16()))
        params: list[bytes | None] = []
        for _ in range(c.uint16()):
            size = c.int32()
            if size < -1:
                raise ProtocolError(f"parameter length {size} is negative")
            params.append(None if size == -1 else c._take(size))
        results = tuple(c.uint16() for _ in range(c.uint16()))
        c.done()
        if any(f not in (0, 1) for f in (*formats, *results)):
            raise ProtocolError("format codes must be 0 (text) or 1 (binary)")
        return m.Bind(portal, statement, formats, tuple(params), results)
    if kind in (b"D", b"C"):
        which = c.byte()
        name = c.cstr()
        c.done()
        if which not in ("S", "P"):
            raise ProtocolError(f"Describe/Close target {which!r} is neither S nor P")
        return m.Describe(which, name) if kind == b"D" else m.Close(which, name)
    if kind == b"E":
        portal = c.cstr()
        rows = c.uint32()
        c.done()
        return m.Execute(portal, rows)
    if kind == b"S":
        return m.Sync()
    if kind == b"H":
        return m.Flush()
    if kind == b"X":
        return m.Terminate()
    if kind == b"p":
        return m.AuthResponse(body)
    if kind == b"d":
        return m.CopyData(body)
    if kind == b"c":
        return m.CopyDone()
    if kind == b"f":
        msg = c.cstr()
        c.done()
        return m.CopyFail(msg)
    if kind == b"F":
        return m.FunctionCall(body)
    raise ProtocolError(f"unknown frontend message type {kind!r}")


def bind_names(buf: bytes | bytearray, start: int, end: int) -> tuple[str, str]:
    """Portal and statement names of the Bind whose body is `buf[start:end]`, every
    field checked as `decode_frontend` checks it (same errors, same order), the
    parameters not copied: what the relay needs of a Bind, at a fraction of decoding it."""
    portal, pos = _cstr_at(buf, start, end)
    statement, pos = _cstr_at(buf, pos, end)
    formats_ok = True
    for section in range(3):
        if pos + 2 > end:
            raise ProtocolError("message shorter than its fields")
        (count,) = _UINT16.unpack_from(buf, pos)
        pos += 2
        if section != 1:
            if pos + 2 * count > end:
                raise ProtocolError("message shorter than its fields")
            codes = struct.unpack_from(f"!{count}H", buf, pos)
            formats_ok = formats_ok and all(f in (0, 1) for f in codes)
            pos += 2 * count
            continue
        for _ in range(count):
            if pos + 4 > end:
                raise ProtocolError("message shorter than its fields")
            (size,) = _LENGTH.unpack_from(buf, pos)
            if size < -1:
                raise ProtocolError(f"parameter length {size} is negative")
            pos += 4 + max(size, 0)
            if pos > end:
                raise ProtocolError("message shorter than its fields")
    if pos != end:
        raise ProtocolError("trailing bytes after the message fields")
    if not formats_ok:
        raise ProtocolError("format codes must be 0 (text) or 1 (binary)")
    return portal, statement


def _cstr_at(buf: bytes | bytearray, pos: int, end: int) -> tuple[str, int]:
    stop = buf.find(b"\0", pos, end)
    if stop < 0:
        raise ProtocolError("string field without its terminating NUL")
    try:
        return buf[pos:stop].decode("utf-8"), stop + 1
    except UnicodeDecodeError:
        raise ProtocolError("string field is not valid UTF-8") from None


class BackendReader(_Reader):
    """Messages from a server. RowDescription, errors and the session-level messages are
    decoded; DataRow and the rest stay `Raw` (decode rows with `decode_data_row`)."""

    def __init__(self, max_message: int = MAX_SERVER_MESSAGE) -> None:
        super().__init__(max_message)

    def next(self) -> m.Message | None:
        got = self._typed()
        if got is None:
            return None
        kind, body = got
        return decode_backend(kind, body)


def decode_backend(kind: bytes, body: bytes) -> m.Message:
    c = _Cursor(body)
    if kind == b"R":
        code = c.uint32()
        return m.Authentication(code, c.rest())
    if kind == b"S":
        name, value = c.cstr(), c.cstr()
        c.done()
        return m.ParameterStatus(name, value)
    if kind == b"K":
        pid, key = c.uint32(), c.uint32()
        c.done()
        return m.BackendKeyData(pid, key)
    if kind == b"Z":
        status = c.byte()
        c.done()
        if status not in ("I", "T", "E"):
            raise ProtocolError(f"unknown transaction status {status!r}")
        return m.ReadyForQuery(status)
    if kind == b"T":
        return decode_row_description(body)
    if kind == b"C":
        tag = c.cstr()
        c.done()
        return m.CommandComplete(tag)
    if kind == b"E":
        return m.ErrorResponse(_fields(c))
    if kind == b"N":
        return m.NoticeResponse(_fields(c))
    return m.Raw(kind, body)


def decode_row_description(body: bytes) -> m.RowDescription:
    c = _Cursor(body)
    fields = []
    for _ in range(c.uint16()):
        name = c.cstr()
        table, col, typ, size, mod, fmt = (
            c.uint32(),
            c.int16(),
            c.uint32(),
            c.int16(),
            c.int32(),
            c.int16(),
        )
        fields.append(m.Field(name, table, col, typ, size, mod, fmt))
    c.done()
    return m.RowDescription(tuple(fields))


def decode_data_row(body: bytes) -> m.DataRow:
    c = _Cursor(body)
    values: list[bytes | None] = []
    for _ in range(c.uint16()):
        size = c.int32()
        if size < -1:
            raise ProtocolError(f"column length {size} is negative")
        values.append(None if size == -1 else c._take(size))
    c.done()
    return m.DataRow(tuple(values))
