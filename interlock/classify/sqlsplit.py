"""Splitting SQL text into statements exactly where PostgreSQL's lexer would.

sqlglot parses each statement, but a parser differential at statement boundaries is how
SQL hides from a firewall (`select 1 /* ; */ ; drop table x`, dollar quoting, nested
comments). This lexer follows PostgreSQL's scan.l for the constructs that matter:
'...' and E'...' strings (with continuations across newlines), "..." and U&"..."
identifiers, $tag$ quoting, -- and nested /* */ comments. The classifier refuses text on
which the two disagree.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_DOLLAR = re.compile(r"\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$")


_NEWLINE = re.compile(r"[\n\r]")


class SplitError(ValueError):
    """Unterminated string, identifier, dollar quote or comment."""


CODE, COMMENT, LITERAL = "code", "comment", "literal"


def regions(sql: str) -> Iterator[tuple[str, int, int]]:
    """(kind, start, end) runs covering `sql`: code, comments, and literals (quoted
    strings and identifiers, dollar-quoted text). Raises SplitError if one is unterminated.
    The one scanner both `split` and `shape` read the text through."""
    i, n, code_from = 0, len(sql), 0
    while i < n:
        c = sql[i]
        kind = None
        if c == "-" and sql.startswith("--", i):
            # scan.l ends a -- comment at \n or \r.
            m = _NEWLINE.search(sql, i)
            kind, j = COMMENT, (n if m is None else m.end())
        elif c == "/" and sql.startswith("/*", i):
            kind, j = COMMENT, split_comment_end(sql, i)
        elif c == "'":
            escapes = i > 0 and sql[i - 1] in "eE" and (i < 2 or not _ident_char(sql[i - 2]))
            kind, j = LITERAL, _string_end(sql, i, escapes)
        elif c == '"':
            kind, j = LITERAL, _quoted(sql, i, '"', False)
        elif c == "$" and (m := _DOLLAR.match(sql, i)) and not (i > 0 and _ident_char(sql[i - 1])):
            end = sql.find(m.group(0), m.end())
            if end < 0:
                raise SplitError(f"unterminated dollar quote {m.group(0)}")
            kind, j = LITERAL, end + len(m.group(0))
        if kind is None:
            i += 1
            continue
        if code_from < i:
            yield CODE, code_from, i
        yield kind, i, j
        i = code_from = j
    if code_from < n:
        yield CODE, code_from, n


def split(sql: str) -> list[str]:
    """Statements in `sql`, without empty ones (comments and whitespace only)."""
    out: list[str] = []
    start = 0
    meaningful = False
    for kind, a, b in regions(sql):
        if kind == COMMENT:
            continue
        if kind == LITERAL:
            meaningful = True
            continue
        for i in range(a, b):
            c = sql[i]
            if c == ";":
                if meaningful:
                    out.append(sql[start:i])
                start, meaningful = i + 1, False
            elif not c.isspace():
                meaningful = True
    if meaningful:
        out.append(sql[start:])
    return out


CONTINUATION = re.compile(r"(?:[ \t\f]|--[^\n\r]*)*[\n\r](?:[ \t\n\r\f]+|--[^\n\r]*[\n\r])*'")
"""scan.l's quotecontinue: 'a'<newline>'b' is the one string 'ab', in the first part's
mode (an E'' string continues with backslash escapes)."""


def _string_end(sql: str, i: int, backslash: bool) -> int:
    """Index just past the string starting at i, continuations included."""
    j = _quoted(sql, i, "'", backslash)
    while (m := CONTINUATION.match(sql, j)) is not None:
        j = _quoted(sql, m.end() - 1, "'", backslash)
    return j


def _ident_char(c: str) -> bool:
    return c.isalnum() or c == "_" or c == "$"


def _quoted(sql: str, i: int, quote: str, backslash: bool) -> int:
    """Index just past the closing quote of the quoted run starting at i."""
    j, n = i + 1, len(sql)
    while j < n:
        c = sql[j]
        if backslash and c == "\\":
            j += 2
            continue
        if c == quote:
            if j + 1 < n and sql[j + 1] == quote:
                j += 2
                continue
            return j + 1
        j += 1
    raise SplitError(f"unterminated {quote}-quoted text")


_IDENT_CHAR = "A-Za-z0-9_$\u0080-\U0010ffff"
"""What continues a word in scan.l (ident_cont, any non-ASCII byte included): digits
against one of these, or a dot, are part of a name or a longer token, not a number."""
_NUMBER = re.compile(
    rf"(?<![{_IDENT_CHAR}.])[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?![{_IDENT_CHAR}.])"
)
_NOT_PLAIN = re.compile(r"['\"$]|--|/\*")
"""What starts a comment or a literal: text without any is one code region."""


def shape(sql: str) -> str:
    """`sql` with numeric literals outside quotes and comments replaced by 0.

    Classification never depends on an integer's value, so statements that differ only
    in their integers (`... where aid = 17`) share one cache entry (the classifier keys
    text with a fraction or an exponent exactly). Only ASCII digits standing alone as
    scan.l reads them count: U+0661 (an Arabic-Indic digit) or `x` U+00B7 `1` are names
    to the server, and two names must never share an entry. Text the scanner cannot
    read is returned unchanged, which only costs a cache miss.
    """
    if _NOT_PLAIN.search(sql) is None:
        return _NUMBER.sub("0", sql)  # one code region: what `regions` would yield
    try:
        return "".join(
            _NUMBER.sub("0", sql[a:b]) if kind == CODE else sql[a:b] for kind, a, b in regions(sql)
        )
    except SplitError:
        return sql


def split_comment_end(sql: str, i: int) -> int:
    """Index just past the /* comment starting at i; PostgreSQL nests them."""
    depth, i, n = 1, i + 2, len(sql)
    while depth:
        if i >= n:
            raise SplitError("unterminated /* comment")
        if sql.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif sql.startswith("*/", i):
            depth, i = depth - 1, i + 2
        else:
            i += 1
    return i
