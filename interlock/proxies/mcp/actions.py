"""MCP requests as Actions: what the policy sees of a tools/call, resources/read, prompts/get."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from interlock.classify.content import MAX_SCAN, scan
from interlock.classify.mcp import PathError, argument_paths, confidence_value, file_uri_path
from interlock.core.model import Action, Agent, Operation

MAX_ARGUMENTS = 64
"""Argument names the policy input carries (as on the HTTP path); a call with more is
refused rather than decided on a part of it."""
MAX_TARGET = 2048


class Unreadable(ValueError):
    """A request the gateway cannot turn into a complete action: refused, not guessed."""


@dataclass(frozen=True)
class Where:
    """The tool server an action goes to, as the policy and the pins name it."""

    server: str
    """Its identity: the command line that starts it."""
    cwd: str
    home: str
    bases: tuple[str, ...] = ()
    """Directories the server may resolve a relative path against besides `cwd`: those
    its command line names and the roots the host reported (server-filesystem joins a
    relative path to an allowed directory)."""


def server_bases(argv: list[str], cwd: str, home: str) -> tuple[str, ...]:
    """The existing directories named in a server's command line (`DIR`, `--opt DIR`,
    `--opt=DIR`), as the server resolves them: where its relative paths may lead."""
    found: list[str] = []
    for arg in argv[1:]:
        for word in (arg, arg.partition("=")[2]):
            if not word or word.startswith("-"):
                continue
            if word == "~" or word.startswith("~/"):
                word = home + word[1:]
            path = os.path.realpath(os.path.join(cwd, word))
            if os.path.isdir(path):
                found.append(path)
    return tuple(dict.fromkeys(found))


def _params(request: dict[str, Any]) -> dict[str, Any]:
    params = request.get("params", {})
    assert isinstance(params, dict)  # the relay refused anything else
    return params


def _string(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise Unreadable(f"params.{key} must be a non-empty string")
    if len(value) > MAX_TARGET:
        raise Unreadable(f"params.{key} longer than {MAX_TARGET} characters")
    return value


def _arguments(params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    args = params.get("arguments", {})
    if not isinstance(args, dict):
        raise Unreadable("params.arguments must be an object")
    if len(args) > MAX_ARGUMENTS:
        raise Unreadable(f"more than {MAX_ARGUMENTS} arguments")
    return args, json.dumps(args, ensure_ascii=False, default=str)


def labels_of(text: str) -> frozenset[str]:
    """Labels of everything in `text` (scanned in windows: arguments past the first
    MAX_SCAN characters are data the server receives too)."""
    labels: set[str] = set()
    step = MAX_SCAN - 4096
    for start in range(0, max(len(text), 1), step):
        labels |= scan(text[start : start + MAX_SCAN]).labels
    return frozenset(labels)


def action_for(method: str, request: dict[str, Any], agent: Agent, where: Where) -> Action:
    """The action `request` is; raises Unreadable for what cannot be decided."""
    params = _params(request)
    details: dict[str, Any] = {"mcp_server": where.server, "transport": "stdio", "method": method}
    meta = params.get("_meta")
    confidence = confidence_value(meta.get("confidence") if isinstance(meta, dict) else None)
    if method == "tools/call":
        name = _string(params, "name")
        args, text = _arguments(params)
        try:
            paths = argument_paths(args, where.cwd, where.home, where.bases)
        except PathError as exc:
            raise Unreadable(str(exc)) from None
        details.update(arguments=sorted(args), paths=paths)
        return Action(
            agent, "mcp", Operation.TOOL_CALL, name, details,
            labels=labels_of(text), confidence=confidence, payload=text,
        )  # fmt: skip
    if method == "resources/read":
        uri = _string(params, "uri")
        # A URI of the server's own scheme names no local file; a file: URI does.
        try:
            local = file_uri_path(uri) is not None
            paths = (
                argument_paths({"uri": uri}, where.cwd, where.home, where.bases) if local else []
            )
        except PathError as exc:
            raise Unreadable(str(exc)) from None
        details["paths"] = paths
        return Action(agent, "mcp", Operation.READ, uri, details, confidence=confidence)
    if method == "prompts/get":
        name = _string(params, "name")
        args, text = _arguments(params)
        details["arguments"] = sorted(args)
        return Action(
            agent, "mcp", Operation.PROMPT, name, details,
            labels=labels_of(text), confidence=confidence, payload=text,
        )  # fmt: skip
    raise Unreadable(f"method {method[:100]!r} is not relayed by interlock")


def held_text(method: str, request: dict[str, Any]) -> str:
    """What the owner reads when asked to approve: the method and its exact parameters
    (shown to the approver, not stored in the audit log)."""
    params = {k: v for k, v in _params(request).items() if k != "_meta"}
    return f"MCP {method}\n{json.dumps(params, ensure_ascii=False, default=str)[:4000]}"
