"""The request body as a decision sees it: size, completeness, JSON, text for DLP.

Envoy forwards at most `max_request_bytes` of a body and says how long it really was in
`content-length`; a body cut short is `truncated` (OPA's plugin then leaves
`parsed_body` null, and so do we). A complete body that claims to be JSON or a form and
is not is a denial: a policy must never decide on a body it could not read. Forms are
parsed as OPA's plugin parses them (see `form.py`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from interlock.classify.content import MAX_SCAN
from interlock.classify.form import BadForm, boundary, parse_multipart, parse_urlencoded

TEXTUAL = ("json", "text/", "x-www-form-urlencoded", "xml", "javascript")
PARSED = ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")
"""Bodies given to the policy parsed: what cannot be read whole is refused."""


class BadBody(ValueError):
    """A body that cannot be read as what it claims to be; the request is denied."""


@dataclass(frozen=True)
class Body:
    size: int
    truncated: bool = False
    parsed: Any = None
    """The JSON document for complete `application/json` bodies; name -> list of values
    for complete `application/x-www-form-urlencoded` and `multipart/form-data` ones."""
    text: str | None = None
    """Textual bodies decoded, for the DLP scan; and any other body that decodes as UTF-8
    (the type is the sender's claim: none, `text/plain` or `application/octet-stream`
    carry JSON and keys as well), as the HTTP proxy's `body_text` reads it."""
    document: Any = None
    """The JSON document the body is, whatever its Content-Type says: what interlock
    classifies (an MCP `tools/call`, a batch). Servers that read a body as JSON without
    looking at its type (Starlette's and aiohttp's `request.json()`, Go's
    `json.NewDecoder`) run a `tools/call` sent as `text/plain` or untyped; `parsed` stays
    what OPA's plugin gives, for OPA-Envoy policies."""

    @property
    def json_like(self) -> bool:
        """Whether the text starts as a JSON object or array does (a cut one cannot be
        read, and must not pass as a plain write)."""
        return _json_like(self.text)


def _json_like(text: str | None) -> bool:
    return text is not None and text.lstrip()[:1] in ("{", "[")


def read_body(raw: bytes, headers: Mapping[str, str], max_bytes: int) -> Body:
    if len(raw) > max_bytes:
        raise BadBody(f"body larger than {max_bytes} bytes")
    declared = headers.get("content-length")
    # Envoy says itself when it cut the body (a chunked or HTTP/2 request has no
    # content-length to compare with); a client cannot clear it, only set it.
    truncated = headers.get("x-envoy-auth-partial-body", "").strip().lower() == "true"
    if declared is not None:
        try:
            length = int(declared.strip())
        except ValueError as exc:
            raise BadBody(f"bad content-length {declared[:40]!r}") from exc
        if length < 0:
            raise BadBody("negative content-length")
        truncated = truncated or length > len(raw)
    if not raw:
        return Body(0, truncated)
    ctype = headers.get("content-type", "").lower()
    text = None
    if any(t in ctype for t in TEXTUAL):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            if not truncated:
                raise BadBody("textual body is not UTF-8") from None
            # A cut may fall inside a character; only the tail can be partial.
            text = raw.decode("utf-8", "replace")
    elif "multipart/form-data" not in ctype:
        # Not declared textual: read as text if it is (binary is not scanned). A large
        # upload its sender calls binary is left unscanned, as the HTTP proxy leaves it,
        # unless it is JSON, which servers read as an action whatever its type says.
        text = _utf8(raw, truncated)
        if text is not None and len(text) > MAX_SCAN and not _json_like(text):
            text = None
    if truncated:
        return Body(len(raw), truncated, None, text)
    parsed = None
    try:
        if "application/json" in ctype:
            parsed = json.loads(text or "")
        elif "application/x-www-form-urlencoded" in ctype:
            parsed = parse_urlencoded(text or "")
        elif "multipart/form-data" in ctype and (mark := boundary(headers["content-type"])):
            parsed = parse_multipart(raw, mark)
            # The fields' text, for the DLP scan.
            values = [v for vs in parsed.values() for v in vs]
            text = "\n".join(v if isinstance(v, str) else json.dumps(v) for v in values)
    except BadForm as exc:
        raise BadBody(str(exc)) from exc
    except ValueError as exc:
        raise BadBody(f"malformed JSON body: {exc}"[:200]) from exc
    if "application/json" in ctype:
        document = parsed
    else:
        document = None if any(t in ctype for t in PARSED) else _document(text)
    return Body(len(raw), truncated, parsed, text, document)


def _utf8(raw: bytes, truncated: bool) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if truncated and exc.start >= len(raw) - 3:
            return raw.decode("utf-8", "replace")  # cut inside the last character
        return None


def _document(text: str | None) -> Any:
    """JSON under another type or none: read for classification, never refused (a text
    that starts with `{` need not be JSON)."""
    if not _json_like(text):
        return None
    try:
        return json.loads(text or "")
    except ValueError:
        return None
