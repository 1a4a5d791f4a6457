"""Names and literals as PostgreSQL 15's lexer reads them, rewritten into plain SQL.

sqlglot reads `U&"\\0073sn"` as the column `U` ANDed with `"\\0073sn"`, and it keeps
identifiers the server truncates or folds differently; a classifier that reads a name
differently from the server is bypassed by respelling it. So before parsing, every
Unicode-escaped identifier or string (`U&"..."`, `U&'...'`, with or without `UESCAPE`),
every `E'...'` escape string, dollar-quoted string and string continuation is rewritten
into the plain form meaning the same to the server (`"..."` and standard `'...'`), and
quoted identifiers are truncated to NAMEDATALEN-1 bytes. What scan.l / parser.c would
reject or what cannot be decoded with certainty raises `LexError` (the statement is then
`unparsed`). Unquoted identifiers are folded by `fold`, as downcase_identifier does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from interlock.classify.sqlsplit import CODE, COMMENT, CONTINUATION, regions

NAMEDATALEN = 64
"""PostgreSQL's default (pg_config_manual.h); identifiers keep NAMEDATALEN-1 bytes."""
MAX_IDENTIFIER_BYTES = NAMEDATALEN - 1


class LexError(ValueError):
    """Text the server would read differently or reject: the statement is `unparsed`."""


def truncate(name: str) -> str:
    """truncate_identifier: at most 63 bytes, cut on a character boundary."""
    raw = name.encode("utf-8", "surrogatepass")
    if len(raw) <= MAX_IDENTIFIER_BYTES:
        return name
    return raw[:MAX_IDENTIFIER_BYTES].decode("utf-8", "ignore")


_ASCII_UPPER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(name: str) -> str:
    """An unquoted identifier as the server stores it: ASCII A-Z folded (UTF-8 server
    encoding: other letters are kept as they are), then truncated."""
    return truncate(name.translate(_ASCII_UPPER))


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    """`space`, `comment`, `word`, `number`, `op`, `ident` ("..."), `string` ('...'),
    `dollar` ($$...$$)."""
    text: str
    start: int
    end: int


_CODE_TOKEN = re.compile(
    r"(?P<space>[ \t\n\r\f\v]+)"
    r"|(?P<word>[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*)"
    r"|(?P<number>\.?[0-9][0-9A-Za-z_$.]*)"
    r"|(?P<op>.)",
    re.S,
)


def tokens(sql: str) -> list[Token]:
    """The lexer's tokens of `sql` (comments and whitespace included). Raises SplitError
    on unterminated text."""
    out: list[Token] = []
    for kind, a, b in regions(sql):
        if kind == COMMENT:
            out.append(Token("comment", sql[a:b], a, b))
        elif kind == CODE:
            for m in _CODE_TOKEN.finditer(sql, a, b):
                out.append(Token(str(m.lastgroup), m.group(0), m.start(), m.end()))
        else:
            first = sql[a]
            kind = "ident" if first == '"' else "string" if first == "'" else "dollar"
            out.append(Token(kind, sql[a:b], a, b))
    return out


def _is_word(tok: Token | None, word: str) -> bool:
    return tok is not None and tok.kind == "word" and tok.text.lower() == word


def _prefix(toks: list[Token], i: int) -> str:
    """The prefix glued to the quoted token at i: "u&", "e", "b", "x", "n" or ""."""
    t = toks[i]
    prev = toks[i - 1] if i > 0 else None
    if prev is None or prev.end != t.start:
        return ""
    if prev.kind == "op" and prev.text == "&" and i > 1:
        u = toks[i - 2]
        if u.end == prev.start and u.kind == "word" and u.text.lower() == "u":
            return "" if _glued(toks, i - 2) else "u&"
    if prev.kind == "word" and prev.text.lower() in ("e", "b", "x", "n"):
        return "" if _glued(toks, i - 1) else prev.text.lower()
    return ""


def _glued(toks: list[Token], i: int) -> bool:
    """Whether the token before i ends in an identifier character right against it
    (`$e'x'` has no E prefix for the splitter, so none here either)."""
    if i == 0 or toks[i - 1].end != toks[i].start:
        return False
    c = toks[i - 1].text[-1]
    return c.isalnum() or c in "_$"


def _string_pieces(text: str, backslash: bool = False) -> list[str]:
    """The bodies of one string token and its continuations ('a'<newline>'b'); in an E''
    string (`backslash`) a backslash escapes the next character."""
    pieces: list[str] = []
    i = 0
    while True:
        j = i + 1
        body: list[str] = []
        while True:
            c = text[j]
            if backslash and c == "\\":
                body.append(text[j : j + 2])
                j += 2
            elif c == "'" and j + 1 < len(text) and text[j + 1] == "'":
                body.append("''")
                j += 2
            elif c == "'":
                break
            else:
                body.append(c)
                j += 1
        pieces.append("".join(body))
        m = CONTINUATION.match(text, j + 1)
        if m is None:
            return pieces
        i = m.end() - 1


_E_ESCAPE = re.compile(
    r"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|(.))", re.S
)
_SIMPLE_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class _Escapes:
    """Unicode escapes in order, with UTF-16 surrogate pairs joined as the server joins
    them: a first half must be followed at once by a second."""

    def __init__(self) -> None:
        self.high: int | None = None

    def char(self, code: int) -> str:
        """The character of one escape ("" while half a pair is pending)."""
        if 0xD800 <= code <= 0xDBFF:
            self.other()
            self.high = code
            return ""
        if 0xDC00 <= code <= 0xDFFF:
            if self.high is None:
                raise LexError("invalid Unicode surrogate pair")
            code = 0x10000 + ((self.high - 0xD800) << 10) + (code - 0xDC00)
            self.high = None
        self.other()
        if not 0 < code <= 0x10FFFF:
            raise LexError(f"invalid Unicode code point {code:#x}")
        return chr(code)

    def other(self) -> None:
        """Anything but an escape comes next: no half pair may be pending."""
        if self.high is not None:
            raise LexError("invalid Unicode surrogate pair")


def decode_e_string(body: str) -> str:
    """The value of an E'' string body (scan.l's xe rules; '' already kept as '')."""
    out = bytearray()
    escapes = _Escapes()
    pos = 0
    for m in _E_ESCAPE.finditer(body):
        plain = body[pos : m.start()].replace("''", "'")
        if plain:
            escapes.other()
        out += plain.encode("utf-8")
        pos = m.end()
        octal, hexa, u4, u8, char = m.groups()
        if u4 or u8:
            out += escapes.char(int(u4 or u8, 16)).encode("utf-8")
            continue
        escapes.other()
        if octal:
            out.append(int(octal, 8) & 0xFF)
        elif hexa:
            out.append(int(hexa, 16))
        elif char in ("u", "U", "v"):
            # \u without four digits is an error; \v changed meaning in PostgreSQL 16.
            raise LexError(f"escape \\{char} read differently by server versions")
        else:
            out += _SIMPLE_ESCAPES.get(char, char).encode("utf-8")
    rest = body[pos:].replace("''", "'")
    if rest:
        escapes.other()
    escapes.other()
    out += rest.encode("utf-8")
    return _text(bytes(out))


def _text(raw: bytes) -> str:
    if b"\x00" in raw:
        raise LexError("NUL in a string")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LexError("invalid UTF-8 in a string") from exc


_HEX = frozenset("0123456789abcdefABCDEF")


def decode_unicode(body: str, escape: str = "\\") -> str:
    """str_udeescape: `body` of a U& literal (quote doubling already undone)."""
    out: list[str] = []
    escapes = _Escapes()
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c != escape or (i + 1 < n and body[i + 1] == escape):
            escapes.other()
            out.append(c)
            i += 1 if c != escape else 2
            continue
        if i + 5 <= n and all(h in _HEX for h in body[i + 1 : i + 5]):
            code, i = int(body[i + 1 : i + 5], 16), i + 5
        elif (
            body[i + 1 : i + 2] == "+"
            and i + 8 <= n
            and all(h in _HEX for h in body[i + 2 : i + 8])
        ):
            code, i = int(body[i + 2 : i + 8], 16), i + 8
        else:
            raise LexError("invalid Unicode escape")
        out.append(escapes.char(code))
    escapes.other()
    return "".join(out)


def _uescape(toks: list[Token], i: int) -> tuple[str, int]:
    """The escape character of the U& token at i and the index after its clause."""
    j = i + 1
    while j < len(toks) and toks[j].kind in ("space", "comment"):
        j += 1
    if not _is_word(toks[j] if j < len(toks) else None, "uescape"):
        return "\\", i + 1
    j += 1
    while j < len(toks) and toks[j].kind in ("space", "comment"):
        j += 1
    if j >= len(toks) or toks[j].kind != "string" or _prefix(toks, j):
        raise LexError("UESCAPE must be followed by a simple string literal")
    escape = "".join(p.replace("''", "'") for p in _string_pieces(toks[j].text))
    if len(escape.encode("utf-8")) != 1 or escape in _HEX or escape in "+'\"" or escape.isspace():
        raise LexError("invalid Unicode escape character")
    return escape, j + 1


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _identifier(body: str) -> str:
    if not body:
        raise LexError("zero-length delimited identifier")
    return truncate(body)


def normalise(sql: str) -> str:
    """`sql` with every name and string in the plain spelling meaning the same to the
    server (see the module docstring). Raises LexError or SplitError."""
    return normalised(sql)[0]


def normalised(sql: str) -> tuple[str, list[Token]]:
    """`normalise(sql)` and its tokens (the statement is lexed once when nothing in it
    needs rewriting, which is most statements)."""
    toks = tokens(sql)
    if not any(t.kind in ("comment", "ident", "string", "dollar") for t in toks):
        return sql, toks
    plain = _rewrite(toks)
    return plain, (toks if plain == sql else tokens(plain))


def _rewrite(toks: list[Token]) -> str:
    out: list[str] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.kind not in ("ident", "string", "dollar"):
            # Comments are whitespace to the server; the parser must not read them
            # differently (where one ends, what is a comment at all).
            out.append(" " if t.kind == "comment" else t.text)
            i += 1
            continue
        prefix = _prefix(toks, i) if t.kind != "dollar" else ""
        nxt = i + 1
        if prefix == "u&":
            del out[-2:]
            escape, nxt = _uescape(toks, i)
            if t.kind == "ident":
                body = decode_unicode(t.text[1:-1].replace('""', '"'), escape)
                out.append(quote_ident(_identifier(body)))
            else:
                raw = "".join(p.replace("''", "'") for p in _string_pieces(t.text))
                out.append(quote_literal(decode_unicode(raw, escape)))
        elif t.kind == "ident":
            out.append(quote_ident(_identifier(t.text[1:-1].replace('""', '"'))))
        elif t.kind == "dollar":
            tag_end = t.text.index("$", 1) + 1
            out.append(quote_literal(t.text[tag_end:-tag_end]))
        elif prefix == "e":
            out.pop()
            out.append(
                quote_literal(
                    "".join(decode_e_string(p) for p in _string_pieces(t.text, backslash=True))
                )
            )
        elif prefix in ("b", "x"):
            out.append(t.text)
        else:
            if prefix == "n":
                out.pop()
            out.append(quote_literal("".join(p.replace("''", "'") for p in _string_pieces(t.text))))
        i = nxt
    return "".join(out)


def string_value(text: str) -> str:
    """The value of one plain '...' literal as `normalise` writes it."""
    return text[1:-1].replace("''", "'")


def qualified_name(text: str) -> tuple[str, ...]:
    """A name given as a string ('public."Pay Roll"' for ::regclass, table_to_xml, ...),
    split and folded as stringToQualifiedNameList / SplitIdentifierString do."""
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] == '"':
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise LexError("unterminated quoted name")
                if text[j] == '"':
                    if j + 1 < n and text[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            parts.append(_identifier("".join(buf)))
            i = j + 1
        else:
            j = i
            while j < n and text[j] != "." and not text[j].isspace():
                j += 1
            if j == i:
                raise LexError("empty name")
            parts.append(fold(text[i:j]))
            i = j
        while i < n and text[i].isspace():
            i += 1
        if i == n:
            return tuple(parts)
        if text[i] != ".":
            raise LexError("not a qualified name")
        i += 1
