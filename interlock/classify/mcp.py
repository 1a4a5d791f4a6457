"""MCP tool calls inside JSON-RPC bodies, as every PEP that sees HTTP reads them.

The streamable HTTP transport posts one JSON-RPC message per request; a `tools/call` is
the agent using a tool, which is a `tool_call` action whatever proxy sees it.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from interlock.classify.content import (
    CARD,
    EMAIL,
    IBAN,
    LABELS,
    MAX_SCAN,
    PHONE,
    SECRET_PATTERNS,
    SSN,
    HeuristicDetector,
    scan,
)


@dataclass(frozen=True)
class McpCall:
    name: str
    arguments: dict[str, Any]
    id: Any
    """The JSON-RPC id, so a denial can answer that very call."""
    confidence: float | None = None
    """`params._meta.confidence`, when the agent framework reports one."""


def tool_call(doc: Any) -> McpCall | None:
    """The tool call `doc` is, or None when it is not a JSON-RPC `tools/call`."""
    if not isinstance(doc, dict) or doc.get("jsonrpc") != "2.0":
        return None
    if doc.get("method") != "tools/call":
        return None
    params = doc.get("params")
    params = params if isinstance(params, dict) else {}
    args = params.get("arguments")
    meta = params.get("_meta")
    return McpCall(
        str(params.get("name", "")),
        args if isinstance(args, dict) else {},
        doc.get("id"),
        confidence_value(meta.get("confidence") if isinstance(meta, dict) else None),
    )


def confidence_value(value: Any) -> float | None:
    """A reported confidence in [0, 1], or None for anything else (absent or malformed
    reports are neutral rather than errors: they come from the agent)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0.0 <= number <= 1.0 else None


# --- what a tool server is told and what it describes (the stdio gateway, tool pinning) ---

DECIDED_METHODS = frozenset({"tools/call", "resources/read", "prompts/get"})
"""Requests that do something on the agent's behalf: each is an action the PDP decides."""
LISTING_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "prompts/list",
        "completion/complete",
        "logging/setLevel",
        "resources/subscribe",
        "resources/unsubscribe",
    }
)
"""Requests that only negotiate or list what the server offers: relayed undecided (their
answers are still read: tools/list goes through pinning)."""

_PATH_KEY = re.compile(
    r"path|file|dir|folder|source|src|dest|dst|root|repo|location|uri|cwd|output|target", re.I
)
_PATH_SHAPE = re.compile(r"[^\s]*/[^\s]*|\.{1,2}")
"""A word with a slash and no blank (`home/.ssh/id_rsa`), or `.` / `..`."""
MAX_PATHS = 256
"""Path arguments per call; a call naming more is refused rather than half checked."""


class PathError(ValueError):
    """Paths the gateway cannot check: too many, or a file URI of another host."""


def _strings(value: Any, key: str, out: list[tuple[str, str]]) -> None:
    if isinstance(value, str):
        out.append((key, value))
    elif isinstance(value, list):
        for item in value:
            _strings(item, key, out)
    elif isinstance(value, dict):
        for k, item in value.items():
            _strings(item, str(k), out)


_URL_EDGES = "".join(chr(c) for c in range(0x21))
"""What URL parsers strip from both ends of a URL (C0 controls and space, WHATWG)."""
_ENCODED_SEPARATORS = re.compile(r"%(2f|5c|00)", re.IGNORECASE)


def jsonrpc_batch(doc: Any) -> bool:
    """Whether `doc` is a JSON-RPC batch (an array of calls): servers run each, while a
    decision is made for one call per request."""
    return isinstance(doc, list) and any(
        isinstance(item, dict) and ("method" in item or "jsonrpc" in item) for item in doc
    )


def file_uri_path(value: str) -> str | None:
    """The absolute path a `file:` URI names, read as the servers' URL parsers read it
    (WHATWG's, Node's `fileURLToPath`, Python's `urlsplit`), or None when `value` is not
    one. Leading and trailing controls and spaces are stripped and tabs and newlines
    removed anywhere (`"\\tfile:///x"` is a file URI to them); a backslash is a
    separator; dot segments are removed before percent-decoding, `%2e` being a dot. An
    encoded slash, backslash or NUL is read differently by different parsers (a
    separator to one, refused by another), so it raises `PathError`."""
    text = value.strip(_URL_EDGES)
    text = text.replace("\t", "").replace("\n", "").replace("\r", "")
    if text[:5].lower() != "file:":
        return None
    if _ENCODED_SEPARATORS.search(text):
        raise PathError(f"file URI with an encoded slash, backslash or NUL: {value[:200]!r}")
    url = urlsplit(text.replace("\\", "/"))
    if url.netloc not in ("", "localhost"):
        raise PathError(f"file URI of another host: {value[:200]!r}")
    dotted = re.sub(r"%2e", ".", url.path, flags=re.IGNORECASE)
    folded = posixpath.normpath("/" + dotted.lstrip("/")) if dotted else "/"
    return "/" + unquote(folded).lstrip("/")


def equivalent_path(full: str) -> str | None:
    """The file `full` (absolute, folded) names to a server that looks names up by their
    NFC form, or None when that is `full` itself or nothing. server-filesystem does so
    for a path that does not exist: component by component it takes the entry of that
    name, else the one entry whose NFC form is the name's (`cafe\u0301` finds `café`,
    `Keys` finds `\u212aeys`), following links at each step. A link so found leads
    where the path as written does not: the policy must see where."""
    if os.path.exists(full):
        return None
    current = "/"
    parts = [part for part in full.split("/") if part]
    for i, part in enumerate(parts):
        try:
            entries = os.listdir(current)
        except OSError:
            return None  # the server's lookup fails here too
        if part not in entries:
            wanted = unicodedata.normalize("NFC", part)
            entries = [e for e in entries if unicodedata.normalize("NFC", e) == wanted]
            if not entries:
                # Nothing further exists: the rest is appended as asked (a file to create).
                tail = os.path.join(current, *parts[i:])
                return tail if tail != full else None
            if len(entries) > 1:
                return None  # ambiguous: the server refuses it
            part = entries[0]
        current = os.path.realpath(os.path.join(current, part))
    return current if current != full else None


def argument_paths(
    arguments: dict[str, Any], cwd: str, home: str, bases: Sequence[str] = ()
) -> list[str]:
    """Every argument value a local tool server could take as a file path, resolved as it
    would (home expanded, relative to its working directory, `..` collapsed, symbolic
    links followed: the server runs on this machine, so the gateway sees the same file
    system). A value counts when its key says path-like or it looks like a path.

    A relative path is joined to `bases` too: servers resolve one against directories
    of their own (server-filesystem against its allowed directories, not its working
    directory), so each reading is decided. A name a server may match by its Unicode
    normal form (`equivalent_path`) adds the file it then opens."""
    found: list[tuple[str, str]] = []
    _strings(arguments, "", found)
    paths: list[str] = []
    for key, value in found:
        uri_path = file_uri_path(value)
        if uri_path is not None:
            value = uri_path
        elif not (_PATH_KEY.search(key) or value.startswith("~") or _PATH_SHAPE.fullmatch(value)):
            continue
        if "\x00" in value:
            continue  # no system call opens such a path
        if value == "~" or value.startswith("~/"):
            value = home + value[1:]
        for base in dict.fromkeys([cwd] if value.startswith("/") else [cwd, *bases]):
            # normpath keeps a leading "//" (POSIX leaves it to the system); Linux reads "/".
            joined = os.path.join(base, value)
            full = "/" + os.path.normpath(joined).lstrip("/")
            paths.append(full)
            # Folded first (as Node's path.resolve does), then links followed; and as the
            # kernel reads it, a link before `..` followed first (`lnk/../x` is under the
            # link's target's parent): a server may do either.
            for real in (os.path.realpath(full), os.path.realpath(joined), equivalent_path(full)):
                if real is not None and real != full:
                    paths.append(real)
            if len(paths) > MAX_PATHS:
                raise PathError(f"more than {MAX_PATHS} path arguments")
    return list(dict.fromkeys(paths))


def canonical_sha256(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def tool_hashes(tool: dict[str, Any]) -> tuple[str, str]:
    """(description hash, schema hash) of a tools/list entry. The schema hash covers all
    the server says about calling the tool besides its description: input and output
    schema, title and annotations (a flipped `readOnlyHint` is a change too)."""
    description = tool.get("description")
    schema = {k: tool.get(k) for k in ("inputSchema", "outputSchema", "title", "annotations")}
    return canonical_sha256(description), canonical_sha256(schema)


_POISON = [
    (
        "instructions_to_model",
        re.compile(
            r"<\s*/?\s*(?:important|system|instructions?|secret)\s*>|"
            r"\b(?:before|after|when)\s+(?:using|calling)\s+(?:this|any|the)\b.{0,40}"
            r"\b(?:you\s+must|always|first)\b|"
            r"\bdo\s+not\s+(?:tell|mention|inform|reveal\s+to|show)\s+(?:the\s+)?user\b|"
            r"\b(?:read|open|cat|include|pass)\b.{0,40}(?:~/|\.ssh|id_rsa|\.env\b|"
            r"/etc/passwd|mcp\.json|credentials)",
            re.I | re.S,
        ),
    ),
    (
        "hidden_unicode",
        re.compile(r"[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\U000e0000-\U000e007f]"),
    ),
    (
        "exfiltration_url",
        re.compile(
            r"https?://[^\s\"'<>]*(?:[?&][\w.-]*=\s*(?:\{|<|\$)|\{\{|\$\{)|"
            r"\b(?:send|post|upload|forward|transmit)\b.{0,80}https?://",
            re.I | re.S,
        ),
    ),
]


def tool_poisoning(tool: dict[str, Any]) -> list[str]:
    """Why a tool's description (or any text in its schema) looks written for the model
    rather than the user: instructions to it, hidden Unicode, exfiltration URLs, plus
    the prompt-injection heuristics used on content."""
    found: list[tuple[str, str]] = []
    _strings({k: tool.get(k) for k in ("description", "title", "inputSchema")}, "", found)
    text = "\n".join(v for _, v in found)[:MAX_SCAN]
    reasons = [name for name, pattern in _POISON if pattern.search(text)]
    return sorted(set(reasons) | set(HeuristicDetector().scan(text)))


# --- masking what a tool server answers ------------------------------------------------

_PRIVATE_KEY_BLOCK = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY[A-Z ]*-----.*?(?:-----END [A-Z ]*PRIVATE KEY[A-Z ]*-----|\Z)",
    re.S,
)
_MASKS: list[tuple[str, re.Pattern[str]]] = [
    ("private_key", _PRIVATE_KEY_BLOCK),
    *((k, p) for k, p in SECRET_PATTERNS.items() if k != "private_key"),
    ("email", EMAIL),
    ("ssn", SSN),
    ("card_number", CARD),
    ("iban", IBAN),
    ("phone", PHONE),
]
_PII = frozenset({"card_number", "iban", "ssn", "email", "phone"})


def _label_of(kind: str) -> frozenset[str]:
    return frozenset({LABELS[kind], *(["pii"] if kind in _PII else [])})


def masked(text: str, labels: frozenset[str]) -> str:
    """`text` with every value of the given labels replaced by `[masked:<kind>]`; a text
    whose scan still finds one of them afterwards (a high-entropy secret no pattern
    spans) is replaced whole: masking fails closed."""
    for kind, pattern in _MASKS:
        if _label_of(kind) & labels:
            text = pattern.sub(f"[masked:{kind}]", text)
    if scan(text).labels & labels:
        return "[masked]"
    return text
