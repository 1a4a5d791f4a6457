"""mitmproxy addons: put a secret into allowed requests, so agents call APIs without it;
and take it out of what comes back.

`Inject` runs after `Egress`: only a request the PDP allowed (and that is being
forwarded) gets the header, and only when scheme, host, port and path all match the rule
(the path on whole segments; a path with dot-segments, encoded slashes or backslashes,
or `;` parameters is refused rather than guessed about, since servers normalise such
paths differently). The secret is read from Vault at that moment (cached briefly by the
broker); the agent's own value for that header is replaced. Vault unreachable = the
request is denied with the reason. Range requests and protocol upgrades are stripped
from injected requests: a slice of an echo, or a WebSocket, would carry the secret past
redaction.

`Redact` runs before every other response hook: an API that echoes the secret (in a
header or the body, as is, JSON-escaped, URL-encoded or base64) has it replaced with
`[redacted]` before anything else (or the agent) sees the response. A body that cannot be
decoded cannot be checked, so it is refused (502). The audit log never sees the secret:
the request was decided and recorded before injection, with header names only.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from urllib.parse import quote

from mitmproxy import http

from interlock.config import InjectRule
from interlock.credentials.broker import Broker, CredentialError
from interlock.proxies.http.egress import DECISION, FORWARDED, deny
from interlock.proxies.http.tunnel import same_host

log = logging.getLogger(__name__)
INJECTED = "interlock.injected"
REDACTED = b"[redacted]"
_AMBIGUOUS = re.compile(r"(^|/)\.\.?(/|$)|%2e|%2f|%5c|\\|;", re.IGNORECASE)
STRIPPED = ("Range", "If-Range", "Upgrade")


def matches(rule: InjectRule, scheme: str, host: str, port: int, path: str) -> bool:
    default = 443 if rule.scheme == "https" else 80
    if scheme != rule.scheme or port != (rule.port or default) or not same_host(host, rule.host):
        return False
    prefix = rule.path_prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/") or not prefix


MIN_CORE = 12
"""Shortest base64 run (of a key inside a longer encoded value) that is redacted: shorter
ones would match ordinary text by chance, and a key leaves at most 2 bytes outside it."""
_GO_HTML = {"&": "\\u0026", "<": "\\u003c", ">": "\\u003e"}


def forms(secret: str) -> list[bytes]:
    """The secret as an echo may carry it: as is; JSON-escaped (with `/` as `\\/`, as
    PHP writes it, and `&<>` as `\\u00XX`, as Go does); URL-encoded (either case of hex);
    base64 and base64url, alone or inside a longer encoded value (the whole header
    `Bearer <key>` encoded puts the key at any of three alignments)."""
    escaped = json.dumps(secret)[1:-1]
    go = "".join(_GO_HTML.get(c, c) for c in escaped)
    url = quote(secret, safe="")
    found = {
        secret,
        escaped,
        json.dumps(secret, ensure_ascii=False)[1:-1],
        escaped.replace("/", "\\/"),
        go,
        go.replace("/", "\\/"),
        url,
        re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), url),
    }
    for encoded in _base64_runs(secret.encode()):
        found.add(encoded)
        found.add(encoded.translate(_URLSAFE))
    return sorted((f.encode() for f in found if f), key=len, reverse=True)


_URLSAFE = str.maketrans("+/", "-_")


def _base64_runs(data: bytes) -> set[str]:
    """base64 of `data` whole, and at each alignment inside a longer value the run of
    characters that depend on `data` alone (whole groups, less those sharing bits with
    what comes before)."""
    runs = {base64.b64encode(data).decode()}
    for before, skip in ((0, 0), (1, 2), (2, 3)):
        encoded = base64.b64encode(b"\0" * before + data).decode()
        run = encoded[skip : (before + len(data)) // 3 * 4]
        if len(run) >= MIN_CORE:
            runs.add(run)
    return runs


class Inject:
    def __init__(self, broker: Broker, rules: list[InjectRule]) -> None:
        self.broker = broker
        self.rules = rules

    def rule_for(self, flow: http.HTTPFlow) -> InjectRule | None:
        req = flow.request
        path = req.path.split("?", 1)[0]
        for rule in self.rules:
            if matches(rule, req.scheme, req.host, req.port, path or "/"):
                return rule
        return None

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or not flow.metadata.get(FORWARDED):
            return
        rule = self.rule_for(flow)
        if rule is None:
            return
        if _AMBIGUOUS.search(flow.request.path.split("?", 1)[0]):
            flow.metadata[FORWARDED] = False
            deny(flow, flow.metadata[DECISION], "ambiguous path for a request that gets a key")
            return
        try:
            secret = await self.broker.secret(rule.secret)
        except CredentialError as exc:
            flow.metadata[FORWARDED] = False
            deny(flow, flow.metadata[DECISION], f"credential for {rule.host} unavailable: {exc}")
            return
        for name in STRIPPED:
            flow.request.headers.pop(name, None)
        if "upgrade" in flow.request.headers.get("connection", "").lower():
            flow.request.headers["Connection"] = "keep-alive"
        flow.request.headers[rule.header] = rule.template.replace("{secret}", secret)
        flow.metadata[INJECTED] = secret


class Redact:
    async def response(self, flow: http.HTTPFlow) -> None:
        secret: str | None = flow.metadata.get(INJECTED)
        if not secret or flow.response is None:
            return
        needles = forms(secret)
        headers = flow.response.headers
        for name in list(headers.keys()):
            values = headers.get_all(name)
            if any(n.decode() in v for v in values for n in needles):
                cleaned = []
                for v in values:
                    for n in needles:
                        v = v.replace(n.decode(), "[redacted]")
                    cleaned.append(v)
                headers.set_all(name, cleaned)
        try:
            raw = flow.response.get_content(strict=True) or b""
        except ValueError:
            log.warning(
                "%s answered an injected request with an undecodable body", flow.request.host
            )
            flow.response = http.Response.make(
                502, b'{"error": "interlock could not check the response for the key"}',
                {"Content-Type": "application/json"},
            )  # fmt: skip
            return
        if any(n in raw for n in needles):
            log.warning("%s echoed an injected secret; redacted", flow.request.host)
            for n in needles:
                raw = raw.replace(n, REDACTED)
            flow.response.set_content(raw)
        flow.response.trailers = None
