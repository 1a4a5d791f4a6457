"""An injected key echoed back in an encoding `Redact` does not list reaches the agent.

Two ordinary echoes: JSON that escapes `/` as `\\/` (PHP's json_encode default; valid
JSON, so "JSON-escaped" in docs/credentials.md covers it), and the whole header value in
base64 (a request inspector), where the key sits at an offset that is not a multiple of 3
and so is not `base64(secret)`. The key here has `/` and `+`, as AWS-style keys do."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from interlock.runtime import Runtime
from interlock.testing import serve_app
from tests.credentials.conftest import proxy

pytestmark = pytest.mark.integration
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY+q"


@pytest.fixture
async def api() -> AsyncIterator[str]:
    async def slashes(request: web.Request) -> web.Response:
        body = json.dumps({"seen": request.headers.get("Authorization", "")}).replace("/", "\\/")
        return web.Response(body=body.encode(), content_type="application/json")

    async def inspector(request: web.Request) -> web.Response:
        raw = request.headers.get("Authorization", "").encode()
        return web.json_response({"authorization_b64": base64.b64encode(raw).decode()})

    app = web.Application()
    app.router.add_get("/v1/slashes", slashes)
    app.router.add_get("/v1/inspect", inspector)
    async with serve_app(app) as url:
        yield url


@pytest.fixture
def injected_key() -> str:
    """The key `rt` (tests/credentials/conftest.py) stores in OpenBao and injects."""
    return SECRET


async def test_a_json_echo_escaping_slashes_is_redacted(rt: Runtime, api: str) -> None:
    async with httpx.AsyncClient(proxy=proxy(rt), timeout=10) as c:
        r = await c.get(api + "/v1/slashes")
    assert r.status_code == 200, r.text
    assert SECRET not in r.json()["seen"], "the agent parsed the key out of the JSON echo"


async def test_a_base64_echo_of_the_whole_header_is_redacted(rt: Runtime, api: str) -> None:
    async with httpx.AsyncClient(proxy=proxy(rt), timeout=10) as c:
        r = await c.get(api + "/v1/inspect")
    assert r.status_code == 200, r.text
    echoed = r.json()["authorization_b64"]
    decoded = base64.b64decode(echoed) if echoed != "[redacted]" else b""
    assert SECRET.encode() not in decoded, "the agent decoded the key from the echo"
