"""COPY ... TO STDOUT output as PostgreSQL writes it, so masked fields become NULL in it.

Masking a COPY stream means rewriting rows in the server's own formats (text, CSV,
binary), which depend on the statement's options. `copy_format` reads those options from
the statement text (both the `WITH (...)` list and the pre-9.0 keyword syntax that psql
and old clients still send) and returns None for anything it cannot read with certainty:
the proxy then refuses to mask, and so refuses the statement, rather than guess where a
field ends. Sans-IO: `CopyMasker.data` takes one CopyData body and returns the new one.

Layouts follow the PostgreSQL 15 documentation, "COPY" (File Formats), and copyto.c:
one CopyData message per row; the binary header travels with the first row.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
"""The eleven bytes that open every binary COPY stream."""

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>[eE]?'(?:[^'\\]|''|\\.)*')
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<punct>[(),*])
    )""",
    re.X | re.S,
)
_STDOUT = re.compile(r"\bto\s+stdout\b", re.I)


@dataclass(frozen=True, slots=True)
class CopyFormat:
    """How COPY writes one row: the options that decide where a field ends."""

    csv: bool = False
    delimiter: bytes = b"\t"
    null: bytes = b"\\N"
    quote: bytes = b'"'
    escape: bytes = b'"'
    header: bool = False


TEXT = CopyFormat()


def _unquote(token: str) -> str | None:
    """A one-line string literal's value, or None when escapes make it uncertain."""
    if token[0] in "eE":
        body = token[2:-1]
        if "\\" in body:
            return None
        return body.replace("''", "'")
    return token[1:-1].replace("''", "'")


def _tokens(text: str) -> list[str] | None:
    out: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "" or text[pos:].strip() == ";":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            return None
        out.append(m.group(0).strip())
        pos = m.end()
    return out


def copy_format(statement: str) -> CopyFormat | None:
    """The row format of a `COPY ... TO STDOUT` statement; None if its options are not
    all understood (the caller must not try to mask such a stream)."""
    hits = list(_STDOUT.finditer(statement))
    if len(hits) != 1:
        return None
    tokens = _tokens(statement[hits[0].end() :])
    if tokens is None:
        return None
    options: dict[str, str] = {}
    low = [t.lower() for t in tokens]
    if low[:1] == ["with"]:
        tokens, low = tokens[1:], low[1:]
    if low[:1] == ["("]:
        if low[-1:] != [")"]:
            return None
        if not _options_list(tokens[1:-1], options):
            return None
    elif not _legacy(tokens, options):
        return None
    return _build(options)


def _options_list(tokens: list[str], options: dict[str, str]) -> bool:
    """`FORMAT csv, DELIMITER ';', HEADER` (the modern list)."""
    items: list[list[str]] = [[]]
    depth = 0
    for t in tokens:
        if t == "(":
            depth += 1
        elif t == ")":
            depth -= 1
        if t == "," and depth == 0:
            items.append([])
        else:
            items[-1].append(t)
    for item in items:
        if not item:
            return False
        name = item[0].lower()
        value = item[1] if len(item) > 1 else "true"
        if name in ("force_quote", "force_not_null", "force_null"):
            continue  # which columns get quotes: no effect on where fields end
        if len(item) > 2 or name in options:
            return False
        options[name] = value
    return True


def _legacy(tokens: list[str], options: dict[str, str]) -> bool:
    """`[BINARY] [DELIMITER [AS] 'x'] [NULL [AS] 'x'] [CSV [HEADER] [QUOTE [AS] 'x']
    [ESCAPE [AS] 'x'] [FORCE QUOTE cols]]`, the syntax before PostgreSQL 9.0."""
    i = 0
    n = len(tokens)
    while i < n:
        word = tokens[i].lower()
        i += 1
        if word == "binary":
            options["format"] = "binary"
        elif word == "csv":
            options["format"] = "csv"
        elif word == "header":
            options["header"] = "true"
        elif word in ("delimiter", "null", "quote", "escape"):
            if i < n and tokens[i].lower() == "as":
                i += 1
            if i >= n or tokens[i][-1:] != "'":
                return False
            options[word] = tokens[i]
            i += 1
        elif word == "force":
            # FORCE QUOTE col, col | *  and FORCE NOT NULL col, ...: column lists only.
            while i < n and tokens[i].lower() not in ("delimiter", "null", "quote", "escape"):
                i += 1
        else:
            return False
    return True


def _char(token: str | None, default: bytes) -> bytes | None:
    if token is None:
        return default
    value = _unquote(token) if token[-1:] == "'" else None
    if value is None:
        return None
    raw = value.encode("utf-8")
    return raw if len(raw) == 1 else None


def _build(options: dict[str, str]) -> CopyFormat | None:
    known = {"format", "delimiter", "null", "quote", "escape", "header", "encoding", "freeze"}
    if set(options) - known:
        return None
    if "encoding" in options:
        return None  # other bytes than the session's: field boundaries not known here
    fmt = options.get("format", "text").strip("'").lower()
    if fmt == "binary":
        return CopyFormat(csv=False, delimiter=b"", null=b"")
    if fmt not in ("text", "csv"):
        return None
    csv = fmt == "csv"
    delimiter = _char(options.get("delimiter"), b"," if csv else b"\t")
    quote = _char(options.get("quote"), b'"')
    escape = _char(options.get("escape"), quote or b'"')
    null_token = options.get("null")
    null = (b"" if csv else b"\\N") if null_token is None else _null(null_token)
    if delimiter is None or quote is None or escape is None or null is None:
        return None
    if not csv and delimiter == b"\\":
        return None
    header = options.get("header", "false").strip("'").lower() in ("true", "on", "1", "")
    return CopyFormat(csv, delimiter, null, quote, escape, header)


def _null(token: str) -> bytes | None:
    value = _unquote(token) if token[-1:] == "'" else None
    return None if value is None else value.encode("utf-8")


class CopyMasker:
    """Rewrites one COPY TO STDOUT stream row by row, setting the masked fields to NULL.

    A row that does not split into the expected number of fields (which the server never
    sends) has every field masked: an unreadable row counts as labelled.
    """

    def __init__(self, fmt: CopyFormat, binary: bool, columns: int, mask: frozenset[int]):
        self.fmt = fmt
        self.binary = binary
        self.columns = columns
        self.mask = mask
        self._header_pending = binary
        self._skip_header_line = fmt.header and not binary

    def data(self, body: bytes) -> bytes:
        if self.binary:
            return self._binary(body)
        if self._skip_header_line:
            self._skip_header_line = False
            return body  # the column names, not data
        end = b"\n" if body.endswith(b"\n") else b""
        if end and body.endswith(b"\r\n"):
            end = b"\r\n"
        line = body[: len(body) - len(end)]
        fields = _csv_fields(line, self.fmt) if self.fmt.csv else line.split(self.fmt.delimiter)
        if fields is None or len(fields) != self.columns:
            fields = [b""] * self.columns
            masked: frozenset[int] = frozenset(range(self.columns))
        else:
            masked = self.mask
        out = [self.fmt.null if i in masked else f for i, f in enumerate(fields)]
        return self.fmt.delimiter.join(out) + end

    def _binary(self, body: bytes) -> bytes:
        out = bytearray()
        pos = 0
        if self._header_pending:
            if not body.startswith(BINARY_SIGNATURE) or len(body) < 19:
                return self._all_null_tuple()
            (ext,) = struct.unpack_from("!I", body, 15)
            end = 19 + ext
            out += body[:end]
            pos = end
            self._header_pending = False
        while pos < len(body):
            start = len(out)
            if pos + 2 > len(body):
                return bytes(out) + self._all_null_tuple()
            (count,) = struct.unpack_from("!h", body, pos)
            pos += 2
            if count == -1:
                out += struct.pack("!h", -1)
                continue
            if count != self.columns:
                return bytes(out) + self._all_null_tuple()
            out += struct.pack("!h", count)
            for i in range(count):
                size = struct.unpack_from("!i", body, pos)[0] if pos + 4 <= len(body) else -2
                pos += 4
                if size < -1 or pos + max(size, 0) > len(body):
                    # Cut short or malformed: the tuple as a whole is unreadable.
                    return bytes(out[:start]) + self._all_null_tuple()
                if i in self.mask or size == -1:
                    out += struct.pack("!i", -1)
                else:
                    out += struct.pack("!i", size) + body[pos : pos + size]
                pos += max(size, 0)
        return bytes(out)

    def _all_null_tuple(self) -> bytes:
        return struct.pack("!h", self.columns) + struct.pack("!i", -1) * self.columns


def _csv_fields(line: bytes, fmt: CopyFormat) -> list[bytes] | None:
    """CSV fields as written (quotes kept), or None if the line is not well formed."""
    fields: list[bytes] = []
    i, n = 0, len(line)
    q, e, d = fmt.quote[0], fmt.escape[0], fmt.delimiter[0]
    while True:
        start = i
        if i < n and line[i] == q:
            i += 1
            while True:
                if i >= n:
                    return None
                c = line[i]
                if c == e and i + 1 < n and line[i + 1] in (q, e) and (e != q or line[i + 1] == q):
                    i += 2
                    continue
                if c == q:
                    i += 1
                    break
                i += 1
            if i < n and line[i] != d:
                return None
        else:
            while i < n and line[i] != d:
                if line[i] == q:
                    return None
                i += 1
        fields.append(line[start:i])
        if i >= n:
            return fields
        i += 1  # the delimiter
