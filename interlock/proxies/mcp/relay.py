"""Sans-IO JSON-RPC relay between an MCP host and a stdio tool server: lines in, events out.

The stdio transport carries one JSON-RPC message per line in each direction. The relay
parses every line, refuses what is not a well-formed MCP message (an error to whoever
sent it; nothing goes on), and sorts the rest: listing and negotiation requests go to the
server, requests that act (`tools/call`, `resources/read`, `prompts/get`) and any method
it does not know wait for a decision, and answers to those come back for inspection
before the host sees them. What it forwards is its own encoding of what it parsed, so
the server reads exactly the message that was decided (no duplicate keys, no second
reading of the same bytes).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

from interlock.classify.mcp import DECIDED_METHODS, LISTING_METHODS, PathError, file_uri_path

MAX_MESSAGE = 16 * 1024 * 1024
"""Bytes per line. MCP sets no limit; this bounds memory per message at well above what
real tool results carry (images come base64-encoded, a few MiB at most)."""
MAX_PENDING = 4096
"""Requests in flight per direction: a peer that never waits for answers is cut off."""

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
DENIED = -32001
"""Server-defined range of JSON-RPC; the HTTP MCP path answers denials with it too."""

DESCRIBED = frozenset({"initialize", "resources/list", "resources/templates/list", "prompts/list"})
"""Answers whose text the model reads as the server's word (its instructions, what its
resources and prompts are for): scanned for instructions aimed at the model."""
INSPECTED = DECIDED_METHODS | {"tools/list"} | DESCRIBED
"""Answers the gateway reads before the host does: results are scanned, tool listings
pinned, descriptions scanned."""

IdKey = tuple[str, Any]
"""A JSON-RPC id with its type: 1 and "1" are different requests."""


class Side(Enum):
    HOST = "host"
    SERVER = "server"


@dataclass(frozen=True)
class Send:
    """Write `data` (one encoded line) to `to`."""

    to: Side
    data: bytes


@dataclass(frozen=True)
class Decide:
    """A host request that must be decided before the server may see it."""

    key: IdKey
    method: str
    request: dict[str, Any]


@dataclass(frozen=True)
class Cancel:
    """The host cancelled a request still waiting for its decision (withdraw the hold)."""

    key: IdKey


@dataclass(frozen=True)
class Inspect:
    """The server answered a request whose answer is read before the host sees it (a
    result or an error: both are the server's text). `note` is what the PEP attached
    when it allowed the request (its decision)."""

    method: str
    request: dict[str, Any]
    response: dict[str, Any]
    note: Any = None


@dataclass(frozen=True)
class Problem:
    """Something dropped that changes nothing (a cancellation of no request in flight),
    for the log (stderr), with whose fault it was."""

    side: Side
    reason: str


@dataclass(frozen=True)
class Refused:
    """A message the relay refused: nothing of it goes on. The gateway records it as a
    refusal, then (when `code` is set) answers `side` with that JSON-RPC error for `id`,
    naming the record."""

    side: Side
    reason: str
    id: Any = None
    code: int | None = None


Event = Send | Decide | Cancel | Inspect | Problem | Refused


class Malformed(ValueError):
    """A line that is not one well-formed JSON-RPC message; `id` when one was readable."""

    def __init__(self, code: int, reason: str, id: Any = None) -> None:
        super().__init__(reason)
        self.code = code
        self.id = id


def encode(doc: dict[str, Any]) -> bytes:
    """One line; ASCII so no byte of it can be read as a line break or invalid UTF-8."""
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def error(id: Any, code: int, message: str, data: dict[str, Any] | None = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return encode({"jsonrpc": "2.0", "id": id, "error": err})


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        # Readers differ on which of two equal keys counts: refused, not guessed.
        raise Malformed(INVALID_REQUEST, "duplicate key in a JSON object")
    return doc


def _no_constant(name: str) -> Any:
    raise Malformed(PARSE_ERROR, f"{name} is not JSON")


def _finite(text: str) -> float:
    """A JSON number as a float; one too large for a double (`1e999`) would become
    infinity, which the relay could only send on as `Infinity`, not JSON."""
    value = float(text)
    if not math.isfinite(value):
        raise Malformed(PARSE_ERROR, f"number {text[:40]} is out of range")
    return value


def _key(value: Any) -> IdKey | None:
    """The id's key, or None when it is not an MCP id (a string or an integer)."""
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, int) and not isinstance(value, bool):
        return ("i", value)
    return None


def parse(line: bytes) -> dict[str, Any]:
    """One JSON-RPC message, checked for the shape MCP allows; raises Malformed."""
    if len(line) > MAX_MESSAGE:
        raise Malformed(INVALID_REQUEST, f"message over {MAX_MESSAGE} bytes")
    try:
        doc = json.loads(
            line.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_float=_finite,
        )
    except UnicodeDecodeError:
        raise Malformed(PARSE_ERROR, "message is not UTF-8") from None
    except RecursionError:
        raise Malformed(PARSE_ERROR, "message nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise Malformed(PARSE_ERROR, f"invalid JSON: {exc.msg}") from None
    if not isinstance(doc, dict):
        # Batches were removed from MCP (2025-06-18); a bare value is no message.
        raise Malformed(INVALID_REQUEST, "a message is one JSON object (no batches)")
    raw_id = doc.get("id")
    id = raw_id if _key(raw_id) is not None else None
    if doc.get("jsonrpc") != "2.0":
        raise Malformed(INVALID_REQUEST, 'jsonrpc must be "2.0"', id)
    if "id" in doc and id is None:
        raise Malformed(INVALID_REQUEST, "id must be a string or an integer")
    if "method" in doc:
        if not isinstance(doc["method"], str) or "result" in doc or "error" in doc:
            raise Malformed(INVALID_REQUEST, "a request has a string method and no result", id)
        if not isinstance(doc.get("params", {}), dict):
            raise Malformed(INVALID_PARAMS, "params must be an object", id)
    elif id is None or ("result" in doc) == ("error" in doc):
        raise Malformed(INVALID_REQUEST, "a response has an id and one of result, error", id)
    return doc


def _read(line: bytes, sender: Side) -> dict[str, Any] | list[Event]:
    """The message on `line`, or what to do instead: nothing for a blank line, an error
    to its sender for a malformed one."""
    if not line.strip():
        return []
    try:
        return parse(line)
    except Malformed as exc:
        return [Refused(sender, str(exc), exc.id, exc.code)]


class Relay:
    """The state of one host-server session: which requests wait for what."""

    def __init__(self) -> None:
        self._forwarded: dict[IdKey, tuple[str, dict[str, Any], Any]] = {}
        """Host requests the server has: method, the request and the PEP's note, until
        it answers."""
        self._deciding: dict[IdKey, dict[str, Any]] = {}
        """Host requests waiting for their decision: the server has not seen them."""
        self._from_server: dict[IdKey, str] = {}
        """Server requests (sampling, roots, elicitation) the host has not answered, with
        their methods."""
        self.roots: list[str] = []
        """The local directories of every `roots/list` answer the host gave: a server
        may resolve relative paths against them (server-filesystem makes them its
        allowed directories), so paths are decided against each (a superset, kept for
        the session: the server may still use an earlier list)."""

    # --- host to server ----------------------------------------------------------------

    def from_host(self, line: bytes) -> list[Event]:
        doc = _read(line, Side.HOST)
        if not isinstance(doc, dict):
            return doc
        if "method" not in doc:
            return self._answer_to_server(doc)
        if "id" not in doc:
            return self._host_notification(doc)
        key = _key(doc["id"])
        assert key is not None
        if key in self._forwarded or key in self._deciding:
            why = "id already in use by a request in flight"
            return [Refused(Side.HOST, why, doc["id"], INVALID_REQUEST)]
        if len(self._forwarded) + len(self._deciding) >= MAX_PENDING:
            why = f"more than {MAX_PENDING} requests in flight"
            return [Refused(Side.HOST, why, doc["id"], INVALID_REQUEST)]
        method = doc["method"]
        if method in LISTING_METHODS:
            self._forwarded[key] = (method, doc, None)
            return [Send(Side.SERVER, encode(doc))]
        self._deciding[key] = doc
        return [Decide(key, method, doc)]

    def _host_notification(self, doc: dict[str, Any]) -> list[Event]:
        method: str = doc["method"]
        if method == "notifications/cancelled":
            key = _key(doc.get("params", {}).get("requestId"))
            if key is not None and key in self._deciding:
                return [Cancel(key)]  # the server never saw it: nothing to tell it
            if key is None or self._forwarded.pop(key, None) is None:
                return [Problem(Side.HOST, "cancellation of no request in flight dropped")]
        elif not method.startswith("notifications/"):
            return [Refused(Side.HOST, f"notification {method[:100]!r} is not relayed")]
        return [Send(Side.SERVER, encode(doc))]

    def _answer_to_server(self, doc: dict[str, Any]) -> list[Event]:
        key = _key(doc["id"])
        method = self._from_server.pop(key, None) if key is not None else None
        if method is None:
            return [Refused(Side.HOST, "answer to no server request in flight dropped")]
        if method == "roots/list":
            self._note_roots(doc.get("result"))
        return [Send(Side.SERVER, encode(doc))]

    def _note_roots(self, result: Any) -> None:
        roots = result.get("roots") if isinstance(result, dict) else None
        for root in roots if isinstance(roots, list) else []:
            uri = root.get("uri") if isinstance(root, dict) else None
            try:
                path = file_uri_path(uri) if isinstance(uri, str) else None
            except PathError:
                continue  # not a local directory: nothing relative resolves against it
            if path is not None and path not in self.roots:
                self.roots.append(path)

    def allow(self, key: IdKey, note: Any = None) -> list[Event]:
        """The decision let the request through: the server gets it now. `note` comes
        back with the answer."""
        doc = self._deciding.pop(key, None)
        if doc is None:
            return []  # cancelled meanwhile
        self._forwarded[key] = (doc["method"], doc, note)
        return [Send(Side.SERVER, encode(doc))]

    def deny(self, key: IdKey, message: str, data: dict[str, Any]) -> list[Event]:
        """The decision refused the request: the host gets the error, the server nothing."""
        doc = self._deciding.pop(key, None)
        if doc is None:
            return []
        return [Send(Side.HOST, error(doc["id"], DENIED, message, data))]

    def forget(self, key: IdKey) -> None:
        """A request that will not be decided (cancelled): the host expects no answer."""
        self._deciding.pop(key, None)

    # --- server to host ----------------------------------------------------------------

    def from_server(self, line: bytes) -> list[Event]:
        doc = _read(line, Side.SERVER)
        if not isinstance(doc, dict):
            return doc
        if "method" not in doc:
            return self._answer_to_host(doc)
        if "id" in doc:
            key = _key(doc["id"])
            assert key is not None
            if key in self._from_server or len(self._from_server) >= MAX_PENDING:
                why = "id already in use, or too many requests in flight"
                return [Refused(Side.SERVER, why, doc["id"], INVALID_REQUEST)]
            self._from_server[key] = doc["method"]
        return [Send(Side.HOST, encode(doc))]

    def _answer_to_host(self, doc: dict[str, Any]) -> list[Event]:
        key = _key(doc["id"])
        assert key is not None
        entry = self._forwarded.pop(key, None)
        if entry is None:
            return [Refused(Side.SERVER, "answer to no request in flight dropped")]
        method, request, note = entry
        if method in INSPECTED:
            return [Inspect(method, request, doc, note)]
        return [Send(Side.HOST, encode(doc))]

    def release(self, response: dict[str, Any]) -> list[Event]:
        """The inspected answer (possibly rewritten or replaced by an error) for the host."""
        return [Send(Side.HOST, encode(response))]
