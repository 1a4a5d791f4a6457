"""The request body as a decision sees it: size, completeness, JSON, text for DLP.

Envoy forwards at most `max_request_bytes` of a body and says how long it really was in
`content-length`; a body cut short is `truncated` (OPA's plugin then leaves
`parsed_body` null, and so do we). A complete body that claims to be JSON and is not is
a denial: a policy must never decide on a body it could not read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TEXTUAL = ("json", "text/", "x-www-form-urlencoded", "xml", "javascript")


class BadBody(ValueError):
    """A body that cannot be read as what it claims to be; the request is denied."""


@dataclass(frozen=True)
class Body:
    size: int
    truncated: bool = False
    parsed: Any = None
    """The JSON document, for complete `application/json` bodies."""
    text: str | None = None
    """Textual bodies decoded, for the DLP scan."""


def read_body(raw: bytes, headers: Mapping[str, str], max_bytes: int) -> Body:
    if len(raw) > max_bytes:
        raise BadBody(f"body larger than {max_bytes} bytes")
    declared = headers.get("content-length")
    truncated = False
    if declared is not None:
        try:
            length = int(declared.strip())
        except ValueError as exc:
            raise BadBody(f"bad content-length {declared[:40]!r}") from exc
        if length < 0:
            raise BadBody("negative content-length")
        truncated = length > len(raw)
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
    parsed = None
    if "application/json" in ctype and not truncated:
        try:
            parsed = json.loads(text or "")
        except ValueError as exc:
            raise BadBody(f"malformed JSON body: {exc}"[:200]) from exc
    return Body(len(raw), truncated, parsed, text)
