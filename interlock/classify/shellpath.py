"""Paths in a shell command as the target would resolve them, before it runs.

A word as written (`"$HOME"/../x`, `~/.ssh/id_*`, `/etc/{shadow,hosts}`) becomes the
absolute, normalised paths the target's shell would hand the program: quotes removed,
`~`, `~user` (the login user only) and `$HOME`/`${HOME}` expanded, brace expansion done,
relative paths joined to every directory the command may be working in, `.`, `..` and
repeated slashes folded. Anything else that only takes a value when the command runs
(another variable, `$(...)`, backquotes, `$'...'`, `~-`, `~other`) leaves the word
*unresolved*. Unquoted `*`, `?` and `[...]` make it a *glob*: it is kept as a pattern in
which only `*` and `?` are special (a bracket expression becomes `?`, and a quoted or
stray special character becomes `?` too, which only ever matches more).

Normalisation is lexical, as for the string itself: `a/../b` is `b` even if `a` is a
symlink on the target (where the kernel would go to the link target's parent). Nothing
here can know the target's symlinks; SFTP resolves them on the target instead.
"""

from __future__ import annotations

import fnmatch
import itertools
import posixpath
import re
from dataclasses import dataclass, field

MAX_BRACE_WORDS = 64
"""Brace expansions beyond this many words leave the word unresolved (bash would expand
`{1..100000}`; a decision on a bounded list must not pretend to have seen it all)."""
MAX_CWDS = 8
"""Working directories a command may be in (after `cd` to several places) beyond which
its relative paths are unresolved."""
GLOB_CHARS = frozenset("*?[")
OPAQUE = "\x00"
"""A path word whose value is only known when the command runs (a NUL never reaches
here in a command): a percent-escaped URL, `find -execdir`'s directories."""
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Where:
    """What a target's shell starts from: the login user's home and name, and the working
    directory (sshd starts commands in the home directory). None: not known (yet)."""

    home: str | None = None
    user: str | None = None
    cwd: str | None = None

    @property
    def start(self) -> str | None:
        return self.cwd or self.home


@dataclass(frozen=True)
class Expanded:
    """One word after expansion: its texts (several after brace expansion), whether each
    is a glob, or why it cannot be known."""

    texts: tuple[tuple[str, bool], ...] = ()
    braced: bool = False
    """Brace expansion made more than the word as written."""
    unresolved: str = ""
    needs_home: bool = False
    """Unresolved only because the home directory is not known yet."""


# A character of a word after quote removal: (char, quoted). Quoted characters are
# never special to brace expansion or globbing.
_Chars = list[tuple[str, bool]]


_ANSI = {"a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r",
         "t": "\t", "v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?"}  # fmt: skip
_ANSI_NUMBER = re.compile(r"x[0-9A-Fa-f]{1,2}|u[0-9A-Fa-f]{1,4}|U[0-9A-Fa-f]{1,8}|[0-7]{1,3}")


def _ansi_c(raw: str, i: int) -> tuple[str, int] | None:
    """The text of `$'...'` starting at raw[i] (the `$`), and the index after it; None
    for what cannot be read the one way every shell would: an escape this does not
    decode (`\\cX`), a NUL (bash ends the string there, so `/etc/sha$'\\0'dow` is
    /etc/sha... to it and something else to a reader that keeps the NUL), and an
    escaped quote (`$'\\''`: dash, which has no `$'...'`, ends the string at it and runs
    what follows)."""
    out: list[str] = []
    j = i + 2
    while j < len(raw):
        c = raw[j]
        if c == "'":
            return "".join(out), j + 1
        if c != "\\":
            out.append(c)
            j += 1
            continue
        nxt = raw[j + 1 : j + 2]
        if nxt == "'":
            return None
        if nxt in _ANSI:
            out.append(_ANSI[nxt])
            j += 2
            continue
        m = _ANSI_NUMBER.match(raw, j + 1)
        if not m:
            return None
        digits = m.group()
        code = int(digits, 8) if digits[0].isdigit() else int(digits[1:], 16)
        if code == 0 or code > 0x10FFFF:
            return None
        out.append(chr(code))
        j = m.end()
    return None


def _substitution_end(raw: str, i: int) -> int:
    """The index after the `$(...)`, `${...}` or backquoted text starting at raw[i]
    (quotes and nesting inside it respected); len(raw) when it does not end."""
    if raw[i] == "`":
        j = i + 1
        while j < len(raw) and raw[j] != "`":
            j += 2 if raw[j] == "\\" else 1
        return min(j + 1, len(raw))
    opening, closing = raw[i + 1], ")" if raw[i + 1] == "(" else "}"
    depth, j, quote = 1, i + 2, ""
    while j < len(raw) and depth:
        c = raw[j]
        if c == "\\" and quote != "'":
            j += 2
            continue
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == opening:
            depth += 1
        elif c == closing:
            depth -= 1
        j += 1
    return j


def unquote(raw: str) -> str | None:
    """The word bash would pass for `raw` when it holds no expansion, and with any
    expansion left as written (bashlex gets mixed quoting wrong: `"a"'b'`); None when it
    cannot be read (an unknown `$'\\c'` escape, unbalanced quotes)."""
    chars, why, _ = _lex(raw, Where(), expand=False)
    return None if why else "".join(c for c, _ in chars)


def _lex(raw: str, where: Where, expand: bool = True) -> tuple[_Chars, str, bool]:
    """Quote removal and (`expand`) `~`/`$HOME` expansion; returns (chars, why it cannot
    be known, whether knowing the home directory would resolve it). Without `expand`,
    expansions are kept as written."""
    out: _Chars = []
    i, n = 0, len(raw)
    quote = ""
    if raw.startswith("~") and expand:
        end = raw.find("/")
        prefix = raw[1 : end if end >= 0 else n]
        if prefix and not _NAME.fullmatch(prefix) and prefix not in ("+",):
            # ~- (OLDPWD), ~+1 (the directory stack), ~"x": values of the running shell.
            return [], f"{raw}: {'~' + prefix} is only known when the command runs", False
        if prefix == "+":
            value = where.start
        elif prefix and prefix != where.user:
            return [], f"{raw}: the home of user {prefix!r} is not known", False
        else:
            value = where.home
        if value is None:
            return [], f"{raw}: the target's home directory is not known", True
        out.extend((c, True) for c in value)
        i = len(prefix) + 1
    while i < n:
        c = raw[i]
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                out.append((c, True))
            i += 1
            continue
        if c == "\\":
            if i + 1 >= n:
                out.append((c, quote == '"'))
                i += 1
                continue
            nxt = raw[i + 1]
            if quote == '"' and nxt not in '$`"\\\n':
                out.append((c, True))
                i += 1
                continue
            if nxt != "\n":
                out.append((nxt, True))
            i += 2
            continue
        if c == "'" and not quote:
            quote = "'"
            i += 1
            continue
        if c == '"':
            quote = "" if quote else '"'
            i += 1
            continue
        nxt = raw[i + 1] if i + 1 < n else ""
        if c == "$" and nxt == "'" and not quote:
            decoded = _ansi_c(raw, i)
            if decoded is None:
                return [], f"{raw}: an escape in $'...' that is not decoded here", False
            out.extend((d, True) for d in decoded[0])
            i = decoded[1]
            continue
        if c == "$" and nxt == '"' and not quote:
            i += 1  # $"..." (a translatable string): as "..."
            continue
        if c == "`" or (c == "$" and nxt and nxt in "({"):
            if expand and not re.match(r"\$\{HOME\}", raw[i:]):
                return [], f"{raw}: {raw[i : i + 12]!r} is only known when the command runs", False
            if not expand:
                end = _substitution_end(raw, i)
                out.extend((x, bool(quote)) for x in raw[i:end])
                i = end
                continue
        if c == "$" and expand:
            m = re.match(r"\$(?:HOME\b|\{HOME\})", raw[i:])
            if m:
                if where.home is None:
                    return [], f"{raw}: the target's home directory is not known", True
                out.extend((h, True) for h in where.home)
                i += m.end()
                continue
            if nxt == '"' and quote:
                out.append((c, True))  # "x$": a literal dollar
                i += 1
                continue
            if nxt and (nxt in "{('\"$!@*#?-_" or nxt.isalnum()):
                return [], f"{raw}: {raw[i : i + 12]!r} is only known when the command runs", False
        out.append((c, bool(quote)))
        i += 1
    if quote:
        return [], f"{raw}: unbalanced quotes", False
    return out, "", False


def _braces(chars: _Chars) -> list[_Chars] | None:
    """Bash brace expansion (`a{b,c}d`, nested); a sequence `{1..9}` becomes a `*`
    pattern character (it never contains `/`). None: more than MAX_BRACE_WORDS words."""
    depth, start = 0, -1
    commas: list[int] = []
    for k, (c, quoted) in enumerate(chars):
        if quoted:
            continue
        if c == "{":
            if depth == 0:
                start, commas = k, []
            depth += 1
        elif c == "," and depth == 1:
            commas.append(k)
        elif c == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                head, body, tail = chars[:start], chars[start + 1 : k], chars[k + 1 :]
                if commas:
                    cuts = [start, *commas, k]
                    options = [chars[a + 1 : b] for a, b in itertools.pairwise(cuts)]
                elif re.fullmatch(r"-?\w+\.\.-?\w+(\.\.-?\d+)?", "".join(c for c, _ in body)):
                    options = [[("*", False)]]
                else:
                    # `{x}` is literal; what follows may still hold an expansion.
                    rest = _braces(tail)
                    if rest is None:
                        return None
                    return [chars[: k + 1] + r for r in rest]
                words: list[_Chars] = []
                for option in options:
                    more = _braces(head + option + tail)
                    if more is None or len(words) + len(more) > MAX_BRACE_WORDS:
                        return None
                    words.extend(more)
                return words
    return [chars]


def _pattern(chars: _Chars) -> tuple[str, bool]:
    """The text, and whether it is a glob; in a glob only unquoted `*` and `?` stay
    special and any other special character (bracket expressions included) is `?`."""
    if not any(c in GLOB_CHARS and not q for c, q in chars):
        return "".join(c for c, _ in chars), False
    out: list[str] = []
    k = 0
    while k < len(chars):
        c, quoted = chars[k]
        if not quoted and c == "[":
            close = next(
                (j for j in range(k + 2, len(chars)) if chars[j] == ("]", False)),
                -1,
            )
            if close > 0:
                out.append("?")
                k = close + 1
                continue
        if (quoted and c in "*?") or c in "[]{}\\!":
            out.append("?")
        else:
            out.append(c)
        k += 1
    return "".join(out), True


def is_pattern(raw: str) -> bool:
    """Whether the word as written holds an unquoted glob or a brace expansion."""
    chars, why, _ = _lex(raw, Where(), expand=False)
    if why:
        return False
    words = _braces(chars)
    return words != [chars] or any(c in GLOB_CHARS and not q for c, q in chars)


def expand(raw: str, where: Where) -> Expanded:
    if raw == OPAQUE:
        return Expanded(unresolved="a path only known when the command runs")
    chars, why, needs_home = _lex(raw, where)
    if why:
        return Expanded(unresolved=why, needs_home=needs_home)
    words = _braces(chars)
    if words is None:
        return Expanded(unresolved=f"{raw[:80]}: brace expansion too large")
    texts = tuple(_pattern(w) for w in words)
    return Expanded(texts=texts, braced=words != [chars], needs_home=needs_home)


def _aliased(path: str) -> bool:
    """Whether `path` goes through /proc/<pid>/root or /proc/<pid>/cwd: links the kernel
    follows to another process's root or working directory, so the rest of the path is
    relative to something only known when the command runs."""
    parts = path.split("/")
    return (
        len(parts) > 3
        and fnmatch.fnmatchcase("proc", parts[1])
        and any(fnmatch.fnmatchcase(name, p) for p in parts[2:] for name in ("root", "cwd"))
    )


def normalise(path: str) -> str:
    """Lexically, as the kernel reads the string: repeated slashes, `.` and `..` folded
    (`..` at the root stays at the root)."""
    path = posixpath.normpath(path)
    return "/" + path.lstrip("/") if path.startswith("//") else path


@dataclass
class Paths:
    """What a command's path words resolve to, filled in once every `cd` is known."""

    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    globs: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    trees: list[str] = field(default_factory=list)
    """Directories a recursive operation reads or changes everything under."""
    unresolved: list[str] = field(default_factory=list)
    """Path words whose value is only known when the command runs, and why."""
    needs_home: bool = False
    """Some path needs the target's home directory, which was not given."""
    expansions: bool = False
    """A brace expansion or a glob was seen (the `glob` mark)."""


def working_dirs(cd_words: list[tuple[str | None, bool]], where: Where) -> tuple[list[str], str]:
    """Every directory the command may be working in: where it starts, and where every
    order of its `cd`s (each run at most once, or any number of times inside a loop)
    may lead, since a failed `cd` or a branch makes the real order unknowable. A `cd`
    word None goes home. Returns (dirs, why they are unknown)."""
    start = where.start
    if start is None:
        return [], "the target's home directory is not known"
    moves: list[tuple[list[str], bool]] = []
    for word, looped in cd_words:
        if word is None:
            targets = [where.home] if where.home else []
        else:
            found = expand(word, where)
            if found.unresolved:
                return [], f"cd {found.unresolved}"
            if any(glob for _, glob in found.texts):
                return [], f"cd {word}: a pattern"
            targets = [t for t, _ in found.texts]
        if looped and any(not t.startswith("/") for t in targets):
            return [], f"cd {word}: a relative cd in a loop"
        moves.append((targets, looped))
    dirs = [normalise(start)]
    pending: list[tuple[str, frozenset[int]]] = [(dirs[0], frozenset())]
    while pending:
        here, used = pending.pop()
        for k, (targets, looped) in enumerate(moves):
            if k in used and not looped:
                continue
            for t in targets:
                d = normalise(posixpath.join(here, t))
                if d in dirs and looped:
                    continue
                if d not in dirs:
                    dirs.append(d)
                    if len(dirs) > MAX_CWDS:
                        return [], f"more than {MAX_CWDS} possible working directories"
                pending.append((d, used | {k}))
                if len(pending) > MAX_CWDS * MAX_CWDS:
                    return [], "too many orders of cd to follow"
    return dirs, ""


def homes(tree: str, where: Where, out: Paths) -> None:
    """A recursive operation on `tree` (a pattern, perhaps) also reaches the hidden
    files (`.ssh`, ...) of every home directory under it: they are added as the pattern
    `<home>/.*`."""
    above = [c for c in tree.split("/") if c]
    for home in dict.fromkeys([where.home, "/root", "/home/*"]):
        if home is None:
            continue
        parts = [c for c in home.split("/") if c]
        if len(above) <= len(parts) and all(
            part == "*" or fnmatch.fnmatchcase(part, pattern)
            for part, pattern in zip(parts, above, strict=False)
        ):
            pattern = home + "/.*"
            out.reads.append(pattern)
            out.globs.append(pattern)


def resolve(
    words: list[tuple[str, str, tuple[str, ...]]],
    cd_words: list[tuple[str | None, bool]],
    where: Where,
) -> Paths:
    """`words`: (raw word, "read", "write" or "link", bases). Each becomes absolute
    normalised paths in `reads` (links too, and in `links`) or `writes` (globs in
    `globs` too), or an entry of `unresolved`. A relative word with `bases` (a symbolic
    link's target) is resolved from each base and its directory instead of the working
    directories."""
    out = Paths()
    cwd: list[tuple[list[str], str]] = []

    def dirs_for(bases: tuple[str, ...]) -> tuple[list[str], str]:
        if not bases:
            if not cwd:
                cwd.append(working_dirs(cd_words, where))
                out.needs_home = out.needs_home or where.start is None
            return cwd[0]
        found: list[str] = []
        for base in bases:
            located, why = locate(base, ())
            if why:
                return [], why
            found += [d for p, _ in located for d in (p, posixpath.dirname(p))]
        return list(dict.fromkeys(found)), ""

    def locate(raw: str, bases: tuple[str, ...]) -> tuple[list[tuple[str, bool]], str]:
        found = expand(raw, where)
        out.needs_home = out.needs_home or found.needs_home
        if found.braced or any(glob for _, glob in found.texts):
            out.expansions = True
        if found.unresolved:
            return [], found.unresolved
        located: list[tuple[str, bool]] = []
        for text, glob in found.texts:
            if not text:
                continue
            if text.startswith("/"):
                paths = [normalise(text)]
            else:
                dirs, why = dirs_for(bases)
                if not dirs:
                    return [], f"{raw}: relative path, and {why}"
                paths = [normalise(posixpath.join(d, text)) for d in dirs]
            if glob and any(
                c.startswith(".") and fnmatch.fnmatchcase("..", c) for c in paths[0].split("/")
            ):
                # Older bash matches `..` with `.*`: the path could leave where it seems.
                return [], f"{raw}: a pattern that may match '..'"
            if any(_aliased(p) for p in paths):
                return [], f"{raw}: /proc/<pid>/root and cwd lead anywhere"
            located += [(p, glob) for p in paths]
        return located, ""

    for raw, kind, bases in words:
        located, why = locate(raw, bases)
        if why:
            out.unresolved.append(why)
        for p, glob in located:
            if kind == "tree":
                out.trees.append(p)
                homes(p, where, out)
                continue
            (out.writes if kind == "write" else out.reads).append(p)
            if glob:
                out.globs.append(p)
            if kind == "link":
                out.links.append(p)
    for listed in (out.reads, out.writes, out.globs, out.links, out.trees):
        listed[:] = dict.fromkeys(listed)
    return out
