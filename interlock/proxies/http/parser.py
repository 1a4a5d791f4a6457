"""What mitmproxy's HTTP/1 and HTTP/2 server layers refuse before any addon sees it, audited.

A request line mitmproxy cannot parse (`GET /` with no version, a bad authority, bytes
that are not HTTP at all), a head whose framing it cannot read (a Content-Length that is
not a number), and an origin-form request with no Host on the forward listener, are
answered 400 by mitmproxy's own HTTP/1 server layer, with its fixed HTML page, before any
hook runs: no guard could record them. `ParserGuard` puts `AuditedHttp1Server` in
mitmproxy's place on every HTTP layer (the slot mitmproxy keeps for client playback,
`HttpLayer.connections`). It asks the addons through its own blocking hook
(`http_parser_refused`) before it answers, so the answer is interlock's JSON refusal
naming the decision id, and no flow is made for the refused request. Where mitmproxy
refuses after a flow's hooks ran (its header validation, the body limit, the socket the
SSRF guard refused), the flow's own audited refusal is sent instead of the page; a bad
chunk, found while a flow's body is read, reaches the `error` hook
(`refusals.Refusals`) and the connection is closed. Over HTTP/2 (inside a
tunnel) every refusal of the client's frames or header block ends the whole connection
(GOAWAY) through one method, `protocol_error`: `AuditedHttp2Server` audits it there,
once, and names the decision in the GOAWAY's debug data.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h2.errors
from mitmproxy import connection, http
from mitmproxy.connection import ConnectionState
from mitmproxy.proxy import commands, events, layer, layers
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http._base import HttpEvent, ReceiveHttp
from mitmproxy.proxy.layers.http._events import (
    ErrorCode,
    RequestProtocolError,
    ResponseProtocolError,
)
from mitmproxy.proxy.layers.http._http1 import Http1Server
from mitmproxy.proxy.layers.http._http2 import Http2Server

from interlock.proxies.http.answer import COUNTED, MAX_QUOTED_REASON, REFUSAL


@dataclass
class ParserRefusal:
    client: connection.Client
    target: str
    """The host its tunnel or reverse route leads to, else the one its head names ("":
    no head was read)."""
    reason: str
    request: http.Request | None = None
    """Its head, when mitmproxy could read that much (for the credentials it carries)."""
    decision_id: str | None = None
    """Set by the addon that audited it; None when the record was rate-limited."""


@dataclass
class HttpParserRefusedHook(commands.StartHook):  # type: ignore[no-untyped-call]  # mitmproxy's Hook.__init_subclass__
    """mitmproxy's HTTP server layer refused what a client sent before any flow existed
    (addons: `http_parser_refused(refusal)`, which sets `refusal.decision_id`)."""

    refusal: ParserRefusal


def answer(refusal: ParserRefusal) -> bytes:
    """interlock's 400, as `answer.refuse` would write it, closing the connection."""
    body: dict[str, str] = {"error": "malformed request", "reason": refusal.reason}
    if refusal.decision_id is not None:
        body["decision_id"] = refusal.decision_id
    else:
        body["audit"] = COUNTED
    content = json.dumps(body).encode()
    head = (
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
        f"Connection: close\r\nContent-Length: {len(content)}\r\n\r\n"
    )
    return head.encode() + content


AUDITED_ERRORS = frozenset(
    {ErrorCode.REQUEST_VALIDATION_FAILED, ErrorCode.REQUEST_TOO_LARGE, ErrorCode.CONNECT_FAILED}
)
"""Errors mitmproxy answers with its page after the flow's hooks ran, which may have
audited them as refusals (header validation, the body limit, the SSRF guard's check of
the socket): then the audited refusal is the answer."""
Answered = Callable[[str], bytes | None]
"""A client connection's current flow's audited refusal, as bytes to send, if it has one."""


class AuditedHttp1Server(Http1Server):
    """mitmproxy's HTTP/1 server layer, asking the addons before it refuses a request
    that has no flow, and sending a flow's audited refusal (naming its decision) where
    mitmproxy would send its own page for a request its validation failed."""

    def __init__(self, context: Context, answered: Answered) -> None:
        super().__init__(context)
        self.answered = answered

    def read_headers(self, event: events.ConnectionEvent) -> layer.CommandGenerator[None]:
        held: list[commands.Command] = []
        for command in super().read_headers(event):
            # The only answer this state sends is the 400 for a head it cannot read
            # (a request line), or whose framing it cannot (a Content-Length that is not
            # a number): mitmproxy's fixed page, sent before any hook could run.
            if held or isinstance(command, commands.SendData):
                held.append(command)
            else:
                yield command
        if not held:
            return
        # mitmproxy logs the parser's error as "<client address>: <error>", or, when it
        # read the head, reports it to the flow it would make for it.
        logged = [c.message.partition(": ")[2] for c in held if isinstance(c, commands.Log)]
        errors = [
            c.event.message
            for c in held
            if isinstance(c, ReceiveHttp) and isinstance(c.event, RequestProtocolError)
        ]
        reason = (logged or errors or ["unreadable request head"])[0]
        # No flow: this refusal is audited here, once, with the head that was read.
        yield from self._refuse(reason, self.request)
        for command in held:
            if isinstance(command, commands.Log):
                yield command

    def send(self, event: HttpEvent) -> layer.CommandGenerator[None]:
        if (
            isinstance(event, ResponseProtocolError)
            and event.code is ErrorCode.DESTINATION_UNKNOWN
            and self.response is None
        ):
            # Sent before any hook: the request head has no destination to decide on.
            yield from self._refuse(event.message, self.request)
            return
        if (
            isinstance(event, ResponseProtocolError)
            and event.code in AUDITED_ERRORS
            and self.response is None
            and self.conn.state & ConnectionState.CAN_WRITE
        ):
            # Sent after the flow's hooks: the refusal they audited, not mitmproxy's page.
            audited = self.answered(self.context.client.id)
            if audited is not None:
                yield commands.SendData(self.conn, audited)
                yield commands.CloseConnection(self.conn)
                self.state = self.done
                return
        yield from super().send(event)

    def _refuse(self, reason: str, request: http.Request | None) -> layer.CommandGenerator[None]:
        refusal = yield from audit(self.context, reason, request)
        if self.conn.state & ConnectionState.CAN_WRITE:
            yield commands.SendData(self.conn, answer(refusal))
        yield commands.CloseConnection(self.conn)
        self.state = self.done


class AuditedHttp2Server(Http2Server):
    """mitmproxy's HTTP/2 server layer, asking the addons before it ends a connection
    for a protocol error (an invalid header block, a frame out of order)."""

    def protocol_error(
        self, message: str, error_code: int = h2.errors.ErrorCodes.PROTOCOL_ERROR
    ) -> layer.CommandGenerator[None]:
        refusal = yield from audit(self.context, message)
        if refusal.decision_id is not None:
            message = f"{message} (decision {refusal.decision_id})"
        yield from super().protocol_error(message, error_code)


def audit(
    context: Context, reason: str, request: http.Request | None = None
) -> layer.CommandGenerator[ParserRefusal]:
    """Ask the addons to audit a refusal of `context`'s client (the hook blocks until
    they have); the refusal, with its decision id if one was written."""
    server = context.server.address
    target = str(server[0]) if server is not None else request.host if request else ""
    refusal = ParserRefusal(context.client, target, reason[:MAX_QUOTED_REASON], request)
    yield HttpParserRefusedHook(refusal)
    return refusal


Audit = Callable[[ParserRefusal], Awaitable[str | None]]


class ParserGuard:
    """mitmproxy addon, after mitmproxy's NextLayer: gives each HTTP layer the audited
    HTTP/1 or HTTP/2 server, and audits what it refuses through `audit` (the decision
    id, or None)."""

    def __init__(self, audit: Audit) -> None:
        self.audit = audit
        self._flows: dict[str, http.HTTPFlow] = {}
        """Client connection id -> its current flow (HTTP/1: one at a time)."""

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._flows[flow.client_conn.id] = flow

    def client_disconnected(self, client: connection.Client) -> None:
        self._flows.pop(client.id, None)

    def answered(self, client_id: str) -> bytes | None:
        flow = self._flows.get(client_id)
        if flow is None or flow.response is None or REFUSAL not in flow.metadata:
            return None
        response = flow.response
        response.headers["Connection"] = "close"
        fields = b"".join(n + b": " + v + b"\r\n" for n, v in response.headers.fields)
        status = f"HTTP/1.1 {response.status_code} {response.reason}\r\n".encode()
        return status + fields + b"\r\n" + (response.raw_content or b"")

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        http_layer = nextlayer.layer
        if not isinstance(http_layer, layers.HttpLayer):
            return
        client = http_layer.context.client
        alpn = client.alpn or b""
        server: layer.Layer
        if alpn.startswith(b"h3"):
            return  # never offered: the listeners are TCP
        if alpn == b"h2":
            server = AuditedHttp2Server(http_layer.context.fork())
        else:
            server = AuditedHttp1Server(http_layer.context.fork(), self.answered)
        http_layer.connections[client] = server

    async def http_parser_refused(self, refusal: ParserRefusal) -> None:
        refusal.decision_id = await self.audit(refusal)
