"""Evaluate: one `AuthzRequest` in, one `AuthzResponse` out, every path decided and audited.

Both doors (gRPC Check, HTTP authz) call `Authorizer.check`, which never raises. A request
that cannot be read (undecodable bytes, an ambiguous path, a body that is not what it
claims) is refused through `PDP.refuse`, so the denial has a decision id and an audit
record like any other.

Who the agent is: a bearer JWT (when `[identity.jwt]` is configured), else the identity
header the mesh sets (when configured), else the mTLS source principal mapped in
`principals`. In interlock mode an unidentified request is denied with 401; in OPA-Envoy
mode the policy decides on its own and the interlock context names an anonymous agent.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from interlock.approvals.holds import Holds
from interlock.classify.content import MAX_SCAN, scan
from interlock.classify.mcp import jsonrpc_batch, tool_call
from interlock.config import ExtAuthzConfig
from interlock.core.model import Action, Agent, Decision, Effect, Operation
from interlock.core.pdp import PDP
from interlock.core.refusal import ANONYMOUS
from interlock.errors import IdentityError, PolicyError
from interlock.extauthz import opa
from interlock.extauthz.body import PARSED, BadBody, Body, read_body
from interlock.extauthz.paths import BadPath, NormalPath, normalise, parse_query
from interlock.extauthz.request import AuthzRequest
from interlock.extauthz.verdict import AuthzResponse, denial, dynamic_metadata, from_decision
from interlock.identity.jwt import JwtVerifier
from interlock.identity.registry import AgentRegistry

log = logging.getLogger(__name__)

VOLATILE_HEADERS = frozenset(
    {"x-request-id", "traceparent", "tracestate", "x-amzn-trace-id", "x-cloud-trace-context",
     "grpc-timeout", "date"}
)  # fmt: skip
VOLATILE_PREFIXES = ("x-b3-", "x-envoy-", "x-forwarded-", "x-ot-span-context")
"""Headers that differ on every attempt of the same request (not part of its identity)."""
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
METHOD_OVERRIDES = ("x-http-method-override", "x-http-method", "x-method-override")
"""Headers some frameworks (Express's method-override, ASP.NET, Google's APIs) take as
the request's real method."""


@dataclass(frozen=True)
class Unidentified:
    reason: str


def _host(authority: str) -> str:
    """The host a request names, as one spelling: lower case, without port, and without
    the trailing dot of a fully qualified name (Envoy forwards `Payments.Internal.` as
    sent, and the upstream serves it as `payments.internal`; a rule on that target must
    meet it)."""
    host = authority.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host.rstrip(".")


class Authorizer:
    def __init__(
        self,
        config: ExtAuthzConfig,
        pdp: PDP,
        registry: AgentRegistry,
        jwt: JwtVerifier | None = None,
        holds: Holds | None = None,
    ) -> None:
        self.config = config
        self.holds = holds
        self.pdp = pdp
        self.registry = registry
        self.jwt = jwt
        self.identity_header = (config.identity_header or "").lower() or None

    async def check(self, req: AuthzRequest, *, rewrites: bool = True) -> AuthzResponse:
        """The answer to `req`. Without `rewrites` (the HTTP endpoint: NGINX's
        auth_request forwards the request as it is), an allow that holds only once a
        request header is removed or the query changed is refused instead: allowing it
        would forward what the policy allowed only without (a header it strips)."""
        try:
            r = await self._check(req)
            if r.allowed and not rewrites:
                needs = [
                    *(f"remove header {h}" for h in r.headers_to_remove),
                    *(f"set query parameter {k}" for k, _ in r.query_parameters_to_set),
                    *(f"remove query parameter {k}" for k in r.query_parameters_to_remove),
                ]
                if needs:
                    who = await self.identify(req)
                    agent = who if isinstance(who, Agent) else ANONYMOUS
                    why = (
                        f"allowed only if the request is changed ({'; '.join(needs)[:300]}), "
                        "which this endpoint cannot do"
                    )
                    return await self._refuse(agent, req, why)
            return r
        except Exception as exc:
            log.exception("ext_authz check failed")
            decision = await self.pdp.refuse(
                self._action(ANONYMOUS, req, None, None), f"internal error: {type(exc).__name__}"
            )
            return denial(decision)

    async def _check(self, req: AuthzRequest) -> AuthzResponse:
        who = await self.identify(req)
        agent = who if isinstance(who, Agent) else ANONYMOUS
        if req.undecodable is not None:
            return await self._refuse(agent, req, req.undecodable)
        try:
            path = normalise(req.path or "/", self.config.strict_path_encoding)
            body = read_body(req.body, req.headers, self.config.max_body_bytes)
            query = parse_query(path.query)
        except (BadPath, BadBody) as exc:
            return await self._refuse(agent, req, str(exc))
        ctype = req.headers.get("content-type", "").lower()
        readable = "json" in ctype or any(t in ctype for t in PARSED) or body.json_like
        if body.truncated and readable:
            # A JSON or form body cut short by Envoy cannot be read (an MCP tools/call
            # padded past max_request_bytes would otherwise pass as a plain write), nor
            # can one that is JSON under another type or none (servers parse it anyway).
            return await self._refuse(
                agent, req, "JSON or form body larger than the proxy forwards for inspection"
            )
        if body.text is not None and len(body.text) > MAX_SCAN:
            # Scanned in part, the rest would pass unseen (a `max_body_bytes` above the
            # scan limit): refused, as the HTTP proxy refuses it.
            return await self._refuse(
                agent, req, f"textual body longer than the {MAX_SCAN} characters inspected"
            )
        if jsonrpc_batch(body.document):
            return await self._refuse(
                agent, req, "a JSON-RPC batch: interlock decides one call per request"
            )
        action = self._action(agent, req, path, body, sorted(query)[:64])
        if self.config.mode == "opa-envoy":
            return await self._opa(action, req, path, body)
        if isinstance(who, Unidentified):
            decision = await self.pdp.refuse(action, who.reason)
            return denial(decision, 401)
        decision = await self.pdp.decide(action)
        if decision.effect is Effect.APPROVE and self.holds is not None:
            return await self._approval(decision, action, req)
        return from_decision(decision)

    def request_identity(self, req: AuthzRequest) -> str:
        """SHA-256 of everything that makes this request this request: method, scheme,
        authority with port, the whole raw path and query, and every header value but
        the per-attempt ones (and the agent's own bearer token when it is its identity,
        which may be refreshed between attempts: the agent id is hashed instead)."""
        skip_auth = self.jwt is not None
        headers = sorted(
            (k, v)
            for k, v in req.headers.items()
            if k not in VOLATILE_HEADERS
            and not k.startswith(VOLATILE_PREFIXES)
            and not (skip_auth and k == "authorization")
        )
        doc = [req.method, req.scheme, req.host, req.path, headers]
        return hashlib.sha256(json.dumps(doc).encode()).hexdigest()

    async def _approval(
        self, decision: Decision, action: Action, req: AuthzRequest
    ) -> AuthzResponse:
        """Envoy cannot wait for a person: the first attempt opens an approval request and
        is refused with its id; a retry of the same request after approval passes."""
        assert self.holds is not None
        if action.details.get("truncated_body"):
            why = "approval needs the whole body, and Envoy forwarded only part of it"
            return denial(replace(decision, effect=Effect.DENY, reasons=(why,)))
        d = action.details
        text = (
            f"{req.method} {req.scheme}://{req.host}{req.path}\n"
            f"body {d.get('body_bytes', 0)} bytes, sha256 {d.get('body_sha256', '')}\n"
            f"request sha256 {self.request_identity(req)}"
        )
        retry = await self.holds.retry(decision, self.config.approval_timeout, action, text)
        if retry.state == "granted":
            assert retry.verdict is not None
            written = await self.pdp.observe(
                Action(
                    action.agent,
                    "approval",
                    Operation.DELEGATE,
                    retry.approval_id,
                    {
                        "used": True,
                        "approval_id": retry.approval_id,
                        "approver": retry.verdict.approver,
                    },
                    parents=(retry.approval_id, decision.decision_id),
                ),
                f"released by approval {retry.approval_id} ({retry.verdict.approver})",
                decision,
                approver={"id": retry.verdict.approver, "channel": "retry", "approved": True},
                required=True,
            )
            if written is None:
                why = "the release by approval could not be audited"
                return denial(replace(decision, effect=Effect.DENY, reasons=(why,)))  # fmt: skip
            return from_decision(decision, released=True)
        if retry.state == "denied":
            assert retry.verdict is not None
            why = retry.verdict.reason or "denied"
            if retry.verdict.approver:
                why = f"denied by {retry.verdict.approver}"
            refused = replace(decision, effect=Effect.DENY, reasons=(*decision.reasons, why))
            return denial(refused)
        return denial(decision, approval_id=retry.approval_id)

    async def identify(self, req: AuthzRequest) -> Agent | Unidentified:
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        if self.jwt is not None and scheme.lower() == "bearer" and token.strip():
            try:
                return await self.jwt.verify(token.strip())
            except IdentityError as exc:
                return Unidentified(f"invalid bearer token: {exc}")
        if self.identity_header is not None and self.identity_header in req.headers:
            agent_id = req.headers[self.identity_header].strip()
            entry = self.registry.get(agent_id)
            if entry is None:
                return Unidentified(f"unknown agent {agent_id[:64]!r} in {self.identity_header}")
            return entry.agent("header")
        if req.source_principal:
            agent_id = self.config.principals.get(req.source_principal, "")
            entry = self.registry.get(agent_id) if agent_id else None
            if entry is not None:
                return entry.agent("mtls")
        return Unidentified("no agent identity (bearer JWT, identity header or mTLS principal)")

    async def refuse_undecided(
        self, req: AuthzRequest, reason: str, details: dict[str, Any]
    ) -> Decision:
        """A Check refused before it was decided (shed under overload, or past its
        deadline): recorded under `anonymous` with the request it carried, unread."""
        action = self._action(ANONYMOUS, req, None, None)
        noted = replace(action, details={**action.details, "guard": True, **details})
        return await self.pdp.refuse(noted, reason)

    async def _refuse(self, agent: Agent, req: AuthzRequest, reason: str) -> AuthzResponse:
        decision = await self.pdp.refuse(self._action(agent, req, None, None), reason)
        return denial(decision)

    def _action(
        self,
        agent: Agent,
        req: AuthzRequest,
        path: NormalPath | None,
        body: Body | None,
        query_keys: list[str] | None = None,
    ) -> Action:
        details: dict[str, Any] = {
            "method": req.method[:16],
            "raw_path": req.path[:2048],
            "scheme": req.scheme[:16],
            "protocol": req.protocol[:16],
            "headers": sorted(req.headers)[:64],
            "source_principal": req.source_principal[:256],
            "destination_principal": req.destination_principal[:256],
        }
        # The method the service may run is the override where it honours one: a GET
        # that says DELETE in a header is decided as a write, with every method named.
        overrides = [
            req.headers[h].strip().upper()[:16] for h in METHOD_OVERRIDES if h in req.headers
        ]
        if overrides:
            details["method_overrides"] = overrides
        methods = {req.method.upper(), *overrides}
        operation = Operation.READ if methods <= READ_METHODS else Operation.WRITE
        target = _host(req.host) or "unknown"
        labels: frozenset[str] = frozenset()
        payload = ""
        if path is not None:
            details["path"] = path.path[:2048]
            details["query_keys"] = query_keys or []
        if body is not None:
            details.update(
                body_bytes=body.size,
                body_sha256=hashlib.sha256(req.body).hexdigest(),
                truncated_body=body.truncated,
                content_type=req.headers.get("content-type", "").split(";", 1)[0][:128],
            )
            if body.text:
                found = scan(body.text[:MAX_SCAN])
                labels = found.labels
                if found.kinds:
                    details["dlp"] = sorted(found.kinds)
            if body.text:
                payload = body.text[:MAX_SCAN]
            call = tool_call(body.document)
            if call is not None:
                details.update(mcp_server=target, arguments=sorted(call.arguments)[:64])
                return Action(
                    agent,
                    "envoy",
                    Operation.TOOL_CALL,
                    call.name,
                    details,
                    labels=labels,
                    confidence=call.confidence,
                    payload=payload,
                )
        return Action(agent, "envoy", operation, target, details, labels=labels, payload=payload)

    async def _opa(
        self, action: Action, req: AuthzRequest, path: NormalPath, body: Body
    ) -> AuthzResponse:
        a = await self.pdp.assess(action)
        if a.error is not None:
            return denial(await self.pdp.settle(a.action, a, a.deny(a.error)))
        try:
            doc = opa.build_input(req, path, body)
            doc["interlock"] = {**a.input_doc, "raw_path": req.path, "path": path.path}
            value = self.pdp.policy.current.evaluate(self.config.decision_path, doc)
            result = opa.parse_result(value)
        except (PolicyError, opa.BadResult, BadPath) as exc:
            a.failed = True  # denied in every mode, shadow too
            return denial(await self.pdp.settle(a.action, a, a.deny(f"policy: {exc}")))
        effect = Effect.ALLOW if result.allowed else Effect.DENY
        reason = f"{self.config.decision_path} = {'allowed' if result.allowed else 'denied'}"
        proposed = Decision(a.decision_id, effect, a.risk, a.version, reasons=(reason,), time=a.now)
        decision = await self.pdp.settle(a.action, a, proposed)
        if result.allowed and decision.effect is not Effect.ALLOW:
            return denial(decision)  # posture or the audit log overruled the policy
        if not result.allowed and decision.allowed:
            result = AuthzResponse(True, 200)  # shadow mode: the denial is recorded, not enforced
        result.metadata = {**result.metadata, **dynamic_metadata(decision)}
        if not result.allowed:
            result.headers.append(("x-interlock-decision-id", decision.decision_id))
        return result
