"""Secret injection: the agent calls an API that needs a key it never holds; the key comes
from a real OpenBao at request time and never reaches the agent or the audit log."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from aiohttp import web

from interlock.runtime import Runtime
from interlock.testing import serve_app
from interlock.testing.openbao import OpenBao
from tests.credentials.conftest import proxy

pytestmark = pytest.mark.integration
SECRET = "sk-live-3f9a7c1e5b2d4a6f8e0c"


@pytest.fixture
async def api() -> AsyncIterator[str]:
    """A SaaS API that wants the key, and (badly) echoes it back."""

    async def handler(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {SECRET}":
            return web.json_response({"error": "bad key"}, status=401)
        response = web.json_response(
            {
                "ok": True,
                "debug": f"you sent {request.headers['Authorization']}",
                "b64": base64.b64encode(SECRET.encode()).decode(),
                "url": quote(f"key={SECRET}", safe="="),
            },
            headers={"X-Echo-Key": SECRET},
        )
        response.enable_compression(web.ContentCoding.gzip)  # redaction sees decoded bodies
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with serve_app(app) as url:
        yield url


@pytest.fixture
def injected_key() -> str:
    """The key `rt` (tests/credentials/conftest.py) stores in OpenBao and injects."""
    return SECRET


def _audit_bytes(directory: Path) -> bytes:
    """The audit database as stored, with its write-ahead log."""
    return b"".join(p.read_bytes() for p in sorted(directory.glob("audit.db*")))


async def test_the_agent_calls_the_api_without_ever_holding_the_key(
    rt: Runtime, api: str, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(proxy=proxy(rt), timeout=10) as c:
        r = await c.get(api + "/v1/things", headers={"Authorization": "Bearer agent-guess"})
        assert r.status_code == 200, r.text
        assert r.json()["ok"] is True
        assert SECRET not in r.text
        assert r.headers["content-encoding"] == "gzip"
        assert "[redacted]" in r.json()["debug"]
        assert r.json()["b64"] == "[redacted]"
        assert base64.b64encode(SECRET.encode()).decode() not in r.text
        assert r.headers["x-echo-key"] == "[redacted]"
        outside = await c.get(api + "/other")
        assert outside.status_code == 401, "only matching requests get the key"
        near = await c.get(api + "/v1x/things")
        assert near.status_code == 401, "prefixes match whole path segments"
        for sneaky in ("/v1/%2e%2e/admin", "/v1/..;/admin", "/v1/a%2Fb", "/v1/a%5cb"):
            refused = await c.get(api + sneaky)
            assert refused.status_code == 403, sneaky
            assert "ambiguous path" in refused.json()["reason"]
    # httpx folds literal dot-segments itself; curl can send them as they are.
    literal = await asyncio.to_thread(
        subprocess.run,
        ["curl", "-s", "--path-as-is", "-x", proxy(rt), api + "/v1/../admin/keys"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "ambiguous path" in literal.stdout
    await rt.audit.flush()
    log = await asyncio.to_thread(_audit_bytes, tmp_path)
    assert SECRET.encode() not in log
    assert b"/v1/things" in log


async def test_with_vault_down_the_request_is_denied_with_the_reason(
    rt: Runtime, api: str, bao: OpenBao
) -> None:
    bao.stop()
    async with httpx.AsyncClient(proxy=proxy(rt), timeout=10) as c:
        r = await c.get(api + "/v1/things")
    assert r.status_code == 403
    assert "credential for 127.0.0.1 unavailable: Vault unreachable" in r.json()["reason"]
