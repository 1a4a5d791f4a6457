"""The admin HTTP server. For now: `/healthz` (liveness plus the serving policy version).

It binds loopback by default; later issues add authenticated approvals, posture and metrics
endpoints here.
"""

from __future__ import annotations

from aiohttp import web

from interlock.core.policy import PolicyManager
from interlock.errors import BundleError

POLICY_KEY = web.AppKey("policy", PolicyManager)


async def healthz(request: web.Request) -> web.Response:
    """200 when a policy is serving; 503 (with the reason) when none is."""
    manager = request.app[POLICY_KEY]
    try:
        version = manager.current.version
    except BundleError as exc:
        return web.json_response({"status": "unavailable", "error": str(exc)}, status=503)
    return web.json_response(
        {"status": "ok", "policy_version": version, "policy_error": manager.last_error}
    )


def make_app(policy: PolicyManager) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[POLICY_KEY] = policy
    app.router.add_get("/healthz", healthz)
    return app
