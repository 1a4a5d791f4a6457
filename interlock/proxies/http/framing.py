"""Every request leaves framed by a Content-Length that matches the body that was decided.

mitmproxy converts an HTTP/2 request to HTTP/1.1 without adding framing: a streamed h2
body (no `content-length`) went upstream as `POST ... HTTP/1.1` with neither
Content-Length nor Transfer-Encoding, and the body, which the policy had read as data,
was read by the upstream as a second request that nobody decided (issue 19). Bodies are
always buffered whole before the decision (no `stream_large_bodies`), so the exact
length is known: this addon, the last to see a request, states it, whatever protocol
the client and the upstream speak. Chunked transfer coding is dropped for the same
reason (the body is already dechunked); trailers are refused, since no HTTP/1.1
upstream framing without chunking can carry them and the policy never saw them.
"""

from __future__ import annotations

from mitmproxy import http

from interlock.proxies.http.hygiene import bad_request, header_problem


def frame(request: http.Request) -> str | None:
    """Set the framing of `request` from its buffered body; the reason to refuse it
    instead, or None."""
    if request.trailers:
        return "request trailers are not forwarded (the policy cannot see them)"
    problem = header_problem(request.headers.fields)
    if problem is not None:
        return problem
    body = request.raw_content or b""
    declared = request.headers.get_all("content-length")
    if declared and declared != [str(len(body))]:
        return "Content-Length does not match the body received"
    request.headers.pop("transfer-encoding", None)
    if body or declared or request.method.upper() not in BODILESS:
        request.headers["content-length"] = str(len(body))
    return None


BODILESS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
"""Methods whose requests usually have no body: no `Content-Length: 0` is added to
them (RFC 9110 9.3: a client should not send one when there is no content)."""


class Framing:
    """mitmproxy addon, added twice: first of all (the policy decides on the framed
    request) and last of all (whatever an obligation or credential injection changed,
    what leaves is framed and valid)."""

    def __init__(self, name: str = "framing") -> None:
        self.name = name

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        problem = frame(flow.request)
        if problem is not None:
            bad_request(flow, problem)
