"""The server-to-client half of a session without I/O: server bytes in, client bytes out."""

from __future__ import annotations

from interlock.proxies.postgres import messages as m
from interlock.proxies.postgres.codec import BackendReader, decode_backend
from interlock.proxies.postgres.results import ResultTracker

_READY, _ROW_DESCRIPTION, _ERROR, _COPY_IN = ord("Z"), ord("T"), ord("E"), ord("G")
FAILED_KEPT = 64
"""How many of the latest failed ReadyForQuery numbers `Downstream.failed` keeps."""
_STATUSES = frozenset(b"ITE")
"""ReadyForQuery's transaction states (anything else is decoded, and refused)."""


class Pieces:
    """What one read turns into: byte ranges of the buffer it arrived in, and messages the
    proxy wrote itself, in order. Adjacent ranges merge, so a read whose messages all
    pass becomes one slice and one write."""

    __slots__ = ("_buf", "_end", "_out", "_start")

    def __init__(self, buf: bytearray) -> None:
        self._buf = buf
        self._out: list[bytes] = []
        self._start = self._end = 0

    def forward(self, start: int, end: int) -> None:
        if start != self._end:
            self._flush()
            self._start = start
        self._end = end

    def add(self, data: bytes) -> None:
        self._flush()
        self._out.append(data)

    def _flush(self) -> None:
        if self._end > self._start:
            self._out.append(bytes(self._buf[self._start : self._end]))
        self._start = self._end = 0

    def take(self) -> bytes:
        self._flush()
        out, self._out = self._out, []
        return b"".join(out)


class Downstream:
    """Relays what the server sends by type and length. Only what masking, the result
    tracker or a denial needs is decoded (descriptions, errors, ReadyForQuery, rows
    that are masked or watched); every other message, DataRow and CommandComplete
    included, is forwarded as the bytes it arrived in."""

    def __init__(
        self,
        results: ResultTracker,
        denials: dict[str, str],
        status: str,
        reader: BackendReader | None = None,
    ) -> None:
        self.reader = reader or BackendReader()
        """The login's reader when there is one: what the server sent after its
        ReadyForQuery is relayed, not lost."""
        self.results = results
        self.denials = denials
        """Marker -> reason of the denials in flight (see `session.Session.denial_sql`)."""
        self.status = status
        """The transaction status of the last ReadyForQuery."""
        self.readies = 0
        """ReadyForQuery messages received since login: the number of the batch (a
        Query, or the messages up to a Sync) the server last finished."""
        self.copy_ins = 0
        """CopyInResponse messages received: COPY FROM STDIN started on the server."""
        self.errors = 0
        """ErrorResponse messages received."""
        self.last_idle = 0
        """The number of the last batch that ended outside a transaction block (status
        I): the portals bound in it or before are gone."""
        self.failed: set[int] = set()
        """Numbers of recent batches in which the server reported an error (the rest of
        an extended-protocol batch is then skipped): what the proxy sent in them may not
        have taken effect."""
        self._error = False

    def receive(self, data: bytes) -> bytes:
        """The bytes to send the client for `data` from the server (b"" when nothing is
        whole yet or everything was an answer to the proxy's own queries)."""
        reader, results = self.reader, self.results
        reader.feed(data)
        buf = reader.data
        out = Pieces(buf)
        while (frame := reader.next_frame()) is not None:
            kind, start, end = frame
            if kind == _READY:
                if end - start != 6 or buf[end - 1] not in _STATUSES:
                    decode_backend(b"Z", bytes(buf[start + 5 : end]))  # raises why
                self.status = chr(buf[end - 1])
                self._finished()
            elif kind == _ERROR:
                self._error = True
                self.errors += 1
            elif kind == _COPY_IN:
                self.copy_ins += 1
            elif kind == _ROW_DESCRIPTION and results.described(bytes(buf[start + 5 : end])):
                out.forward(start, end)
                continue
            if results.passes(kind):
                out.forward(start, end)
                continue
            msg = decode_backend(bytes((kind,)), bytes(buf[start + 5 : end]))
            if isinstance(msg, m.ReadyForQuery):
                self.status = msg.status
            forward = results.backend(msg)
            if forward is None:
                continue  # an answer to the proxy's own query
            if isinstance(forward, m.ErrorResponse) and self.denials:
                out.add(self._rewrite(forward).encode())
            elif forward is msg:
                out.forward(start, end)
            else:
                out.add(forward.encode())
        return out.take()

    @property
    def error_open(self) -> bool:
        """Whether the server reported an error in the batch it has not finished yet."""
        return self._error

    def _finished(self) -> None:
        self.readies += 1
        if self.status == "I":
            self.last_idle = self.readies
        if self._error:
            self.failed.add(self.readies)
            self.failed.discard(self.readies - FAILED_KEPT)
            self._error = False

    def _rewrite(self, err: m.ErrorResponse) -> m.ErrorResponse:
        """The server's error about a denial's marker relation, as the denial itself."""
        text = err.message
        for marker, reason in list(self.denials.items()):
            if marker in text:
                del self.denials[marker]
                return m.error(f"interlock: {reason}")
        return err
