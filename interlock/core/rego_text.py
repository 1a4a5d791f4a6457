"""Checks and rewrites of Rego source text that keep one policy valid on both engines."""

from __future__ import annotations

import re
from collections.abc import Mapping

from interlock.core.bundle import BundleSource
from interlock.errors import BundleError

_WITH = re.compile(r"\bwith\s+(input|data)\b")
_COMMENT = re.compile(r"#[^\n]*")


def uses_with(text: str) -> bool:
    """True if a module uses the `with` keyword (outside comments)."""
    return bool(_WITH.search(_COMMENT.sub("", text)))


def refuse_with(source: BundleSource) -> None:
    """Raise BundleError if a policy module uses `with`.

    rego-cpp 1.5 aborts the whole process on `with input as ...` over rules that call
    built-ins. A policy module that could kill every proxy is refused at load time, on
    both engines so that a policy stays valid for either; test modules may use `with`,
    since `policy test` runs them in a child process.
    """
    for name, text in source.modules.items():
        if uses_with(text):
            raise BundleError(
                f"{name}: the `with` keyword is not supported in policy modules "
                "(rego-cpp 1.5 can crash on it); use it only in *_test.rego files"
            )


_IMPORT = re.compile(r"^\s*import\s+(data(?:\.[A-Za-z_]\w*)+)(?:\s+as\s+([A-Za-z_]\w*))?\s*$", re.M)
_TOKEN = re.compile(
    r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|#[^\n]*|(?<![\w.])([A-Za-z_]\w*)((?:\.[A-Za-z_]\w*)+)\s*\('
)
"""A string, a comment, or a call through a dotted name (`a.b.c(`: groups `a`, `.b.c`)."""

REGORUS_LACKS = (
    "io.jwt.",
    "crypto.",
    "net.cidr_matches",
    "net.cidr_merge",
    "net.lookup_ip_addr",
    "json.patch",
    "rego.parse_module",
)
"""Built-ins regorus (celine-regorus 0.9.1) does not have, found by calling each OPA
built-in on it; rego-cpp has them (docs/policy-input.md)."""


def calls(text: str) -> set[str]:
    """Dotted names called in `text`, outside strings and comments."""
    return {m.group(1) + m.group(2) for m in _TOKEN.finditer(text) if m.group(1)}


def lacking(modules: Mapping[str, str], table: tuple[str, ...] = REGORUS_LACKS) -> str | None:
    """The first call, in any module, to a built-in in `table` (`module: name`), or None."""
    for name, text in modules.items():
        for call in sorted(calls(text)):
            if call.startswith(table):
                return f"{name}: {call}"
    return None


def spell_out_imports(text: str) -> str:
    """Rewrite `alias.f(` to `data.pkg.f(` for every `import data.pkg [as alias]`.

    Strings and comments are skipped; a call through a local variable of the same name
    as an alias cannot exist in valid Rego (the import would be shadowed, which both
    engines reject), so the rewrite only ever touches calls through the import.
    """
    aliases = {
        (m.group(2) or m.group(1).rsplit(".", 1)[1]): m.group(1) for m in _IMPORT.finditer(text)
    }
    if not aliases:
        return text

    def sub(m: re.Match[str]) -> str:
        alias = m.group(1)
        if alias is None or alias not in aliases:
            return m.group(0)
        return aliases[alias] + m.group(0)[len(alias) :]

    return _TOKEN.sub(sub, text)
