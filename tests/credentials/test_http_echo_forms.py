"""An injected key echoed back in an encoding `Redact` does not list reaches the agent.

Two ordinary echoes: JSON that escapes `/` as `\\/` (PHP's json_encode default; valid
JSON, so "JSON-escaped" in docs/credentials.md covers it), and the whole header value in
base64 (a request inspector), where the key sits at an offset that is not a multiple of 3
and so is not `base64(secret)`. The key here has `/` and `+`, as AWS-style keys do."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import hvac
import pytest
from aiohttp import web

from interlock.config import AgentConfig, Config, CredentialsConfig, HttpConfig, InjectRule
from interlock.runtime import Runtime, build, start
from interlock.testing import serve_app
from interlock.testing.openbao import OpenBao

pytestmark = pytest.mark.integration
TOKEN = "coder-token-0123456789"
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
async def rt(bao: OpenBao, api: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    client = hvac.Client(url=bao.address, token=bao.root_token)
    await asyncio.to_thread(
        client.secrets.kv.v2.create_or_update_secret,
        path="saas", secret={"api_key": SECRET}, mount_point="secret",
    )  # fmt: skip
    config = Config(
        data_dir=tmp_path / "data",
        audit={"store": f"sqlite:///{tmp_path / 'audit.db'}"},
        agents={"coder": AgentConfig(token=TOKEN)},
        http=HttpConfig(listen="127.0.0.1:0", allow_networks=["127.0.0.0/8"]),
        credentials=CredentialsConfig(
            address=bao.address,
            token=bao.root_token,
            timeout=2,
            inject=[
                InjectRule(
                    host="127.0.0.1",
                    scheme="http",
                    port=int(api.rsplit(":", 1)[1]),
                    path_prefix="/v1/",
                    secret="secret/saas#api_key",
                )
            ],
        ),
    )
    runtime = build(config)
    await start(runtime)
    yield runtime
    await runtime.stop()


def _proxy(rt: Runtime) -> str:
    return f"http://coder:{TOKEN}@" + rt.endpoints["http"].removeprefix("http://")


async def test_a_json_echo_escaping_slashes_is_redacted(rt: Runtime, api: str) -> None:
    async with httpx.AsyncClient(proxy=_proxy(rt), timeout=10) as c:
        r = await c.get(api + "/v1/slashes")
    assert r.status_code == 200, r.text
    assert SECRET not in r.json()["seen"], "the agent parsed the key out of the JSON echo"


async def test_a_base64_echo_of_the_whole_header_is_redacted(rt: Runtime, api: str) -> None:
    async with httpx.AsyncClient(proxy=_proxy(rt), timeout=10) as c:
        r = await c.get(api + "/v1/inspect")
    assert r.status_code == 200, r.text
    echoed = r.json()["authorization_b64"]
    decoded = base64.b64decode(echoed) if echoed != "[redacted]" else b""
    assert SECRET.encode() not in decoded, "the agent decoded the key from the echo"
