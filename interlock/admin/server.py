"""The admin HTTP server. For now: `/healthz` (liveness plus the serving policy version).

It binds loopback by default; later issues add authenticated approvals, posture and metrics
endpoints here.
"""

from __future__ import annotations

from aiohttp import web

from interlock.audit.log import AuditLog
from interlock.core.policy import PolicyManager
from interlock.errors import BundleError

POLICY_KEY = web.AppKey("policy", PolicyManager)
AUDIT_KEY = web.AppKey("audit", AuditLog)


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


def make_app(policy: PolicyManager, audit: AuditLog) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[POLICY_KEY] = policy
    app[AUDIT_KEY] = audit
    app.router.add_get("/healthz", healthz)
    return app
