"""The sans-IO codec: round trips, partial reads, limits, and hostile bytes."""

from __future__ import annotations

import contextlib
import re
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.proxies.postgres import messages as m
from interlock.proxies.postgres.codec import (
    MAX_STARTUP_PACKET,
    BackendReader,
    FrontendReader,
    ProtocolError,
    bind_names,
    decode_data_row,
    decode_frontend,
)

FRONTEND = [
    m.Query("select 1; select 2"),
    m.Parse("s1", "select $1::int", (23,)),
    m.Bind("p1", "s1", (0,), (b"42", None), (1,)),
    m.Describe("S", "s1"),
    m.Execute("p1", 10),
    m.Close("P", "p1"),
    m.Sync(),
    m.Flush(),
    m.CopyData(b"1\tx\n"),
    m.CopyDone(),
    m.CopyFail("stop"),
    m.AuthResponse(b"SCRAM-SHA-256\0\0\0\0\x05n,,n="),
    m.FunctionCall(b"\0\0\0\x01"),
    m.Terminate(),
]
BACKEND = [
    m.Authentication(10, b"SCRAM-SHA-256\0\0"),
    m.ParameterStatus("server_version", "15.8"),
    m.BackendKeyData(1234, 5678),
    m.RowDescription((m.Field("id", 16384, 1, 23, 4, -1, 0),)),
    m.CommandComplete("SELECT 1"),
    m.ErrorResponse({"S": "ERROR", "C": "42501", "M": "denied"}),
    m.NoticeResponse({"S": "NOTICE", "M": "hi"}),
    m.ReadyForQuery("T"),
    m.Raw(b"D", m.DataRow((b"1", None)).encode()[5:]),
]


def read_all(reader: Any, data: bytes, step: int) -> list[Any]:
    out = []
    for i in range(0, len(data), step):
        reader.feed(data[i : i + step])
        while (msg := reader.next()) is not None:
            out.append(msg)
    return out


@pytest.mark.parametrize("step", [1, 3, 7, 1000])
def test_frontend_round_trip_in_any_chunking(step: int) -> None:
    startup = m.StartupMessage({"user": "reporter", "database": "app"})
    data = startup.encode() + b"".join(x.encode() for x in FRONTEND)
    assert read_all(FrontendReader(), data, step) == [startup, *FRONTEND]


@pytest.mark.parametrize("step", [1, 5, 1000])
def test_backend_round_trip(step: int) -> None:
    data = b"".join(x.encode() for x in BACKEND)
    assert read_all(BackendReader(), data, step) == BACKEND


def test_data_rows_decode() -> None:
    row = m.DataRow((b"abc", None, b""))
    assert decode_data_row(row.encode()[5:]) == row


@pytest.mark.parametrize("msg", [m.SSLRequest(), m.GSSENCRequest(), m.CancelRequest(7, 9)])
def test_special_startup_packets(msg: Any) -> None:
    r = FrontendReader()
    r.feed(msg.encode())
    assert r.next() == msg
    assert r.in_startup, "a real StartupMessage still has to follow"


def startup_with_length(length: int) -> bytes:
    return struct.pack("!iI", length, m.PROTOCOL_3_0) + b"user\0x\0\0"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (struct.pack("!i", -5), "out of range"),
        (struct.pack("!i", 4), "out of range"),
        (struct.pack("!i", MAX_STARTUP_PACKET + 1), "out of range"),
        (struct.pack("!iI", 8, 2 << 16), "unsupported protocol version 2.0"),
        (struct.pack("!iI", 12, m.PROTOCOL_3_0) + b"user", "terminating NUL"),
        (m.StartupMessage({"database": "x"}).encode(), "no user"),
        (struct.pack("!iI", 16, m.PROTOCOL_3_0) + b"user\0\xff\xfe\0\0", "not valid UTF-8"),
    ],
)
def test_bad_startup_packets(data: bytes, message: str) -> None:
    r = FrontendReader()
    r.feed(data)
    with pytest.raises(ProtocolError, match=message):
        r.next()


def started() -> FrontendReader:
    r = FrontendReader(max_message=1024)
    r.feed(m.StartupMessage({"user": "u"}).encode())
    assert isinstance(r.next(), m.StartupMessage)
    return r


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"Q" + struct.pack("!i", 3), "below the minimum"),
        (b"Q" + struct.pack("!i", -1), "below the minimum"),
        (b"Q" + struct.pack("!i", 2048), "exceeds the 1024 byte limit"),
        (b"S" + struct.pack("!i", 5) + b"x", "empty body"),
        (b"Q" + struct.pack("!i", 6) + b"ab", "terminating NUL"),
        (b"Q" + struct.pack("!i", 7) + b"a\0b", "trailing bytes"),
        (b"Z" + struct.pack("!i", 4), "unknown frontend message type"),
        (m.frame(b"B", b"\0\0" + struct.pack("!HH", 1, 7) + b"\0\0\0\0"), "format codes"),
        (m.frame(b"B", b"\0\0\0\0\0\x01" + struct.pack("!i", -7) + b"\0\0"), "negative"),
        (m.frame(b"B", b"\0\0\0\0\0\x01" + struct.pack("!i", 100) + b"\0\0"), "shorter"),
        (m.frame(b"D", b"Xname\0"), "neither S nor P"),
    ],
)
def test_bad_typed_messages(data: bytes, message: str) -> None:
    r = started()
    r.feed(data)
    with pytest.raises(ProtocolError, match=message):
        r.next()


def test_oversized_message_is_refused_before_it_is_buffered() -> None:
    r = started()
    r.feed(b"Q" + struct.pack("!i", 10_000_000))
    with pytest.raises(ProtocolError, match="exceeds"):
        r.next()


def test_a_second_startup_after_login_is_garbage() -> None:
    r = started()
    r.feed(m.StartupMessage({"user": "u2"}).encode())
    with pytest.raises(ProtocolError):
        r.next()


frontend_msgs = st.one_of(
    st.builds(m.Query, st.text()),
    st.builds(
        m.Parse,
        st.text(max_size=5),
        st.text(),
        st.lists(st.integers(0, 2**32 - 1), max_size=3).map(tuple),
    ),
    st.builds(
        m.Bind,
        st.text(max_size=3),
        st.text(max_size=3),
        st.lists(st.sampled_from([0, 1]), max_size=3).map(tuple),
        st.lists(st.none() | st.binary(max_size=8), max_size=3).map(tuple),
        st.lists(st.sampled_from([0, 1]), max_size=3).map(tuple),
    ),
    st.builds(m.Execute, st.text(max_size=3), st.integers(0, 2**32 - 1)),
    st.builds(m.Describe, st.sampled_from(["S", "P"]), st.text(max_size=3)),
    st.just(m.Sync()),
    st.just(m.Flush()),
    st.builds(m.CopyData, st.binary(max_size=20)),
).filter(
    lambda x: (
        "\0" not in repr(getattr(x, "sql", ""))
        and all(
            "\0" not in v
            for v in (
                getattr(x, "name", ""),
                getattr(x, "portal", ""),
                getattr(x, "statement", ""),
                getattr(x, "sql", ""),
            )
        )
    )
)


@settings(max_examples=300, deadline=None)
@given(st.lists(frontend_msgs, max_size=12), st.integers(1, 50))
def test_any_message_sequence_round_trips(msgs: list[Any], step: int) -> None:
    r = started()
    r.max_message = 1 << 20
    data = b"".join(x.encode() for x in msgs)
    assert read_all(r, data, step) == msgs


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash_the_readers(data: bytes) -> None:
    for reader in (FrontendReader(max_message=4096), started(), BackendReader(4096)):
        with contextlib.suppress(ProtocolError):
            read_all(reader, data, 17)


binds = st.builds(
    m.Bind,
    st.sampled_from(["", "p1", "pörtal"]),
    st.sampled_from(["", "s1"]),
    st.lists(st.integers(0, 2), max_size=3).map(tuple),
    st.lists(st.one_of(st.none(), st.binary(max_size=6)), max_size=3).map(tuple),
    st.lists(st.integers(0, 2), max_size=3).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(binds, st.integers(0, 40), st.binary(max_size=3), st.integers(0, 255), st.integers(-1, 40))
def test_bind_names_reads_a_bind_exactly_as_decoding_it_does(
    bind: m.Bind, cut: int, tail: bytes, byte: int, at: int
) -> None:
    """The relay's Bind shortcut accepts and refuses exactly what the full decoder does,
    with the same error, on valid, truncated, extended and corrupted bodies."""
    body = bytearray(bind.encode()[5:])
    for variant in (bytes(body), bytes(body[:cut]), bytes(body) + tail):
        corrupt = bytearray(variant)
        if 0 <= at < len(corrupt):
            corrupt[at] = byte
        for candidate in (variant, bytes(corrupt)):
            framed = b"xx" + candidate + b"yy"
            try:
                decoded = decode_frontend(b"B", candidate)
            except ProtocolError as exc:
                with pytest.raises(ProtocolError, match=re.escape(str(exc))):
                    bind_names(framed, 2, 2 + len(candidate))
                continue
            assert isinstance(decoded, m.Bind)
            assert bind_names(framed, 2, 2 + len(candidate)) == (decoded.portal, decoded.statement)
