"""PostgreSQL protocol 3.0 messages as small frozen dataclasses, with their encodings.

Names and layouts follow the PostgreSQL documentation, chapter "Frontend/Backend Protocol",
section "Message Formats". Only what the proxy needs to understand is decoded into fields;
everything else travels as `Raw` and is forwarded byte for byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Protocol

PROTOCOL_3_0 = 196608
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102


class Message(Protocol):
    """Anything the codec yields: every message can turn itself back into bytes."""

    def encode(self) -> bytes: ...


def cstr(text: str) -> bytes:
    return text.encode("utf-8") + b"\0"


def frame(kind: bytes, body: bytes) -> bytes:
    """A typed message: one type byte, an int32 length that counts itself, the body."""
    return kind + struct.pack("!I", len(body) + 4) + body


# --- frontend: startup phase (no type byte) -------------------------------------------


@dataclass(frozen=True, slots=True)
class StartupMessage:
    params: dict[str, str]
    protocol: int = PROTOCOL_3_0

    def encode(self) -> bytes:
        body = struct.pack("!I", self.protocol)
        body += b"".join(cstr(k) + cstr(v) for k, v in self.params.items()) + b"\0"
        return struct.pack("!I", len(body) + 4) + body


@dataclass(frozen=True, slots=True)
class SSLRequest:
    def encode(self) -> bytes:
        return struct.pack("!II", 8, SSL_REQUEST_CODE)


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    def encode(self) -> bytes:
        return struct.pack("!II", 8, GSSENC_REQUEST_CODE)


@dataclass(frozen=True, slots=True)
class CancelRequest:
    pid: int
    key: int

    def encode(self) -> bytes:
        return struct.pack("!IIII", 16, CANCEL_REQUEST_CODE, self.pid, self.key)


# --- frontend: typed messages ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    sql: str

    def encode(self) -> bytes:
        return frame(b"Q", cstr(self.sql))


@dataclass(frozen=True, slots=True)
class Parse:
    name: str
    sql: str
    param_types: tuple[int, ...] = ()

    def encode(self) -> bytes:
        body = cstr(self.name) + cstr(self.sql) + struct.pack("!H", len(self.param_types))
        body += b"".join(struct.pack("!I", t) for t in self.param_types)
        return frame(b"P", body)


@dataclass(frozen=True, slots=True)
class Bind:
    portal: str
    statement: str
    param_formats: tuple[int, ...]
    params: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]

    def encode(self) -> bytes:
        body = cstr(self.portal) + cstr(self.statement)
        body += struct.pack("!H", len(self.param_formats))
        body += b"".join(struct.pack("!H", f) for f in self.param_formats)
        body += struct.pack("!H", len(self.params))
        for p in self.params:
            body += struct.pack("!i", -1) if p is None else struct.pack("!i", len(p)) + p
        body += struct.pack("!H", len(self.result_formats))
        body += b"".join(struct.pack("!H", f) for f in self.result_formats)
        return frame(b"B", body)


@dataclass(frozen=True, slots=True)
class Describe:
    kind: str  # "S" statement or "P" portal
    name: str

    def encode(self) -> bytes:
        return frame(b"D", self.kind.encode() + cstr(self.name))


@dataclass(frozen=True, slots=True)
class Execute:
    portal: str
    max_rows: int = 0

    def encode(self) -> bytes:
        return frame(b"E", cstr(self.portal) + struct.pack("!I", self.max_rows))


@dataclass(frozen=True, slots=True)
class Close:
    kind: str  # "S" or "P"
    name: str

    def encode(self) -> bytes:
        return frame(b"C", self.kind.encode() + cstr(self.name))


@dataclass(frozen=True, slots=True)
class Sync:
    def encode(self) -> bytes:
        return frame(b"S", b"")


@dataclass(frozen=True, slots=True)
class Flush:
    def encode(self) -> bytes:
        return frame(b"H", b"")


@dataclass(frozen=True, slots=True)
class Terminate:
    def encode(self) -> bytes:
        return frame(b"X", b"")


@dataclass(frozen=True, slots=True)
class FunctionCall:
    body: bytes

    def encode(self) -> bytes:
        return frame(b"F", self.body)


@dataclass(frozen=True, slots=True)
class AuthResponse:
    """'p': PasswordMessage, SASLInitialResponse or SASLResponse; the meaning depends on
    the authentication exchange under way, so the session decodes it, not the codec."""

    body: bytes

    def encode(self) -> bytes:
        return frame(b"p", self.body)


@dataclass(frozen=True, slots=True)
class CopyData:
    data: bytes

    def encode(self) -> bytes:
        return frame(b"d", self.data)


@dataclass(frozen=True, slots=True)
class CopyDone:
    def encode(self) -> bytes:
        return frame(b"c", b"")


@dataclass(frozen=True, slots=True)
class CopyFail:
    message: str

    def encode(self) -> bytes:
        return frame(b"f", cstr(self.message))


# --- backend ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authentication:
    """'R': code 0 ok, 3 cleartext, 5 md5 (data = salt), 10 SASL (data = mechanisms),
    11 SASLContinue, 12 SASLFinal."""

    code: int
    data: bytes = b""

    def encode(self) -> bytes:
        return frame(b"R", struct.pack("!I", self.code) + self.data)


@dataclass(frozen=True, slots=True)
class ParameterStatus:
    name: str
    value: str

    def encode(self) -> bytes:
        return frame(b"S", cstr(self.name) + cstr(self.value))


@dataclass(frozen=True, slots=True)
class BackendKeyData:
    pid: int
    key: int

    def encode(self) -> bytes:
        return frame(b"K", struct.pack("!II", self.pid, self.key))


@dataclass(frozen=True, slots=True)
class ReadyForQuery:
    status: str  # "I" idle, "T" in transaction, "E" failed transaction

    def encode(self) -> bytes:
        return frame(b"Z", self.status.encode())


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    table_oid: int
    column: int
    type_oid: int
    type_size: int
    type_mod: int
    format: int


@dataclass(frozen=True, slots=True)
class RowDescription:
    fields: tuple[Field, ...]

    def encode(self) -> bytes:
        body = struct.pack("!H", len(self.fields))
        for f in self.fields:
            body += cstr(f.name) + struct.pack(
                "!IhIhih", f.table_oid, f.column, f.type_oid, f.type_size, f.type_mod, f.format
            )
        return frame(b"T", body)


@dataclass(frozen=True, slots=True)
class DataRow:
    values: tuple[bytes | None, ...]

    def encode(self) -> bytes:
        body = struct.pack("!H", len(self.values))
        for v in self.values:
            body += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v
        return frame(b"D", body)


@dataclass(frozen=True, slots=True)
class CommandComplete:
    tag: str

    def encode(self) -> bytes:
        return frame(b"C", cstr(self.tag))


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """Fields by their one-letter codes: S severity, V, C SQLSTATE, M message, D detail..."""

    fields: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        body = b"".join(k.encode() + cstr(v) for k, v in self.fields.items()) + b"\0"
        return frame(b"E", body)

    @property
    def code(self) -> str:
        return self.fields.get("C", "")

    @property
    def message(self) -> str:
        return self.fields.get("M", "")


@dataclass(frozen=True, slots=True)
class NoticeResponse:
    fields: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        body = b"".join(k.encode() + cstr(v) for k, v in self.fields.items()) + b"\0"
        return frame(b"N", body)


@dataclass(frozen=True, slots=True)
class Raw:
    """Any message the proxy forwards without looking inside."""

    kind: bytes
    body: bytes

    def encode(self) -> bytes:
        return frame(self.kind, self.body)


def error(
    message: str, code: str = "42501", severity: str = "ERROR", detail: str | None = None
) -> ErrorResponse:
    """An ErrorResponse as PostgreSQL itself would phrase it."""
    fields = {"S": severity, "V": severity, "C": code, "M": message}
    if detail:
        fields["D"] = detail
    return ErrorResponse(fields)
