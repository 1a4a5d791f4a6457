"""Splitting SQL text into statements exactly where PostgreSQL's lexer would.

sqlglot parses each statement, but a parser differential at statement boundaries is how
SQL hides from a firewall (`select 1 /* ; */ ; drop table x`, dollar quoting, nested
comments). This lexer follows PostgreSQL's scan.l for the constructs that matter:
'...' and E'...' strings, "..." and U&"..." identifiers, $tag$ quoting, -- and nested
/* */ comments. The classifier refuses text on which the two disagree.
"""

from __future__ import annotations

import re

_DOLLAR = re.compile(r"\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$")


class SplitError(ValueError):
    """Unterminated string, identifier, dollar quote or comment."""


def split(sql: str) -> list[str]:
    """Statements in `sql`, without empty ones (comments and whitespace only)."""
    out: list[str] = []
    start = 0
    i, n = 0, len(sql)
    meaningful = False
    while i < n:
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if c == "/" and sql.startswith("/*", i):
            i = split_comment_end(sql, i)
            continue
        if c == ";":
            if meaningful:
                out.append(sql[start:i])
            start, i, meaningful = i + 1, i + 1, False
            continue
        if not c.isspace():
            meaningful = True
        if c == "'":
            escapes = i > 0 and sql[i - 1] in "eE" and (i < 2 or not _ident_char(sql[i - 2]))
            i = _quoted(sql, i, "'", escapes)
            continue
        if c == '"':
            i = _quoted(sql, i, '"', False)
            continue
        if c == "$":
            m = _DOLLAR.match(sql, i)
            if m and not (i > 0 and _ident_char(sql[i - 1])):
                tag = m.group(0)
                end = sql.find(tag, m.end())
                if end < 0:
                    raise SplitError(f"unterminated dollar quote {tag}")
                i = end + len(tag)
                continue
        i += 1
    if meaningful:
        out.append(sql[start:])
    return out


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


_NUMBER = re.compile(r"(?<![\w$.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w$.])")


def shape(sql: str) -> str:
    """`sql` with numeric literals outside quotes and comments replaced by 0.

    Classification never depends on a number's value, so statements that differ only in
    their numbers (`... where aid = 17`) share one cache entry. Anything this scanner does
    not understand is returned unchanged, which only costs a cache miss.
    """
    out: list[str] = []
    i, n, plain_from = 0, len(sql), 0
    try:
        while i < n:
            c = sql[i]
            if c == "-" and sql.startswith("--", i):
                end = sql.find("\n", i)
                j = n if end < 0 else end + 1
            elif c == "/" and sql.startswith("/*", i):
                j = split_comment_end(sql, i)
            elif c == "'":
                escapes = i > 0 and sql[i - 1] in "eE" and (i < 2 or not _ident_char(sql[i - 2]))
                j = _quoted(sql, i, "'", escapes)
            elif c == '"':
                j = _quoted(sql, i, '"', False)
            elif (
                c == "$"
                and (m := _DOLLAR.match(sql, i))
                and not (i > 0 and _ident_char(sql[i - 1]))
            ):
                end = sql.find(m.group(0), m.end())
                if end < 0:
                    return sql
                j = end + len(m.group(0))
            else:
                i += 1
                continue
            out.append(_NUMBER.sub("0", sql[plain_from:i]))
            out.append(sql[i:j])
            i = plain_from = j
    except SplitError:
        return sql
    out.append(_NUMBER.sub("0", sql[plain_from:]))
    return "".join(out)


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
