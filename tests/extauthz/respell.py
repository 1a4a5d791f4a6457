"""Respellings of out-of-scope paths, and the paths upstreams that read twice would serve."""

from __future__ import annotations

import re
import unicodedata
import urllib.parse

from hypothesis import strategies as st

from interlock.extauthz.paths import LOOKALIKES


def _resolve(path: str, merge: bool) -> str:
    """Dot segments resolved, `/` and `\\` both separators, clamped at the root; empty
    segments merged first (`merge`, as NGINX does) or kept as segments (RFC 3986)."""
    stack: list[str] = []
    for seg in re.split(r"[/\\]", path)[1:]:
        if seg == "..":
            if stack:
                stack.pop()
        elif seg != "." and (seg or not merge):
            stack.append(seg)
    return "/" + "/".join(s for s in stack if s)


def _iis(text: str) -> str:
    return re.sub(r"%u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)


def readings(raw: str) -> set[str]:
    """The paths that upstreams which decode once, twice, `%uXXXX`, fold Unicode (NFKC)
    or map look-alikes best-fit would serve for `raw`."""
    path = raw.split("#", 1)[0].split("?", 1)[0]
    once = urllib.parse.unquote(path, errors="replace")
    twice = urllib.parse.unquote(once, errors="replace")
    out = set()
    for text in (once, twice, _iis(once), _iis(twice)):
        for variant in (text, unicodedata.normalize("NFKC", text)):
            best_fit = "".join("/" if c in LOOKALIKES else c for c in variant)
            out |= {_resolve(v, merge) for v in (variant, best_fit) for merge in (True, False)}
    return out


def _respell(c: str, how: str, upper: bool) -> str:
    hexes = [f"%{b:02X}" if upper else f"%{b:02x}" for b in c.encode()]
    folded = {"/": "\uff0f", ".": "\uff0e", "\\": "\uff3c"}.get(c, chr(ord(c) + 0xFEE0))
    if how == "plain":
        return c
    if how == "hex":
        return "".join(hexes)
    if how == "double":
        return "".join("%25" + h[1:] for h in hexes)
    if how == "half-double":
        return "".join(f"%%{ord(h[1]):02x}%{ord(h[2]):02x}" for h in hexes)
    if how == "iis":
        return f"%u{ord(c):04x}"
    if how == "overlong":
        return f"%c0%{0x80 | (ord(c) & 0x3F):02x}" if ord(c) < 0x80 else c
    if how == "fullwidth":
        return urllib.parse.quote(folded)
    if how == "lookalike":
        return urllib.parse.quote("\u2215") if c == "/" else c
    raise AssertionError(how)


HOWS = ["plain", "hex", "double", "half-double", "iis", "overlong", "fullwidth", "lookalike"]
OUT_OF_SCOPE = [
    "/public/../admin",
    "/public/./../admin",
    "/public/../../admin/x",
    "/public//../admin",
    "/public/a/b",
]


@st.composite
def respellings(draw: st.DrawFn) -> str:
    """An out-of-scope path with each character after the first respelled one way."""
    template = draw(st.sampled_from(OUT_OF_SCOPE))
    return template[0] + "".join(
        _respell(c, draw(st.sampled_from(HOWS)), draw(st.booleans())) for c in template[1:]
    )
