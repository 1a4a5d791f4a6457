"""mitmproxy addon: put a secret into allowed requests, so agents call APIs without it.

Runs after `Egress`: only a request the PDP allowed (and that is being forwarded) gets
the header, built from the rule's template with the secret read from Vault at that
moment (cached briefly by the broker). The agent's own value for that header is replaced.
Vault unreachable = the request is denied with the reason; it is never sent without the
credential or with a stale one the broker no longer has.

The secret must not come back to the agent: an API that echoes it (in a header or the
body) has it replaced with `[redacted]` before the response leaves the proxy. The audit
log never sees it either: the request was decided (and recorded) before injection, with
header names only.
"""

from __future__ import annotations

import logging

from mitmproxy import http

from interlock.config import InjectRule
from interlock.credentials.broker import Broker, CredentialError
from interlock.proxies.http.egress import DECISION, FORWARDED, deny
from interlock.proxies.http.tunnel import same_host

log = logging.getLogger(__name__)
INJECTED = "interlock.injected"
REDACTED = b"[redacted]"


class Inject:
    def __init__(self, broker: Broker, rules: list[InjectRule]) -> None:
        self.broker = broker
        self.rules = rules

    def rule_for(self, flow: http.HTTPFlow) -> InjectRule | None:
        path = flow.request.path.split("?", 1)[0]
        for rule in self.rules:
            if same_host(flow.request.host, rule.host) and path.startswith(rule.path_prefix):
                return rule
        return None

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or not flow.metadata.get(FORWARDED):
            return
        rule = self.rule_for(flow)
        if rule is None:
            return
        try:
            secret = await self.broker.secret(rule.secret)
        except CredentialError as exc:
            flow.metadata[FORWARDED] = False
            deny(flow, flow.metadata[DECISION], f"credential for {rule.host} unavailable: {exc}")
            return
        flow.request.headers[rule.header] = rule.template.replace("{secret}", secret)
        flow.metadata[INJECTED] = secret

    async def response(self, flow: http.HTTPFlow) -> None:
        secret: str | None = flow.metadata.get(INJECTED)
        if not secret or flow.response is None:
            return
        needle = secret.encode()
        headers = flow.response.headers
        for name in {n for n in headers if any(secret in v for v in headers.get_all(n))}:
            headers.set_all(name, [v.replace(secret, "[redacted]") for v in headers.get_all(name)])
        raw = flow.response.get_content(strict=False) or b""
        if needle in raw:
            log.warning("%s echoed an injected secret; redacted", flow.request.host)
            flow.response.set_content(raw.replace(needle, REDACTED))
