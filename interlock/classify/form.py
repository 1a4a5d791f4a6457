"""Form bodies as OPA's Envoy plugin gives them in `parsed_body`: name -> list of values.

`application/x-www-form-urlencoded` is read as Go's `url.ParseQuery` reads it (pairs split
on `&`, `+` is a space, a `;` or a malformed escape is an error), `multipart/form-data` as
Go's `mime/multipart` reader (bare-LF line endings accepted, preamble and epilogue
ignored, a part whose content type is JSON parsed as JSON).

Where the plugin is lenient and an upstream might read the body differently, the body
is refused instead (`BadForm`): a part without a `form-data` name (the plugin skips it,
the upstream may not), a `Content-Transfer-Encoding` other than identity (the plugin
decodes quoted-printable, most frameworks do not), folded part headers, a repeated
`Content-Disposition`, a missing closing boundary. Pure functions.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from email.message import Message
from email.utils import collapse_rfc2231_value
from typing import Any

MAX_FIELDS = 1000
"""As many as `paths.MAX_QUERY_FIELDS`: a form is a query string in a body."""
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_IDENTITY = frozenset({"7bit", "8bit", "binary"})


class BadForm(ValueError):
    """A form body that cannot be given one reading; the request is denied."""


def _unescape(text: str) -> str:
    if _BAD_ESCAPE.search(text):
        raise BadForm("malformed percent-escape in form body")
    try:
        return urllib.parse.unquote_plus(text, errors="strict")
    except UnicodeDecodeError as exc:
        raise BadForm("form body is not UTF-8 once percent-decoded") from exc


def parse_urlencoded(text: str) -> dict[str, list[str]]:
    """`a=1&a=2&b` -> {"a": ["1", "2"], "b": [""]}."""
    out: dict[str, list[str]] = {}
    pairs = [p for p in text.split("&") if p]
    if len(pairs) > MAX_FIELDS:
        raise BadForm(f"more than {MAX_FIELDS} form fields")
    for pair in pairs:
        if ";" in pair:
            raise BadForm("';' in form body (a separator to some parsers, not to others)")
        key, _, value = pair.partition("=")
        out.setdefault(_unescape(key), []).append(_unescape(value))
    return out


def _params(header: str, name: str) -> tuple[str, str | None]:
    """The type and one parameter of a MIME header value (RFC 2231 `name*=` included)."""
    m = Message()
    m["content-type"] = header
    value = m.get_param(name)
    kind = header.split(";", 1)[0].strip().lower()
    if value is None:
        return kind, None
    return kind, collapse_rfc2231_value(value)


def boundary(content_type: str) -> str | None:
    return _params(content_type, "boundary")[1] or None


def _delimiter_at(raw: bytes, at: int, delim: bytes, nl: bytes) -> tuple[int, bool] | None:
    """If a delimiter line starts at `at`: where the next part starts, and if it is the
    close delimiter."""
    if not raw.startswith(delim, at):
        return None
    rest = at + len(delim)
    if raw.startswith(b"--", rest):
        return len(raw), True
    while rest < len(raw) and raw[rest] in b" \t":
        rest += 1
    return (rest + len(nl), False) if raw.startswith(nl, rest) else None


def _headers(block: bytes, nl: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(nl):
        if line[:1] in (b" ", b"\t"):
            raise BadForm("folded header in a multipart part")
        name, colon, value = line.decode("utf-8", "replace").partition(":")
        key = name.strip().lower()
        if not colon or key in headers:
            raise BadForm(f"malformed or repeated multipart part header {key[:40]!r}")
        headers[key] = value.strip()
    return headers


def _value(body: bytes, headers: dict[str, str]) -> Any:
    if "application/json" in headers.get("content-type", "").lower():
        try:
            return json.loads(body)
        except ValueError as exc:
            raise BadForm(f"malformed JSON in a multipart part: {exc}"[:200]) from exc
    # File contents may be binary: bytes that are not UTF-8 read as U+FFFD.
    return body.decode("utf-8", "replace")


def parse_multipart(raw: bytes, boundary: str) -> dict[str, list[Any]]:
    delim = b"--" + boundary.encode("utf-8", "replace")
    at = 0 if raw.startswith(delim) else raw.find(b"\n" + delim)
    if at < 0:
        raise BadForm("multipart body without its boundary")
    at += 0 if raw.startswith(delim) else 1
    line_end = raw.find(b"\n", at)
    nl = b"\r\n" if line_end > 0 and raw[line_end - 1 : line_end] == b"\r" else b"\n"
    found = _delimiter_at(raw, at, delim, nl)
    if found is None or found[1]:
        raise BadForm("multipart body without parts")
    start, count = found[0], 0
    out: dict[str, list[Any]] = {}
    while True:
        head_end = raw.find(nl + nl, start - len(nl))
        if head_end < 0:
            raise BadForm("multipart part without the end of its headers")
        headers = _headers(raw[start:head_end], nl) if head_end > start else {}
        body_start = head_end + 2 * len(nl)
        search, nxt = body_start, None
        while nxt is None:
            end = raw.find(nl + delim, search)
            if end < 0:
                raise BadForm("multipart body without its closing boundary")
            nxt = _delimiter_at(raw, end + len(nl), delim, nl)
            search = end + 1
        count += 1
        if count > MAX_FIELDS:
            raise BadForm(f"more than {MAX_FIELDS} multipart parts")
        if headers.get("content-transfer-encoding", "binary").lower() not in _IDENTITY:
            raise BadForm("multipart part with a content-transfer-encoding")
        kind, name = _params(headers.get("content-disposition", ""), "name")
        if kind != "form-data" or not name:
            raise BadForm("multipart part without a form-data name")
        out.setdefault(name, []).append(_value(raw[body_start:end], headers))
        if nxt[1]:
            return out
        start = nxt[0]
