"""Requests that are malformed, ambiguous or oversized are refused before anyone decides.

mitmproxy's HTTP/1 parser refuses most smuggling shapes and checks header names, but not
methods, header values or sizes: a bare CR inside a value (`X-A: foo\\rX-B: 1`, which
some servers split into two headers), a method `G@T`, a 64 KiB method or 20,000 headers
all went upstream. Everything RFC 9110/9112 forbids is refused here, and so is what a
policy cannot read (non-UTF-8 fields) or what exceeds the configured limits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from mitmproxy import http

from interlock.proxies.http.answer import refuse

MAX_HEADER_BYTES = 60 * 1024
"""Envoy's default `max_request_headers_kb` (60 KiB)."""
MAX_HEADERS = 100
"""Envoy's default `max_request_headers_count`."""
MAX_METHOD = 32
"""Longer than any registered method (IANA's longest, BASELINE-CONTROL, is 16)."""

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""RFC 9110 5.6.2 token: methods and field names."""
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
"""RFC 9110 5.5 field-value: no CR, LF, NUL or other control but HTAB."""
_TARGET = re.compile(rb"[\x21-\x7e]+")
"""RFC 9112 3.2 request-target: URI characters only, no whitespace or controls, ASCII."""
_AMBIGUOUS_PATH = re.compile(rb"\\|%(?![0-9A-Fa-f]{2})")
"""Read differently by different servers: a backslash (a separator to some) and a `%`
that does not start an escape (kept, dropped or refused depending on the server). A
fragment (`#`) is not part of a request target at all (RFC 9112 3.2)."""
CONTENT_CODINGS = frozenset({"gzip", "deflate", "br", "zstd", "identity"})
"""Request Content-Encodings mitmproxy decodes itself, so the decision and DLP read the
body. For any other name it falls back to Python's codecs (`base64`, `rot13`...), which no
server shares, and it decodes only one of several codings (`gzip, gzip`)."""


def bad_request(flow: http.HTTPFlow, reason: str) -> None:
    refuse(
        flow,
        400,
        {"error": "malformed request", "reason": reason},
        {"Content-Type": "application/json", "Connection": "close"},
    )


def header_problem(fields: Iterable[tuple[bytes, bytes]]) -> str | None:
    """What is wrong with these header fields as RFC 9110 and a policy see them."""
    for name, value in fields:
        if not _TOKEN.fullmatch(name):
            return f"invalid header name {name[:64]!r}"
        if not _FIELD_VALUE.fullmatch(value):
            return f"control character in the value of {name.decode()!r}"
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return "header names and values must be UTF-8"
    return None


def request_problem(
    request: http.Request, max_header_bytes: int = MAX_HEADER_BYTES, max_headers: int = MAX_HEADERS
) -> str | None:
    """Why `request` (its head) may not be decided on or forwarded, or None."""
    method = request.data.method
    if len(method) > MAX_METHOD or not _TOKEN.fullmatch(method):
        return f"invalid method {method[:MAX_METHOD]!r}"
    if method != method.upper():
        # Methods are case-sensitive (RFC 9110 9.1): the policy reads mitmproxy's
        # upper-cased `Request.method`, the upstream would receive `get` or `pOsT`.
        return f"method {method.decode()!r} is not upper-case"
    fields = request.headers.fields
    if len(fields) > max_headers:
        return f"{len(fields)} header fields, more than the limit of {max_headers}"
    size = len(method) + len(request.data.path) + len(request.data.authority)
    size += sum(len(n) + len(v) + 4 for n, v in fields)
    if size > max_header_bytes:
        return f"request head of {size} bytes, more than the limit of {max_header_bytes}"
    for part in (request.data.path, request.data.authority):
        if part and not _TARGET.fullmatch(part):
            return "request target with whitespace, control or non-ASCII characters"
    problem = target_problem(method, request.data.path)
    if problem is not None:
        return problem
    path = request.data.path.split(b"?", 1)[0]
    if _AMBIGUOUS_PATH.search(path) or b"#" in request.data.path:
        return "path with a backslash, a fragment or a malformed percent-encoding"
    if any(not host.isascii() for host in request.headers.get_all("host")):
        # Python's IDNA mapping folds fullwidth letters, a soft hyphen or a long s into
        # the destination's name, so the same-host check would pass a Host that goes
        # upstream as other bytes.
        return "Host header with non-ASCII characters"
    problem = header_problem(fields)
    if problem is not None:
        return problem
    return framing_problem(request.headers)


def target_problem(method: bytes, path: bytes) -> str | None:
    """A request target that is not origin form (RFC 9112 3.2.1) as mitmproxy sends it:
    an absolute URL or an authority in an HTTP/2 `:path` reaches the upstream as a request
    line naming another host, and `//host/x` is a network-path reference to some servers
    and URL libraries. Only OPTIONS may ask for `*`; a CONNECT has no path."""
    if method == b"CONNECT":
        return None
    if path == b"*":
        return None if method == b"OPTIONS" else "request target `*` is only for OPTIONS"
    if not path.startswith(b"/") or path.startswith(b"//"):
        return f"request path {path[:64].decode(errors='replace')!r} is not origin form"
    return None


def framing_problem(headers: http.Headers) -> str | None:
    """Smuggling shapes mitmproxy's parser lets through, and upgrades it would turn
    into a raw pipe."""
    lengths = set(headers.get_all("content-length"))
    codings = headers.get_all("transfer-encoding")
    if len(lengths) > 1:
        return "conflicting Content-Length headers"
    if lengths and codings:
        return "both Content-Length and Transfer-Encoding"
    if codings and [c.strip().lower() for c in codings] != ["chunked"]:
        # gzip,chunked would reach an upstream as gzip bytes without their coding once
        # dechunked; nothing but plain chunked is read the same by every server.
        return f"unsupported Transfer-Encoding {', '.join(codings)!r}"
    if len(headers.get_all("host")) > 1:
        return "more than one Host header"
    encodings = headers.get_all("content-encoding")
    if encodings and (len(encodings) > 1 or encodings[0].strip().lower() not in CONTENT_CODINGS):
        named = ", ".join(encodings)[:64]
        return f"unsupported Content-Encoding {named!r} (one of gzip, deflate, br, zstd, identity)"
    upgrade = headers.get("upgrade")
    # `h2c` is what curl offers on plain http; mitmproxy's DisableH2C removes exactly it.
    if upgrade is not None and upgrade.strip().lower() != "websocket" and upgrade != "h2c":
        return f"upgrade to {upgrade[:64]!r} is not supported (only websocket)"
    return None


VERSIONS = frozenset({"HTTP/1.0", "HTTP/1.1"})
"""HTTP/1 versions a request line may carry; other minor versions (`HTTP/1.2`, which
servers may read as 1.1 or refuse) and `HTTP/2.0` outside an h2 connection are refused."""


class Hygiene:
    """mitmproxy addon; runs before identity and policy."""

    def __init__(self, max_header_bytes: int = MAX_HEADER_BYTES, max_headers: int = MAX_HEADERS):
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        await self.requestheaders(flow)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        version = flow.request.http_version
        if version not in VERSIONS and not (
            version == "HTTP/2.0" and flow.client_conn.alpn == b"h2"
        ):
            bad_request(flow, f"unsupported HTTP version {version[:16]!r}")
            return
        problem = request_problem(flow.request, self.max_header_bytes, self.max_headers)
        if problem is not None:
            bad_request(flow, problem)
