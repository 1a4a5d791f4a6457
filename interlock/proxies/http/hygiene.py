"""Requests that are malformed or ambiguous are refused before anyone decides on them.

mitmproxy's HTTP/1 parser already refuses most smuggling shapes; this addon adds what a
policy engine needs on top: header names and values must be UTF-8 (a policy cannot reason
about bytes it cannot read), and a request may not carry both Content-Length and
Transfer-Encoding, or several differing Content-Length values.
"""

from __future__ import annotations

import json

from mitmproxy import http


def bad_request(flow: http.HTTPFlow, reason: str) -> None:
    flow.response = http.Response.make(
        400,
        json.dumps({"error": "malformed request", "reason": reason}),
        {"Content-Type": "application/json", "Connection": "close"},
    )


class Hygiene:
    """mitmproxy addon; runs before identity and policy."""

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        for name, value in flow.request.headers.fields:
            try:
                name.decode("utf-8")
                value.decode("utf-8")
            except UnicodeDecodeError:
                bad_request(flow, "header names and values must be UTF-8")
                return
        lengths = set(flow.request.headers.get_all("content-length"))
        if len(lengths) > 1:
            bad_request(flow, "conflicting Content-Length headers")
        elif lengths and "transfer-encoding" in flow.request.headers:
            bad_request(flow, "both Content-Length and Transfer-Encoding")
