"""The SQLite store's writer process: appends batches sent over a pipe, off the GIL.

Why a process: an append is Python work (leaf and node hashes, packing) between several
SQLite calls, and each call gives the GIL back and has to win it again from an event loop
that is busy encoding the next batch or relaying a proxy's traffic. Measured with the
writer on a thread, a batch waited about as long for the GIL as it took to write
(docs/benchmarks.md). In its own process the append costs the loop one pipe write.

The protocol (`encode_append`, `decode_append`, `ok_reply`, `error_reply`, `decode_reply`) is pure
and framed by length: a request is `A` (or `R`: skip records already logged), the
record count, the decision ids' and the
records' byte lengths (native unsigned 32-bit arrays: both ends are one machine), then
the ids and the records concatenated. The answer is `0` and the first index, or `1` and
the error. Before any request the child answers once on its own: `0` once the file is
open (the parent's start waits for it), or `1` and why it could not be opened. The child
stops at end of input: when its store closes or the parent dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import signal
import sqlite3
import struct
import sys
from array import array
from collections.abc import Sequence
from itertools import accumulate, pairwise
from pathlib import Path
from typing import BinaryIO, NamedTuple

from interlock.audit.sqlitefile import Appender, connect
from interlock.errors import AuditError

LENGTH = struct.Struct(">I")
"""The frame header of every request and answer: the body's size."""
_COUNT = struct.Struct(">I")
_FIRST = struct.Struct(">Q")
APPEND = b"A"
RECHECK = b"R"
"""An append after one whose outcome is unknown: skip what the log already holds."""
PIPE_BYTES = 1 << 20
"""The request pipe's size: Linux's default limit for an unprivileged process."""
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def encode_append(entries: Sequence[tuple[str, bytes]], *, recheck: bool = False) -> bytes:
    """A framed append request; with `recheck`, the writer skips the records the log's
    recent tail already holds (the last append's outcome is unknown). Raises
    UnicodeEncodeError for an id that is not text SQLite could store (a lone surrogate),
    before anything is sent."""
    ids = [did for did, _ in entries]
    datas = [data for _, data in entries]
    text = "".join(ids)
    if text.isascii():  # interlock's own ids: one character is one byte
        id_bytes, id_lengths = text.encode(), array("I", map(len, ids))
    else:
        encoded = [did.encode() for did in ids]
        id_bytes, id_lengths = b"".join(encoded), array("I", map(len, encoded))
    data_lengths = array("I", map(len, datas))
    op = RECHECK if recheck else APPEND
    head = op + _COUNT.pack(len(entries)) + id_lengths.tobytes() + data_lengths.tobytes()
    size = len(head) + len(id_bytes) + sum(data_lengths)
    return b"".join((LENGTH.pack(size), head, id_bytes, *datas))  # one copy of the records


class Batch(NamedTuple):
    """A decoded request: the records stay one buffer, cut by `lengths`."""

    ids: list[str]
    lengths: array[int]
    data: memoryview
    recheck: bool


def decode_append(body: bytes) -> Batch:
    """The batch in a request body; ValueError when it does not add up."""
    if body[:1] not in (APPEND, RECHECK) or len(body) < 5:
        raise ValueError("not an append request")
    (n,) = _COUNT.unpack_from(body, 1)
    pos = 5
    width = array("I").itemsize * n
    if len(body) < pos + 2 * width:
        raise ValueError("append request truncated in its lengths")
    id_lengths = array("I", body[pos : pos + width])
    lengths = array("I", body[pos + width : pos + 2 * width])
    pos += 2 * width
    ids_end = pos + sum(id_lengths)
    if ids_end + sum(lengths) != len(body):
        raise ValueError("append request lengths do not match its size")
    text = body[pos:ids_end].decode()
    if len(text) == ids_end - pos:  # ASCII: characters are bytes
        ids = [text[a:b] for a, b in pairwise(accumulate(id_lengths, initial=0))]
    else:
        ids = [body[a:b].decode() for a, b in pairwise(accumulate(id_lengths, initial=pos))]
    return Batch(ids, lengths, memoryview(body)[ids_end:], body[:1] == RECHECK)


def ok_reply(first: int) -> bytes:
    return LENGTH.pack(1 + _FIRST.size) + b"\x00" + _FIRST.pack(first)


def error_reply(reason: str) -> bytes:
    body = b"\x01" + reason.encode("utf-8", "replace")
    return LENGTH.pack(len(body)) + body


READY = ok_reply(0)
"""The first answer, sent before any request: the file is open and appends can come."""


def decode_reply(body: bytes) -> int:
    """The first index of the appended batch; AuditError with the writer's reason."""
    if body[:1] == b"\x00" and len(body) == 1 + _FIRST.size:
        (first,) = _FIRST.unpack_from(body, 1)
        return int(first)
    if body[:1] == b"\x01":
        raise AuditError(body[1:].decode("utf-8", "replace"))
    raise AuditError("audit writer process answered something that is not a reply")


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    return data if len(data) == n else None


def _answer(replies: BinaryIO, reply: bytes) -> None:
    replies.write(reply)
    replies.flush()


def serve(path: Path, requests: BinaryIO, replies: BinaryIO) -> None:
    """Say whether the file is open, then answer append requests until the input ends."""
    try:
        appender = Appender(connect(path))
    except (sqlite3.Error, OSError) as exc:
        _answer(replies, error_reply(f"cannot open sqlite audit store {path}: {exc}"))
        return
    _answer(replies, READY)
    try:
        while (header := _read_exactly(requests, LENGTH.size)) is not None:
            (length,) = LENGTH.unpack(header)
            body = _read_exactly(requests, length)
            if body is None:
                return  # the parent went away mid-request: nothing of it was written
            try:
                reply = ok_reply(appender.append(*decode_append(body)))
            except sqlite3.Error as exc:
                reply = error_reply(f"sqlite audit store {path}: {exc}")
            except (AuditError, ValueError) as exc:
                reply = error_reply(str(exc))
            _answer(replies, reply)
    finally:
        appender.db.close()


def main() -> None:
    # The parent decides when this process ends (by closing its input): a Ctrl-C or a
    # SIGTERM to the process group must not abort the batch that is being committed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        # A batch fits the pipe, so the parent's loop hands it over in one write instead
        # of one per 64 KiB, each waiting for a turn of a busy loop. Best effort: a
        # smaller pipe only costs time. (The pipe is one object: either end can size it.)
        fcntl.fcntl(sys.stdin.fileno(), F_SETPIPE_SZ, PIPE_BYTES)
    with contextlib.suppress(BrokenPipeError):  # the parent is gone; commits stay committed
        serve(Path(sys.argv[1]), sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
