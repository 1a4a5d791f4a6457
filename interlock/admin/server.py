"""The admin HTTP server: health, readiness, Prometheus metrics, agents and their
posture, recent decisions, and the audit log's checkpoint and proofs.

It binds loopback by default. Everything but `/healthz` and `/readyz` needs
`Authorization: Bearer <token>` (compared by SHA-256 digest in constant time).
`interlock agents ...` is a client of this API. A dependency that is down (the state
store, the audit store, shared approvals) makes a route answer 503 naming it, never 500.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from interlock.admin.readiness import Readiness
from interlock.approvals.holds import Holds
from interlock.approvals.request import ApprovalError
from interlock.approvals.web import WebApprovals, add_routes
from interlock.audit.log import AuditLog
from interlock.core.context import Posture
from interlock.core.model import parse_restriction
from interlock.core.modes import PROTOCOLS, Mode
from interlock.core.pdp import PDP
from interlock.core.policy import PolicyManager
from interlock.errors import AuditError, BundleError, StateError
from interlock.identity.registry import AgentRegistry

POLICY_KEY = web.AppKey("policy", PolicyManager)
AUDIT_KEY = web.AppKey("audit", AuditLog)


@dataclass
class Admin:
    """What the API acts on (absent parts: their endpoints answer 404)."""

    pdp: PDP | None = None
    registry: AgentRegistry | None = None
    holds: Holds | None = None
    token_digest: bytes | None = None
    sessions: Callable[[], Mapping[str, int]] = field(default=lambda: {})
    intel_status: Callable[[], Mapping[str, Any]] | None = None
    web: WebApprovals | None = None
    """The approvals page and webhook links (under /ui/)."""
    readiness: Readiness = field(default_factory=Readiness)
    workers: Callable[[], Awaitable[list[Any] | None]] | None = None
    """The other Postgres workers' reports (`[postgres] workers`), for `/metrics`; None
    from it when there are none."""


ADMIN_KEY = web.AppKey("admin", Admin)


async def healthz(request: web.Request) -> web.Response:
    """200 when a policy is serving; 503 (with the reason) when none is. The audit log's
    state is reported too: an unwritable log means actions above `low` are being denied."""
    manager = request.app[POLICY_KEY]
    audit = request.app[AUDIT_KEY].status()
    try:
        version = manager.current.version
    except BundleError as exc:
        return web.json_response(
            {"status": "unavailable", "error": str(exc), "audit": audit}, status=503
        )
    return web.json_response(
        {
            "status": "ok" if audit["healthy"] else "degraded",
            "policy_version": version,
            "policy_error": manager.last_error,
            "audit": audit,
        }
    )


async def readyz(request: web.Request) -> web.Response:
    """200 once every listener is bound and every required dependency answers; 503 with
    the state of each otherwise (see admin/readiness.py)."""
    status, body = await _admin(request).readiness.report()
    return web.json_response(body, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNAUTHENTICATED = frozenset({"/healthz", "/readyz"})
"""Probes from an orchestrator, which holds no token; they reveal no agent or decision."""


def _unavailable(dependency: str, reason: str) -> web.Response:
    return web.json_response(
        {"error": reason, "dependency": dependency}, status=503, headers={"Retry-After": "1"}
    )


@web.middleware
async def degrade(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A dependency that is down is a 503 that names it, for every route."""
    try:
        return await handler(request)
    except StateError as exc:
        return _unavailable("state store", str(exc))
    except AuditError as exc:
        return _unavailable("audit store", str(exc))
    except ApprovalError as exc:
        if exc.status == 503:
            return _unavailable("shared approvals", str(exc))
        return web.json_response({"error": str(exc)}, status=exc.status)


@web.middleware
async def bearer(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in UNAUTHENTICATED or request.path.startswith("/ui/"):
        # /ui/ pages authenticate people themselves (sessions, signed links).
        return await handler(request)
    admin = request.app[ADMIN_KEY]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    digest = hashlib.sha256(token.strip().encode()).digest()
    if (
        admin.token_digest is None
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(digest, admin.token_digest)
    ):
        return web.json_response(
            {"error": "a valid bearer token is required"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="interlock admin"'},
        )
    return await handler(request)


def _admin(request: web.Request) -> Admin:
    return request.app[ADMIN_KEY]


def _pdp(request: web.Request) -> PDP:
    pdp = _admin(request).pdp
    if pdp is None:
        raise web.HTTPNotFound(text='{"error": "no decision point here"}')
    return pdp


def _posture(p: Posture) -> dict[str, Any]:
    return {
        "restrictions": sorted(p.restrictions),
        "isolated": p.isolated,
        "until": p.until,
        "reason": p.reason,
    }


def _known(request: web.Request, agent_id: str) -> None:
    admin = _admin(request)
    pdp = _pdp(request)
    registered = admin.registry is not None and agent_id in admin.registry
    if not registered and agent_id not in pdp.store.agents():
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"unknown agent {agent_id!r}"}),
            content_type="application/json",
        )


async def metrics(request: web.Request) -> web.Response:
    from interlock.admin.metrics import render

    admin = _admin(request)
    pdp = _pdp(request)
    deps = await admin.readiness.dependencies()
    reports = await admin.workers() if admin.workers is not None else None
    text = render(
        pdp.stats,
        request.app[AUDIT_KEY].status(),
        len(admin.holds.pending()) if admin.holds is not None else 0,
        admin.sessions(),
        {name: bool(d["up"]) for name, d in deps.items()},
        reports,
    )
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def agents(request: web.Request) -> web.Response:
    admin = _admin(request)
    pdp = _pdp(request)
    ids = set(pdp.store.agents()) | set(admin.registry.ids() if admin.registry else [])
    now = pdp.clock()
    out = []
    for agent_id in sorted(ids):
        posture = await pdp.store.posture(agent_id, now)
        out.append({"id": agent_id, "posture": _posture(posture)})
    return web.json_response({"agents": out})


async def agent(request: web.Request) -> web.Response:
    agent_id = request.match_info["agent"]
    _known(request, agent_id)
    pdp = _pdp(request)
    now = pdp.clock()
    view = await pdp.store.view(agent_id, "", now, recent=True)
    posture = await pdp.store.posture(agent_id, now)
    return web.json_response(
        {
            "id": agent_id,
            "posture": _posture(posture),
            "taints": sorted(view.taints),
            "taint_sources": dict(view.taint_sources),
            "actions_last_minute": view.actions_last_minute,
            "baseline_per_minute": view.baseline_per_minute,
            "decisions": pdp.stats.for_agent(agent_id, 50),
            "modes": _modes(pdp, agent_id),
        }
    )


def _modes(pdp: PDP, agent_id: str) -> dict[str, dict[str, str]]:
    """Per protocol, the mode this agent's next action is decided in, and the setting
    that chose it."""
    out = {}
    for protocol in PROTOCOLS:
        mode, why = pdp.modes.resolve(agent_id, protocol, pdp.mode_overrides)
        out[protocol] = {"mode": mode.value, "why": why}
    return out


async def agent_mode(request: web.Request) -> web.Response:
    """Set an agent's mode (`{"mode": "enforce" | "shadow"}`), or with `null` go back to
    the configured one; effective from the agent's next action, on open sessions too."""
    agent_id = request.match_info["agent"]
    _known(request, agent_id)
    pdp = _pdp(request)
    value = (await _body(request)).get("mode", "missing")
    if value is not None and value not in {m.value for m in Mode}:
        return web.json_response({"error": "mode must be enforce, shadow or null"}, status=400)
    await pdp.set_agent_mode(agent_id, Mode(value) if value else None, "admin API")
    return web.json_response({"id": agent_id, "modes": _modes(pdp, agent_id)})


async def shadow_report(request: web.Request) -> web.Response:
    """`interlock audit shadow-report` as JSON, or with `?format=html` as a page."""
    from interlock.audit.shadow import parse_since
    from interlock.audit.shadow import shadow_report as report_of

    q = request.query
    try:
        since = parse_since(q["since"]) if "since" in q else None
    except ValueError:
        return web.json_response({"error": "since must be YYYY-MM-DDTHH:MM:SS"}, status=400)
    store = request.app[AUDIT_KEY].store
    report = await report_of(store, since, q.get("agent"), q.get("protocol"))
    if q.get("format") == "html":
        return web.Response(text=report.page(), content_type="text/html", charset="utf-8")
    return web.json_response(report.to_json())


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        doc = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "body must be JSON"}') from None
    if not isinstance(doc, dict):
        raise web.HTTPBadRequest(text='{"error": "body must be a JSON object"}')
    return doc


async def restrict(request: web.Request) -> web.Response:
    agent_id = request.match_info["agent"]
    _known(request, agent_id)
    pdp = _pdp(request)
    doc = await _body(request)
    names = doc.get("restrictions", [])
    minutes = doc.get("minutes")
    try:
        if not isinstance(names, list) or not names:
            raise ValueError("restrictions must be a non-empty list")
        restrictions = [parse_restriction(str(r)) for r in names]
        until = pdp.clock() + float(minutes) * 60 if minutes is not None else None
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    posture = await pdp.store.restrict(
        agent_id, restrictions, reason=str(doc.get("reason", "admin API")), until=until
    )
    return web.json_response({"id": agent_id, "posture": _posture(posture)})


async def isolate(request: web.Request) -> web.Response:
    agent_id = request.match_info["agent"]
    _known(request, agent_id)
    pdp = _pdp(request)
    doc = await _body(request)
    posture = await pdp.store.restrict(
        agent_id, (), isolate=True, reason=str(doc.get("reason", "admin API"))
    )
    return web.json_response({"id": agent_id, "posture": _posture(posture)})


async def restore(request: web.Request) -> web.Response:
    agent_id = request.match_info["agent"]
    _known(request, agent_id)
    pdp = _pdp(request)
    doc = await _body(request)
    await pdp.store.restore(agent_id, str(doc.get("reason", "restored via admin API")))
    posture = await pdp.store.posture(agent_id, pdp.clock())
    return web.json_response({"id": agent_id, "posture": _posture(posture)})


async def decisions(request: web.Request) -> web.Response:
    pdp = _pdp(request)
    try:
        limit = max(1, min(1000, int(request.query.get("limit", "100"))))
    except ValueError:
        return web.json_response({"error": "limit must be a number"}, status=400)
    rows = pdp.stats.for_agent(request.query.get("agent"), limit)
    return web.json_response({"decisions": rows})


async def checkpoint(request: web.Request) -> web.Response:
    latest = await request.app[AUDIT_KEY].checkpoint()
    if latest is None:
        return web.json_response({"error": "no records yet"}, status=404)
    size, note = latest
    return web.json_response({"size": size, "checkpoint": note})


async def log_checkpoint(request: web.Request) -> web.Response:
    """tlog-tiles `<prefix>/checkpoint`: the latest signed note (not cached)."""
    notes = await request.app[AUDIT_KEY].store.checkpoints()
    if not notes:
        return web.Response(status=404, text="no checkpoint yet\n")
    return web.Response(
        text=notes[-1][1], content_type="text/plain", headers={"Cache-Control": "no-store"}
    )


async def log_tile(request: web.Request) -> web.Response:
    """tlog-tiles `<prefix>/tile/...`: only tiles of a size some checkpoint signed."""
    from interlock.audit import tiles

    store = request.app[AUDIT_KEY].store
    try:
        wanted = tiles.parse_path("tile/" + request.match_info["path"])
    except ValueError as exc:
        return web.Response(status=400, text=f"{exc}\n")
    sizes = [s for s, _ in await store.checkpoints()]
    # Full tiles of the latest signed tree, and the partial ones any checkpoint needs.
    signed = sizes[-1:] if wanted.width == tiles.WIDTH else sizes
    if not any(tiles.part_of(wanted, s) for s in signed):
        return web.Response(status=404, text="no such tile\n")
    try:
        body = await tiles.read(store, wanted)
    except AuditError as exc:
        return web.Response(status=500, text=f"{exc}\n")
    cache = "public, max-age=31536000, immutable"
    return web.Response(
        body=body, content_type="application/octet-stream", headers={"Cache-Control": cache}
    )


async def proof(request: web.Request) -> web.Response:
    from interlock.audit import commands

    store = request.app[AUDIT_KEY].store
    try:
        index = int(request.query["index"])
        size = int(request.query.get("size", 0)) or await store.size()
    except (KeyError, ValueError):
        return web.json_response({"error": "give ?index=N (and optionally size)"}, status=400)
    if not 0 <= index < size <= await store.size():
        return web.json_response({"error": "index out of range"}, status=400)
    path = await commands.inclusion_proof(store, index, size)
    return web.json_response(
        {
            "index": index,
            "size": size,
            "root": commands.b64([await commands.root(store, size)])[0],
            "proof": commands.b64(path),
        }
    )


def _holds(request: web.Request) -> Holds:
    holds = _admin(request).holds
    if holds is None:
        raise web.HTTPNotFound(text='{"error": "no holds here"}', content_type="application/json")
    return holds


async def approvals(request: web.Request) -> web.Response:
    pending = await _holds(request).pending_anywhere()
    return web.json_response({"pending": [r.to_json() for r in pending]})


async def approval(request: web.Request) -> web.Response:
    request_ = await _holds(request).get_anywhere(request.match_info["id"])
    if request_ is None:
        return web.json_response({"error": "unknown or expired approval"}, status=404)
    return web.json_response(request_.to_json())


async def answer(request: web.Request) -> web.Response:
    """Approve or deny a held action; the answer, approver and channel are audited as an
    observation under the held decision."""
    decision_id = request.match_info["id"]
    approved = request.match_info["verb"] == "approve"
    doc = await _body(request)
    approver = str(doc.get("approver", "")).strip()
    if not approver or len(approver) > 256:
        return web.json_response({"error": "approver is required (<= 256 chars)"}, status=400)
    # The API's own channels only: an API caller cannot pass as the web page or CIBA.
    channel = "cli" if doc.get("channel") == "cli" else "api"
    held = await _holds(request).answer_anywhere(
        decision_id, approved, approver, channel, str(doc.get("reason", ""))[:500]
    )
    return web.json_response({"id": held.decision_id, "approved": approved, "approver": approver})


async def intel(request: web.Request) -> web.Response:
    status = _admin(request).intel_status
    if status is None:
        return web.json_response({"error": "no threat feeds configured"}, status=404)
    return web.json_response(dict(status()))


def make_app(policy: PolicyManager, audit: AuditLog, admin: Admin | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024, middlewares=[bearer, degrade])
    app[POLICY_KEY] = policy
    app[AUDIT_KEY] = audit
    app[ADMIN_KEY] = admin or Admin()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/agents", agents)
    app.router.add_get("/v1/agents/{agent}", agent)
    app.router.add_post("/v1/agents/{agent}/restrict", restrict)
    app.router.add_post("/v1/agents/{agent}/isolate", isolate)
    app.router.add_post("/v1/agents/{agent}/restore", restore)
    app.router.add_post("/v1/agents/{agent}/mode", agent_mode)
    app.router.add_get("/v1/shadow-report", shadow_report)
    app.router.add_get("/v1/decisions", decisions)
    app.router.add_get("/v1/audit/checkpoint", checkpoint)
    app.router.add_get("/v1/audit/proof", proof)
    app.router.add_get("/v1/audit/log/checkpoint", log_checkpoint)
    app.router.add_get("/v1/audit/log/tile/{path:.+}", log_tile)
    app.router.add_get("/v1/intel", intel)
    app.router.add_get("/v1/approvals", approvals)
    app.router.add_get("/v1/approvals/{id}", approval)
    app.router.add_post("/v1/approvals/{id}/{verb:approve|deny}", answer)
    web_state = app[ADMIN_KEY].web
    if web_state is not None:
        add_routes(app, web_state)
    return app
