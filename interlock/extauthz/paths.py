"""The path a decision is made on: one canonical spelling for every way to write it.

A policy that allows `/public/*` must not be talked into `/admin` by a path the upstream
reads differently from the policy. `normalise` percent-decodes each segment, resolves `.`
and `..` and merges slashes (and, when not strict, drops `;` parameters and the
fragment), so `/public/../admin` and `/public//x/./y` are decided as what they mean.

What servers disagree about is refused rather than guessed: `..;x=y` (servlet
containers drop the parameter and climb, others see a file name), `%2e%2e` (some decode
before resolving dots, some after), an encoded slash or backslash (`%2F`, `%5C`: one
server splits there, another does not), a `..` that climbs above the root, control
characters, bytes that are not UTF-8, a `..` after an empty segment (`/a//../b` is `/b`
where `//` is one separator, `/a/b` where the empty segment counts). Whichever way the
upstream reads such a path, the policy would have judged a different one.

`strict` (the default, `[extauthz] strict_path_encoding`) also refuses what changes meaning
on a *second* reading: a `%` left after decoding (`%252e%252e` is `%2e%2e` once, `..`
twice), an encoded `;`, `?` or `#` (an upstream that decodes and re-parses cuts there)
or a raw `#` (never sent by a client; some servers serve it as part of the path), `;`
parameters (dropped by servlet containers, part of the name elsewhere),
characters that Unicode compatibility folding (NFKC) turns into something else (U+FF0F
FULLWIDTH SOLIDUS is `/`, U+FF0E is `.`, full-width letters are ASCII), look-alikes of
`/`, `\\`, `.` and `%` that NFKC keeps but best-fit code-page mappings do not (U+2215
DIVISION SLASH, U+2216 SET MINUS, U+3002 IDEOGRAPHIC FULL STOP), invisible formatting
characters (zero-width space, soft hyphen, bidi overrides), and segments of
dots and spaces other than `.` and `..` (Windows trims `.. ` and `...`).

Pure functions; the raw path is kept beside the normalised one for the record.
"""

from __future__ import annotations

import unicodedata
import urllib.parse
from dataclasses import dataclass

MAX_PATH = 8192
MAX_QUERY_FIELDS = 1000
REPARSED = frozenset(";?#")
"""Delimiters that an encoded spelling hides from the first parse but not the second."""
LOOKALIKES = frozenset(
    "\u2044\u2215\u2571\u29f8\u3033"  # fraction, division, box, big, kana: slashes
    "\u2216\u29f5\u29f9"  # set minus, reverse solidus operator, big: backslashes
    "\u3002"  # ideographic full stop: IDNA and best-fit mappings read it as `.`
    "\u066a\u2052"  # Arabic percent, commercial minus: percent signs
    "\u0337\u0338\u20e5"  # combining slash overlays
)
"""NFKC-stable look-alikes of `/`, `\\`, `.` and `%` (Unicode confusables.txt, and the
Windows best-fit tables behind the "WorstFit" attacks); NFKC-changing ones are refused
by the folding check."""


_PLAIN_EXCEPT = frozenset("%/\\;?#")
"""Characters that send a printable ASCII segment through the full decoding."""


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


def _decode(segment: str, strict: bool) -> str:
    if segment.isascii() and segment.isprintable() and not _PLAIN_EXCEPT.intersection(segment):
        # Most segments: printable ASCII with nothing encoded. Decoding leaves them as
        # they are, and of `_decode_in_full`'s checks only the last can refuse them (no
        # control character, NFKC change, look-alike or format character is printable
        # ASCII); tests/extauthz/test_paths.py holds the two equal.
        if strict and segment not in (".", "..") and "." in segment and not segment.strip(". "):
            raise BadPath("dot segment spelled with extra dots or spaces")
        return segment
    return _decode_in_full(segment, strict)


def _decode_in_full(segment: str, strict: bool) -> str:
    try:
        text = urllib.parse.unquote(segment, errors="strict")
    except UnicodeDecodeError as exc:
        raise BadPath("path is not UTF-8 once percent-decoded") from exc
    if "/" in text or "\\" in text:
        raise BadPath("encoded slash or backslash in path")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise BadPath("control character in path")
    if strict:
        _second_reading(text)
    return text


def _second_reading(text: str) -> None:
    """Refuse a decoded segment that a second decode, a re-parse or Unicode folding would
    read as something else."""
    if "%" in text:
        raise BadPath("'%' left in path after percent-decoding (double encoding?)")
    if REPARSED.intersection(text):
        raise BadPath("encoded ';', '?' or '#' in path")
    folded = unicodedata.normalize("NFKC", text)
    if folded != text:
        if any(c in folded for c in "/\\.%"):
            raise BadPath("look-alike of '/', '\\', '.' or '%' in path (Unicode NFKC)")
        raise BadPath("path changes under Unicode folding (NFKC)")
    if LOOKALIKES.intersection(text):
        raise BadPath("look-alike of '/', '\\', '.' or '%' in path")
    if any(unicodedata.category(c) == "Cf" for c in text):
        # Zero-width spaces, soft hyphens, bidi overrides: dropped by some normalisers,
        # and they hide what a path says from the person approving it.
        raise BadPath("invisible formatting character in path")
    if text not in (".", "..") and "." in text and not text.strip(". "):
        raise BadPath("dot segment spelled with extra dots or spaces")


def normalise(raw: str, strict: bool = True) -> NormalPath:
    if len(raw) > MAX_PATH:
        raise BadPath(f"path longer than {MAX_PATH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise BadPath("control character in path")
    if strict and "#" in raw:
        raise BadPath("'#' in request target (clients never send fragments)")
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
    after_empty = False
    for part in parts:
        bare = part.split(";", 1)[0]
        segment = _decode(bare, strict)
        if segment in (".", "..") and bare != part:
            raise BadPath("path parameters on a dot segment")
        if strict and bare != part:
            raise BadPath("';' parameters in path (servlet containers drop them, others do not)")
        if segment in (".", "..") and bare != segment:
            raise BadPath("percent-encoded dot segment")
        if segment in ("", "."):
            after_empty = after_empty or segment == ""
            continue
        if segment == ".." and after_empty:
            # `/a//../b`: `/b` if `//` is one separator (NGINX, interlock), `/a/b` if the
            # empty segment counts (RFC 3986 resolution, Envoy's normalize_path).
            raise BadPath("'..' after an empty segment ('//')")
        after_empty = False
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
