"""SET, RESET and transaction-mode statements, read from the lexer's tokens.

These statements decide who the session is and whether it may write, so they are read
the way gram.y reads them rather than through sqlglot, which takes
`SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE` for a setting named
"characteristics". Anything outside the grammar below is unreadable, and unreadable
here means sensitive: the server would reject it anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from interlock.classify.sqlident import Token

SENSITIVE_SETTINGS = frozenset(
    {
        "role",
        "session_authorization",
        "default_transaction_read_only",
        "transaction_read_only",
        "standard_conforming_strings",
        "backslash_quote",
        "search_path",
        "session_replication_role",
        "row_security",
        "client_encoding",
        "default_transaction_isolation",
        "transaction_isolation",
        "lo_compat_privileges",
        "allow_system_table_mods",
        "log_statement",
        "log_min_duration_statement",
        "session_preload_libraries",
        "local_preload_libraries",
        "dynamic_library_path",
        "all",
        "?",
    }
)
"""Settings that change who the session is, what it may do, how SQL text is read, or
what the server's own log records; `all` (RESET ALL) and `?` (unreadable) too."""

_SPECIAL = {
    ("time", "zone"): "timezone",
    ("schema",): "search_path",
    ("names",): "client_encoding",
    ("role",): "role",
    ("session", "authorization"): "session_authorization",
    ("xml", "option"): "xmloption",
    ("transaction", "isolation", "level"): "transaction_isolation",
}
"""gram.y's spellings of settings that are not `name = value` (SET SCHEMA is search_path)."""


@dataclass(frozen=True, slots=True)
class SessionStatement:
    """What a SET / RESET / BEGIN / START / SET TRANSACTION statement changes."""

    kind: str
    settings: tuple[str, ...]
    writes: bool = False
    """It opens (or turns) a transaction READ WRITE."""
    unreadable: bool = False

    @property
    def sensitive(self) -> bool:
        return self.unreadable or any(s in SENSITIVE_SETTINGS for s in self.settings)


def _words(toks: list[Token]) -> list[str]:
    """Keywords folded, quoted names kept quoted so they never match a keyword."""
    return [t.text.lower() if t.kind == "word" else t.text for t in toks]


_LEVELS = (["repeatable", "read"], ["read", "committed"], ["read", "uncommitted"])


def _transaction_modes(w: list[str]) -> tuple[bool, bool, bool] | None:
    """(read write, read only, isolation) of a transaction_mode_list; None if unreadable."""
    rw = ro = iso = False
    i = 0
    while i < len(w):
        if w[i] == "," and i > 0:
            i += 1
        elif w[i : i + 2] == ["read", "write"]:
            rw, i = True, i + 2
        elif w[i : i + 2] == ["read", "only"]:
            ro, i = True, i + 2
        elif w[i : i + 2] == ["isolation", "level"]:
            iso, i = True, i + 2
            if w[i : i + 1] == ["serializable"]:
                i += 1
            elif w[i : i + 2] in _LEVELS:
                i += 2
            else:
                return None
        elif w[i] == "deferrable":
            i += 1
        elif w[i : i + 2] == ["not", "deferrable"]:
            i += 2
        else:
            return None
    return rw, ro, iso


def _transaction(w: list[str]) -> SessionStatement | None:
    if w[0] == "begin":
        rest = w[2:] if w[1:2] in (["work"], ["transaction"]) else w[1:]
    elif w[:2] == ["start", "transaction"]:
        rest = w[2:]
    elif w[:2] == ["set", "transaction"]:
        if w[2:3] == ["snapshot"]:
            return SessionStatement("transaction", ())
        rest = w[2:]
    elif w[:5] == ["set", "session", "characteristics", "as", "transaction"]:
        modes = _transaction_modes(w[5:])
        if modes is None:
            return SessionStatement("set", ("default_transaction_read_only",), unreadable=True)
        rw, ro, iso = modes
        names = ["default_transaction_read_only"] if rw or ro else []
        if iso:
            names.append("default_transaction_isolation")
        # READ WRITE as the session default undoes the read-only wall.
        return SessionStatement("set", tuple(names), unreadable=rw)
    else:
        return None
    modes = _transaction_modes(rest)
    if modes is None:
        return SessionStatement("transaction", (), unreadable=True)
    rw = modes[0]
    return SessionStatement("transaction", ("transaction_read_only",) if rw else (), writes=rw)


def _var_name(w: list[str]) -> tuple[str, int] | None:
    """A setting name (`a` or `a.b`, quoted or not) at the start of w, lower case as the
    server compares them, and how many tokens it took."""
    for words, name in _SPECIAL.items():
        if tuple(w[: len(words)]) == words:
            return name, len(words)
    parts: list[str] = []
    i = 0
    while i < len(w):
        part = w[i]
        if part.startswith('"'):
            part = part[1:-1].replace('""', '"')
        elif not (part[:1] == "_" or part[:1].isalpha() or part[:1] > "\x7f"):
            return None  # not a name: a number, an operator, a string
        parts.append(part.lower())
        i += 1
        if w[i : i + 1] != ["."]:
            return ".".join(parts), i
        i += 1
    return None


def session_statement(toks: list[Token]) -> SessionStatement | None:
    """The statement's effect on the session, or None when it is not one of these."""
    w = _words([t for t in toks if t.kind not in ("space", "comment")])
    if not w or w[0] not in ("set", "reset", "begin", "start"):
        return None
    if w[0] in ("begin", "start") or w[1:2] == ["transaction"]:
        return _transaction(w) or SessionStatement("transaction", (), unreadable=True)
    if w[:3] == ["set", "session", "characteristics"]:
        return _transaction(w) or SessionStatement(
            "set", ("default_transaction_read_only",), unreadable=True
        )
    kind, rest = w[0], w[1:]
    if kind == "reset":
        if rest == ["all"]:
            return SessionStatement("reset", ("all",))
        named = _var_name(rest)
        if named is None or named[1] != len(rest):
            return SessionStatement("reset", ("?",), unreadable=True)
        return SessionStatement("reset", (named[0],))
    if rest[:1] in (["session"], ["local"]) and rest[1:2] != ["authorization"]:
        rest = rest[1:]
    if rest[:1] == ["constraints"]:
        return SessionStatement("set", ())
    named = _var_name(rest)
    if named is None:
        return SessionStatement("set", ("?",), unreadable=True)
    name, used = named
    if tuple(rest[:used]) not in _SPECIAL and rest[used : used + 1] not in (["to"], ["="]):
        return SessionStatement("set", ("?",), unreadable=True)
    return SessionStatement("set", (name,))
