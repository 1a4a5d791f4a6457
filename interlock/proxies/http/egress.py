"""Egress policy: every request (and every CONNECT) becomes an Action for the PDP.

Deny answers 403 with a JSON body naming the decision; approve holds the flow until a
human decides or the deadline passes; allow lets it go, with header obligations applied.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import zlib
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, unquote_plus

from mitmproxy import connection, http
from mitmproxy.proxy.mode_specs import ReverseMode

from interlock.approvals.holds import Holds
from interlock.approvals.request import Verdict
from interlock.classify.content import (
    MAX_SCAN,
    Findings,
    HeuristicDetector,
    InjectionDetector,
    scan,
    scan_secrets,
)
from interlock.classify.form import boundary
from interlock.classify.mcp import confidence_value, jsonrpc_batch, tool_call
from interlock.core.model import Action, Decision, Effect, Operation
from interlock.core.pdp import PDP
from interlock.errors import StateError
from interlock.proxies.http.addresses import canonical_host
from interlock.proxies.http.answer import refuse
from interlock.proxies.http.identity import AGENT
from interlock.proxies.http.llm import tool_calls
from interlock.proxies.http.tunnel import same_host

DECISION = "interlock.decision"
ACTION = "interlock.action"
FORWARDED = "interlock.forwarded"
"""Set on flows interlock let through: only their responses come from outside."""
MCP_ID = "interlock.mcp_id"
CONFIDENCE_HEADER = "X-Interlock-Confidence"
"""Where an agent framework reports its confidence in what it is doing ([0, 1]);
removed before the request goes upstream."""


def deny(flow: http.HTTPFlow, decision: Decision, why: str | None = None) -> None:
    reason = why or "; ".join(decision.reasons) or decision.effect.value
    if MCP_ID in flow.metadata:
        # An MCP client expects a JSON-RPC error for that one call, not an HTTP failure.
        body: dict[str, Any] = {
            "jsonrpc": "2.0",
            "id": flow.metadata[MCP_ID],
            "error": {
                "code": -32001,
                "message": f"denied by interlock: {reason}",
                "data": {"decision_id": decision.decision_id},
            },
        }
        flow.response = http.Response.make(
            200, json.dumps(body), {"Content-Type": "application/json"}
        )
        return
    body = {"error": "denied by interlock", "decision_id": decision.decision_id, "reason": reason}
    flow.response = http.Response.make(403, json.dumps(body), {"Content-Type": "application/json"})


TEXTUAL = (
    "application/json",
    "text/",
    "application/x-www-form-urlencoded",
    "application/xml",
    "application/jsonrpc",
)
LLM_PATHS = ("/chat/completions", "/responses", "/messages", "/completions")


UTF8_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
"""Charsets whose text is the UTF-8 the scan reads."""
BOMS = {
    b"\x00\x00\xfe\xff": "utf-32-be",
    b"\xff\xfe\x00\x00": "utf-32-le",
    b"\xef\xbb\xbf": "utf-8-sig",
    b"\xfe\xff": "utf-16-be",
    b"\xff\xfe": "utf-16-le",
}
"""Byte order marks, longest first: Python's `json.loads(bytes)` (Starlette's and Flask's
`request.json`) and WHATWG decoders (Node, browsers) read the text they announce."""


def charset(message: http.Message) -> str | None:
    """The `charset` parameter of the Content-Type, lower-cased, or None."""
    for param in message.headers.get("content-type", "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return str(value).strip().strip('"').lower()
    return None


def _textual(message: http.Message) -> bool:
    ctype = message.headers.get("content-type", "").lower()
    return any(t in ctype for t in TEXTUAL)


def _one_stream(raw: bytes, coding: str) -> bool:
    """Whether `raw` is exactly one complete gzip or zlib stream. mitmproxy decodes the
    first gzip member (or zlib stream) and drops the rest, while Python's `gzip`, Go's
    `gzip.Reader`, Node's zlib and aiohttp read every member: a second member would be
    read upstream and never by the decision or DLP."""
    wbits = 47 if coding == "gzip" else 15
    for bits in (wbits, -15) if coding == "deflate" else (wbits,):
        decompressor = zlib.decompressobj(bits)
        try:
            decompressor.decompress(raw)
            decompressor.flush()
        except zlib.error:
            continue
        return decompressor.eof and not decompressor.unused_data
    return False


def content_problem(message: http.Message) -> str | None:
    """Why a request body cannot be read as the upstream reads it, or None: a content
    coding that does not decode whole (mitmproxy then hands back the raw bytes, which the
    scan reads as noise), a gzip body of several members, and text in a charset other
    than UTF-8 (a `charset=utf-16` body, a byte order mark, or the NULs of UTF-16 or -32
    without one: servers decode them, the scan and the JSON reader would not)."""
    raw = message.raw_content
    if not raw:
        return None
    coding = message.headers.get("content-encoding", "").strip().lower()
    if coding in ("gzip", "deflate") and not _one_stream(raw, coding):
        return f"{coding} body that is not exactly one complete stream"
    try:
        content = message.get_content(strict=True) or b""
    except ValueError:
        return f"body that does not decode as its Content-Encoding {coding!r}"
    if _textual(message):
        declared = charset(message)
        if (
            declared is not None
            and declared not in UTF8_CHARSETS
            and not _ascii_as(content, declared)
        ):
            return f"textual body in charset {declared[:32]!r} (only UTF-8 is inspected)"
        if content.startswith(tuple(BOMS)) or b"\x00" in content:
            return "textual body with a byte order mark or NUL bytes (UTF-16 or UTF-32)"
        return None
    # Untyped text is what servers parse as JSON (Starlette, FastAPI), guessing UTF-16
    # and -32 from its NULs as `json.loads(bytes)` does. A declared binary type (gRPC
    # frames start with NULs) is left alone.
    untyped = not message.headers.get("content-type") and _utf8(content)
    if untyped and (content.startswith(tuple(BOMS)) or json.detect_encoding(content) != "utf-8"):
        return "untyped body in UTF-16 or UTF-32 (only UTF-8 is inspected)"
    return None


def _ascii_as(content: bytes, declared: str) -> bool:
    """Whether `content` is ASCII that `declared` reads as ASCII reads it: then UTF-8 reads
    it the same (Java's form entities say ISO-8859-1 over pure ASCII; UTF-7, which
    gives `+` sequences other meanings, does not pass)."""
    if not content.isascii():
        return False
    try:
        return content.decode(declared) == content.decode("ascii")
    except (LookupError, UnicodeDecodeError):
        return False


def _utf8(content: bytes) -> bool:
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def body_text(message: http.Message) -> str | None:
    """The whole body as text, else None (binary is not scanned). Text is what is declared
    textual or, whatever the Content-Type says, decodes as UTF-8: the type is the
    sender's claim (`application/octet-stream`, none, `multipart/form-data` or
    `application/vnd.api+json` carried JSON and keys past the scan), and servers parse
    JSON whatever it is labelled. It is decoded by its byte order mark or charset as the
    agent's client reads a response (requests in other charsets are refused first,
    `content_problem`). A prefix would let leading padding hide what follows from the
    decision; a request's text longer than the scan limit is refused (`unscannable`)."""
    if not message.raw_content:
        return None
    try:
        raw = message.get_content(strict=False) or b""
    except ValueError:
        raw = message.raw_content or b""
    encoding = next((e for bom, e in BOMS.items() if raw.startswith(bom)), None)
    encoding = encoding or charset(message) or "utf-8"
    if not _textual(message):
        if len(raw) > MAX_SCAN and raw.lstrip()[:1] not in (b"{", b"["):
            # A large upload its sender calls binary (a log, a CSV, a tar of text) is
            # forwarded unscanned as binary is: refusing every such upload over the scan
            # limit would break them, and only JSON is read as an action whatever its
            # type says. A large form still has its typed fields read (not its files).
            return _multipart_text(message, raw, files=False)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return _multipart_text(message, raw)
    try:
        return raw.decode(encoding, "replace")
    except LookupError:
        return raw.decode("utf-8", "replace")


def _multipart_text(message: http.Message, raw: bytes, files: bool = True) -> str | None:
    """The text parts of a multipart body that also carries binary (a form with a file):
    each part whose content decodes as UTF-8 (without `files`, only the parts that are
    not uploaded files), joined; None when no part does or the body is not multipart. A
    key typed into a form field next to an uploaded image is still data leaving."""
    ctype = message.headers.get("content-type", "")
    if not ctype.lower().lstrip().startswith("multipart/"):
        return None
    delimiter = boundary(ctype)  # as ext_authz reads it (quoted, RFC 2231)
    if not delimiter:
        return None
    texts = []
    for part in raw.split(b"--" + delimiter.encode("utf-8", "replace"))[1:]:
        head, _, content = part.partition(b"\r\n\r\n")
        if not files and b"filename=" in head.lower():
            continue
        try:
            texts.append(content.removesuffix(b"\r\n").decode("utf-8"))
        except UnicodeDecodeError:
            continue  # binary: not scanned, as a binary body is not
    return "\n".join(texts) if any(texts) else None


def scan_all(text: str) -> Findings:
    """`scan` over all of `text`, in overlapping windows of MAX_SCAN characters (a finding
    up to 4 KiB long that straddles a window edge is whole in the next window)."""
    if len(text) <= MAX_SCAN:
        return scan(text)
    kinds: dict[str, int] = {}
    for start in range(0, len(text), MAX_SCAN - 4096):
        for kind, n in scan(text[start : start + MAX_SCAN]).kinds.items():
            kinds[kind] = kinds.get(kind, 0) + n
    return Findings(kinds)


def unscannable(text: str | None) -> str | None:
    """Why a request's textual body cannot be decided on: DLP reads about 3 MiB a second
    (16 MiB of text took 4 to 7 s), so a body is scanned whole up to MAX_SCAN characters
    and a longer one is refused rather than decided on a prefix."""
    if text is None or len(text) <= MAX_SCAN:
        return None
    return (
        f"textual body of {len(text)} characters (decoded), more than the {MAX_SCAN} "
        "that are inspected"
    )


def _json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _prompt_text(doc: dict[str, Any]) -> str:
    parts: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str):
            parts.append(v)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            for key in ("content", "text", "input", "system", "instructions"):
                if key in v:
                    walk(v[key])

    for key in ("system", "instructions", "messages", "input", "prompt"):
        if key in doc:
            walk(doc[key])
    return "\n".join(parts)


AUTH_HEADERS = frozenset(
    {
        b"authorization", b"proxy-authorization", b"cookie", b"x-api-key", b"api-key",
        b"x-auth-token", b"private-token", b"x-vault-token", b"x-goog-api-key", b"dpop",
    }
)  # fmt: skip
"""Headers whose job is to carry a credential to the service they are sent to
(Proxy-Authorization: the agent's own to this proxy, never forwarded)."""
METHOD_OVERRIDES = frozenset({b"x-http-method-override", b"x-http-method", b"x-method-override"})
"""Headers some frameworks take as the request's real method: policies read
`details.method_overrides` next to `details.method`."""
VAULT_READS = frozenset({"GET", "LIST"})
"""Vault's and OpenBao's read verbs (LIST lists a path's keys)."""
VAULT_PATH = re.compile(
    r"/v1/(?:sys|auth|identity|cubbyhole|secret|kv|transit|database|pki|aws|ssh|totp)/"
    r"|/v1/[^/]+/(?:data|metadata|creds)/"
)
"""Paths only Vault's API has: its system backends and default mounts, and the KV v2
(`data`, `metadata`) and dynamic-secret (`creds`) paths of any mount."""


MIN_FINDING = 6
"""Characters of the shortest text `scan` finds anything in (`a@b.co`)."""
MIN_SECRET = 15
"""Characters of the shortest key or token SECRET_PATTERNS match (`xoxb-` and ten)."""
CREDENTIAL_PARAMETERS = frozenset(
    {
        "key", "api_key", "apikey", "access_token", "token", "auth", "sig", "signature",
        "x-amz-credential", "x-amz-signature", "x-amz-security-token",
        "x-goog-credential", "x-goog-signature",
    }
)  # fmt: skip
"""Query parameters that carry a credential to the service the URL names (Google's API
keys, OAuth's access_token, S3 and GCS presigned URLs)."""


def _query_text(pairs: Iterable[tuple[str, str]]) -> str:
    """The query as servers read it (mitmproxy's parse: percent-decoded, `+` a space),
    without the values of CREDENTIAL_PARAMETERS; names and values shorter than the
    shortest finding (an e-mail address `a@b.co`) are left out, so a query of page
    numbers costs no scan."""
    words = (
        w
        for k, v in pairs
        for w in ((k, v) if k.lower() not in CREDENTIAL_PARAMETERS else (k,))
        if len(w) >= MIN_FINDING
    )
    return "\n".join(words)


ISSUERS: dict[str, tuple[str, ...]] = {
    "github_token": ("github.com", "githubusercontent.com", "ghe.com"),
    "google_api_key": ("googleapis.com", "google.com"),
    "slack_token": ("slack.com",),
    "stripe_key": ("stripe.com",),
    "aws_access_key": ("amazonaws.com", "amazonaws.com.cn"),
    "private_key": (),
}
"""The hosts (and their subdomains) that take each kind of key as their credential. A
kind not listed (a JWT: any service may issue one) is taken as the service's own."""


def _issued_by(host: str, issuers: tuple[str, ...]) -> bool:
    return any(host == i or host.endswith("." + i) for i in issuers)


def _credential_slots(headers: list[str], query: Iterable[tuple[str, str]]) -> list[str]:
    """Values of the credential headers (`headers`, Proxy-Authorization already left out:
    it is never forwarded) and of the query's credential parameters: what the scan of
    the rest leaves out."""
    return [*headers, *(v for k, v in query if k.lower() in CREDENTIAL_PARAMETERS)]


def _vault_token(req: http.Request, path: str) -> bool:
    """Whether the request carries a Vault token: `X-Vault-Token`, or (Vault accepts that
    too) `Authorization: Bearer` on a path only Vault's API has. A Bearer token on any
    other `/v1/` path is an ordinary API call (`/v1/models`)."""
    if "x-vault-token" in req.headers:
        return True
    scheme = req.headers.get("authorization", "").strip().partition(" ")[0]
    return scheme.lower() == "bearer" and VAULT_PATH.match(path) is not None


def request_action(flow: http.HTTPFlow, keep_prompts: bool = False) -> Action:
    text = body_text(flow.request)
    return action_for(flow, keep_prompts, text, _json(text))


def action_for(flow: http.HTTPFlow, keep_prompts: bool, text: str | None, doc: Any) -> Action:
    """`request_action` with the request's body already read: its text (`body_text`)
    and the JSON document that text is (`_json`), parsed once per request."""
    req = flow.request
    raw_path = req.path.split("?", 1)[0]
    # Servers (Go's net/http, Vault) route on the decoded path, `%2F` included: so do
    # the path rules here, or `/%761/secret` and `/v1%2fsecret` would be plain egress.
    path = unquote(raw_path, errors="replace")
    host = canonical_host(req.host)
    query = req.query.fields  # parsed once: (name, value), percent-decoded
    details: dict[str, Any] = {
        "method": req.method,
        "mode": "reverse" if isinstance(flow.client_conn.proxy_mode, ReverseMode) else "forward",
        "scheme": req.scheme,
        "port": req.port,
        "path": path[:2048],
        **({"raw_path": raw_path[:2048]} if raw_path != path else {}),
        **({"host_as_sent": req.host[:256]} if host != req.host else {}),
        "query_keys": sorted({k for k, _ in query})[:64],
        "headers": sorted({k.lower() for k in req.headers})[:64],
        "body_bytes": len(req.raw_content or b""),
        # The exact request a person approves (query values and body are not recorded).
        "query_sha256": hashlib.sha256(req.url.partition("?")[2].encode()).hexdigest(),
        "body_sha256": hashlib.sha256(req.raw_content or b"").hexdigest(),
        "content_type": req.headers.get("content-type", "").split(";", 1)[0][:128],
        # Every request forwarded carries data to another host, whatever it is read as
        # below: the agent writes the shape (a "model" key, a JSON-RPC tools/call), so
        # the shape must not decide whether `no_egress` or the exfiltration rule apply.
        "effects": ["egress"],
    }
    # One pass over the header fields (mitmproxy's per-name lookups scan them all each):
    # the method a service may run instead (frameworks that honour these headers), and
    # the values that leave with the request. The headers that carry a credential to the
    # service it is for are not data: labelling every authenticated call `credentials`
    # would hold them all once the session read anything from outside.
    overrides: list[str] = []
    said: list[str] = []
    slots: list[str] = []
    for name, raw in req.headers.fields:
        key = name.lower()
        if key in AUTH_HEADERS:
            if key != b"proxy-authorization" and len(raw) >= MIN_SECRET:
                slots.append(raw.decode("utf-8", "replace"))
            continue
        value = raw.decode("utf-8", "replace")
        if key in METHOD_OVERRIDES:
            overrides.append(value.strip().upper()[:16])
        if len(value) >= MIN_SECRET:
            said.append(value)
    if overrides:
        details["method_overrides"] = overrides
    agent = flow.metadata[AGENT]
    found = scan_all(text) if text else Findings()
    # Query values and form fields reach servers percent-decoded (`%67hp_...` is a key
    # to them), and a query is data leaving as much as a body is; a parameter whose job
    # is the service's own credential (`?key=AIza...`, a presigned URL's signature) is
    # not, as an Authorization header is not (below).
    decoded = [_query_text(query)]
    if text and "application/x-www-form-urlencoded" in details["content_type"].lower():
        decoded.append(unquote_plus(text, errors="replace"))
    kinds = dict(found.kinds)
    for part in filter(None, decoded):
        for kind, n in scan_all(part).kinds.items():
            kinds[kind] = kinds.get(kind, 0) + n
    # Header values leave too (`X-K: ghp_...`): scanned for keys and tokens, not for
    # entropy (trace ids and ETags are random by design).
    for kind, n in scan_secrets("\n".join(said)).kinds.items():
        kinds[kind] = kinds.get(kind, 0) + n
    # A key in a credential slot is the service's own only when the service is the one
    # that issues that kind of key: a GitHub token in `Cookie:` or `?token=` to any
    # other host is data leaving (a review sent one to an arbitrary host unlabelled).
    for kind, n in scan_secrets("\n".join(_credential_slots(slots, query))).kinds.items():
        issuers = ISSUERS.get(kind)
        if issuers is not None and not _issued_by(host, issuers):
            kinds[kind] = kinds.get(kind, 0) + n
    found = Findings(kinds)
    payload = text or ""
    reported = confidence_value(req.headers.pop(CONFIDENCE_HEADER, None))
    if found.kinds:
        details["dlp"] = sorted(found.kinds)
    call = tool_call(doc)
    if call is not None:
        flow.metadata[MCP_ID] = call.id
        details.update(mcp_server=host, arguments=sorted(call.arguments)[:64])
        return Action(
            agent,
            "mcp",
            Operation.TOOL_CALL,
            call.name,
            details,
            labels=found.labels,
            confidence=call.confidence if call.confidence is not None else reported,
            payload=payload,
        )
    if (
        isinstance(doc, dict)
        and req.method == "POST"
        and "model" in doc
        and path.endswith(LLM_PATHS)
    ):
        prompt = _prompt_text(doc)
        details.update(model=str(doc.get("model"))[:128], prompt_chars=len(prompt))
        return Action(
            agent,
            "http",
            Operation.PROMPT,
            host,
            details,
            labels=found.labels | scan_all(prompt).labels,
            prompt_hash=hashlib.sha256(prompt.encode()).hexdigest(),
            prompt_text=prompt if keep_prompts else None,
            confidence=reported,
            payload=payload,
        )
    if req.method in VAULT_READS and path.startswith("/v1/") and _vault_token(req, path):
        return Action(
            agent,
            "http",
            Operation.SECRET_READ,
            f"{host}{path}",
            details,
            labels=found.labels | {"credentials"},
        )
    return Action(
        agent,
        "http",
        Operation.EGRESS,
        host,
        details,
        labels=found.labels,
        confidence=reported,
        payload=payload,
    )


def held_text(flow: http.HTTPFlow, action: Action) -> str:
    """What a person approving this request reads: the request line with the whole URL
    (query values too: the owner judges them; the audit log keeps only their hash) and
    what the body is. The body itself is not shown (webhooks carry this text out)."""
    if action.operation is Operation.CONNECT:
        return f"CONNECT {flow.request.host}:{flow.request.port}"
    d = action.details
    line = f"{flow.request.method} {flow.request.pretty_url}"
    body = f"body {d.get('body_bytes', 0)} bytes"
    if d.get("content_type"):
        body += f" {d['content_type']}"
    if d.get("dlp"):
        body += f", contains {', '.join(d['dlp'])}"
    return f"{line}\n{body}, sha256 {d.get('body_sha256', '')}"


class Egress:
    """mitmproxy addon: decide every request."""

    def __init__(
        self,
        pdp: PDP,
        holds: Holds,
        approval_timeout: float = 30.0,
        passthrough: frozenset[str] = frozenset(),
        keep_prompts: bool = False,
        trusted_hosts: frozenset[str] = frozenset(),
        taint_ttl: float = 900.0,
    ) -> None:
        self.keep_prompts = keep_prompts
        self.trusted_hosts = trusted_hosts
        self.taint_ttl = taint_ttl
        self.detector: InjectionDetector = HeuristicDetector()
        self.pdp = pdp
        self.holds = holds
        self.approval_timeout = approval_timeout
        self.passthrough = passthrough
        self._held: dict[str, set[asyncio.Task[Verdict]]] = {}
        """Holds waiting, per client connection: withdrawn when it disconnects."""

    def client_disconnected(self, client: connection.Client) -> None:
        for task in self._held.pop(client.id, set()):
            task.cancel()  # the hold records itself as withdrawn

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        """Pass-through hosts are decided here, by host alone: nothing inside is seen."""
        if flow.response is not None or AGENT not in flow.metadata:
            return
        # The same host comparison as the Tunnels addon (case, trailing dot, IDNA), so no
        # spelling of a pass-through host escapes its CONNECT decision.
        if not any(same_host(flow.request.host, h) for h in self.passthrough):
            return
        action = Action(
            flow.metadata[AGENT],
            "http",
            Operation.CONNECT,
            canonical_host(flow.request.host),
            {"port": flow.request.port, "passthrough": True},
        )
        await self._enforce(flow, action)

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or AGENT not in flow.metadata:
            return
        problem = content_problem(flow.request)
        if problem is not None:
            headers = {"Content-Type": "application/json"}
            refuse(flow, 400, {"error": "unreadable request body", "reason": problem}, headers)
            return
        text = body_text(flow.request)
        why = unscannable(text)
        if why is not None:
            headers = {"Content-Type": "application/json"}
            refuse(
                flow, 413, {"error": "request body too large to inspect", "reason": why}, headers
            )
            return
        doc = _json(text)
        if jsonrpc_batch(doc):
            # An MCP server runs each call of a batch; a decision is for one call.
            why = "a JSON-RPC batch: interlock decides one call per request"
            headers = {"Content-Type": "application/json"}
            refuse(flow, 400, {"error": "JSON-RPC batch", "reason": why}, headers)
            return
        # The body is decoded and parsed once: the checks above and the action read the
        # same text and document.
        await self._enforce(flow, action_for(flow, self.keep_prompts, text, doc))

    async def response(self, flow: http.HTTPFlow) -> None:
        """Text from outside taints the session; text that tries to steer the agent
        taints it harder. MCP tool results are outside text too.

        A model's own answer to a prompt is not "content from outside" (every agent
        would be tainted after its first LLM call and the signal would mean nothing),
        but it is still scanned for injection, and the tool calls it asks for are
        recorded as children of the prompt."""
        agent = flow.metadata.get(AGENT)
        if agent is None or flow.response is None or not flow.metadata.get(FORWARDED):
            return
        text = body_text(flow.response)
        if text is None:
            return
        action: Action | None = flow.metadata.get(ACTION)
        is_prompt = action is not None and action.operation is Operation.PROMPT
        if action is not None and is_prompt:
            await self._record_tool_calls(flow, action, text)
        if flow.request.host.lower() in self.trusted_hosts:
            return
        until = self.pdp.clock() + self.taint_ttl
        source = flow.metadata[DECISION].decision_id
        reasons = self.detector.scan(text)
        try:
            if not is_prompt:
                await self.pdp.store.add_taint(agent.id, "untrusted_content", until, source)
            if reasons:
                flow.metadata["interlock.injection"] = reasons
                await self.pdp.store.add_taint(
                    agent.id, "prompt_injection_suspected", until, source
                )
        except StateError as exc:
            # Outside text the session would not know it read: later decisions would be
            # made without its taint, so it does not reach the agent.
            why = f"response withheld: {exc}"
            deny(flow, await self.pdp.refuse(action or request_action(flow, False), why))

    async def _record_tool_calls(self, flow: http.HTTPFlow, prompt: Action, text: str) -> None:
        """Each tool call the model asked for becomes a decided, audited action whose
        parent is the prompt's decision. It is recorded, not enforced here (`enforced`
        is false): the agent's actual call is decided where it happens (MCP, SQL, SSH)."""
        decision: Decision = flow.metadata[DECISION]
        for call in tool_calls(text):
            arguments = json.dumps(call.arguments, default=str)
            child = Action(
                prompt.agent,
                "llm",
                Operation.TOOL_CALL,
                call.name[:256],
                {
                    "source": "llm_response",
                    "enforced": False,
                    "llm_host": flow.request.host,
                    "model": prompt.details.get("model"),
                    "call_id": call.call_id[:128],
                    "arguments": sorted(call.arguments)[:64],
                },
                labels=scan(arguments[:MAX_SCAN]).labels,
                parents=(decision.decision_id,),
            )
            await self.pdp.decide(child)

    async def _enforce(self, flow: http.HTTPFlow, action: Action) -> None:
        decision = await self.pdp.decide(action)
        flow.metadata[DECISION] = decision
        flow.metadata[ACTION] = action
        if decision.effect is Effect.APPROVE:
            verdict = await self.holds.wait_in(
                self._held.setdefault(flow.client_conn.id, set()),
                decision,
                self.approval_timeout,
                action,
                held_text(flow, action),
            )
            if not verdict.approved:
                deny(flow, decision, f"held for approval: {verdict.reason or 'denied'}")
                return
        elif decision.effect is not Effect.ALLOW:
            deny(flow, decision)
            return
        flow.metadata[FORWARDED] = True
        for o in decision.obligations:
            if o.type == "add_header":
                flow.request.headers[str(o.params["name"])] = str(o.params["value"])
            elif o.type == "strip_header":
                flow.request.headers.pop(str(o.params["name"]), None)
