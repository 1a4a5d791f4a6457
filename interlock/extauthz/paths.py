"""The path a decision is made on: one canonical spelling for every way to write it.

A policy that allows `/public/*` must not be talked into `/admin` by a path the upstream
reads differently from the policy. `normalise` percent-decodes each segment, drops `;`
parameters, resolves `.` and `..`, merges slashes and drops the fragment, so
`/public/../admin` and `/public//x/./y` are decided as what they mean.

What servers disagree about is refused rather than guessed: `..;x=y` (servlet
containers drop the parameter and climb, others see a file name), `%2e%2e` (some decode
before resolving dots, some after), an encoded slash or backslash (`%2F`, `%5C`: one
server splits there, another does not), a `..` that climbs above the root, control
characters, bytes that are not UTF-8. Whichever way the upstream reads such a path, the
policy would have judged a different one.

Pure functions; the raw path is kept beside the normalised one for the record.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

MAX_PATH = 8192
MAX_QUERY_FIELDS = 1000


class BadPath(ValueError):
    """A request path that cannot be given one meaning; the request is denied."""


@dataclass(frozen=True)
class NormalPath:
    path: str
    """Decoded, dot-free, single-slashed, without query or fragment."""
    query: str
    """The raw query string (without `?`)."""

    @property
    def segments(self) -> list[str]:
        """As OPA's Envoy plugin gives `parsed_path`: `/a/b` -> ["a", "b"], `/` -> [""]."""
        return self.path.lstrip("/").split("/")

    @property
    def with_query(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


def _decode(segment: str) -> str:
    try:
        text = urllib.parse.unquote(segment, errors="strict")
    except UnicodeDecodeError as exc:
        raise BadPath("path is not UTF-8 once percent-decoded") from exc
    if "/" in text or "\\" in text:
        raise BadPath("encoded slash or backslash in path")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise BadPath("control character in path")
    return text


def normalise(raw: str) -> NormalPath:
    if len(raw) > MAX_PATH:
        raise BadPath(f"path longer than {MAX_PATH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise BadPath("control character in path")
    without_fragment = raw.split("#", 1)[0]
    path, _, query = without_fragment.partition("?")
    if path == "*":
        return NormalPath("*", query)
    if not path.startswith("/"):
        raise BadPath("path must start with '/'")
    if "\\" in path:
        raise BadPath("backslash in path")
    stack: list[str] = []
    parts = path.split("/")[1:]
    for part in parts:
        bare = part.split(";", 1)[0]
        segment = _decode(bare)
        if segment in (".", "..") and bare != part:
            raise BadPath("path parameters on a dot segment")
        if segment in (".", "..") and bare != segment:
            raise BadPath("percent-encoded dot segment")
        if segment in ("", "."):
            continue
        if segment == "..":
            if not stack:
                raise BadPath("path climbs above the root")
            stack.pop()
            continue
        stack.append(segment)
    trailing = path.endswith("/") and bool(stack)
    return NormalPath("/" + "/".join(stack) + ("/" if trailing else ""), query)


def parse_query(query: str) -> dict[str, list[str]]:
    """`a=1&a=2&b` -> {"a": ["1", "2"], "b": [""]}, as OPA's plugin builds `parsed_query`."""
    if not query:
        return {}
    try:
        pairs = urllib.parse.parse_qsl(
            query, keep_blank_values=True, errors="strict", max_num_fields=MAX_QUERY_FIELDS
        )
    except UnicodeDecodeError as exc:
        raise BadPath("query is not UTF-8 once percent-decoded") from exc
    except ValueError as exc:
        raise BadPath(f"more than {MAX_QUERY_FIELDS} query parameters") from exc
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out
