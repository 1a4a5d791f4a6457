"""The HTTP authz endpoint: NGINX `auth_request` and Envoy's HTTP ext_authz service.

NGINX sends a subrequest carrying the original request's headers, with the original
method and URI in headers the config sets (`X-Original-Method`, `X-Original-URI`);
Envoy's HTTP service sends the original method and path (behind `path_prefix`) and
headers, and optionally the body. Either way the answer is 200 (allowed, with headers
to copy upstream) or the denial status with a JSON body. NGINX treats any status but
2xx, 401 and 403 as an error, so denials stay 401/403 unless the policy says otherwise.
"""

from __future__ import annotations

from aiohttp import web

from interlock.extauthz.authorizer import Authorizer
from interlock.extauthz.request import AuthzRequest

ORIGINAL_URI = "x-original-uri"
ORIGINAL_METHOD = "x-original-method"
ORIGINAL_HOST = "x-original-host"


def _undecodable(request: web.Request) -> str | None:
    for name, value in request.headers.items():
        try:
            name.encode("utf-8")
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"header {name.encode('utf-8', 'replace')[:64]!r} is not UTF-8"
    return None


async def to_request(request: web.Request, prefix: str, max_body: int) -> AuthzRequest:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    bad = _undecodable(request)
    if ORIGINAL_URI in headers:
        method = headers.get(ORIGINAL_METHOD, "GET")
        path = headers[ORIGINAL_URI]
        host = headers.get(ORIGINAL_HOST, headers.get("host", ""))
    else:
        method = request.method
        path = request.raw_path
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :] or "/"
        host = headers.get("host", "")
    # Read up to one byte past the limit, so an oversized body is seen as one (a single
    # read returns only what has arrived so far).
    body = b""
    while len(body) <= max_body:
        chunk = await request.content.read(max_body + 1 - len(body))
        if not chunk:
            break
        body += chunk
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return AuthzRequest(
        method=method,
        path=path,
        host=host,
        headers=headers,
        body=body,
        scheme=headers.get("x-forwarded-proto", "http"),
        protocol=f"HTTP/{request.version.major}.{request.version.minor}",
        source_address=str(peer[0]) if peer else "",
        source_port=int(peer[1]) if peer else 0,
        request_id=headers.get("x-request-id", ""),
        undecodable=bad,
    )


def make_app(authorizer: Authorizer) -> web.Application:
    prefix = authorizer.config.http_path_prefix.rstrip("/")

    async def handle(request: web.Request) -> web.StreamResponse:
        req = await to_request(request, prefix, authorizer.config.max_body_bytes)
        r = await authorizer.check(req, rewrites=False)
        if r.allowed:
            resp = web.Response(status=200)
            for name, value in r.headers + r.response_headers_to_add:
                resp.headers[name] = value
            return resp
        resp = web.Response(status=r.status, text=r.body)
        for name, value in r.headers:
            resp.headers[name] = value
        return resp

    app = web.Application(client_max_size=authorizer.config.max_body_bytes + 1)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
