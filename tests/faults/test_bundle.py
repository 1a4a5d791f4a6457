"""The policy bundle server down: the serving policy keeps deciding, /readyz reports the
server down without failing (it is optional), the metric says 0, and polling resumes by
itself when it returns."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from interlock.config import AdminConfig, AgentConfig, Config, ExtAuthzConfig, PolicyConfig
from interlock.runtime import build, start
from interlock.testing import serve_app
from interlock.testing.faultproxy import FaultProxy
from tests.core.test_bundle_server import archive, bundled

pytestmark = pytest.mark.integration
ADMIN = "admin-token-0123456789abcdef"
MESH_HEADER = "x-mesh-agent"


async def dependency(
    api: httpx.AsyncClient, up: bool, within: float
) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    while True:
        body = (await api.get("/readyz")).json()
        if body["dependencies"]["bundle_server"]["up"] == up:
            return time.monotonic() - started, body
        assert time.monotonic() - started < within, body
        await asyncio.sleep(0.05)


async def test_bundle_server_down_keeps_the_serving_policy(tmp_path: Path) -> None:
    body = archive(bundled())

    async def bundle(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"ETag": '"one"'})

    app = web.Application()
    app.router.add_get("/bundle.tar.gz", bundle)
    async with serve_app(app) as url:
        link = FaultProxy("127.0.0.1", int(url.rsplit(":", 1)[1]))
        await link.start()
        config = Config(
            data_dir=tmp_path / "data",
            policy=PolicyConfig(
                bundle_url=f"http://127.0.0.1:{link.port}/bundle.tar.gz",
                bundle_poll_interval=0.2,
            ),
            agents={"coder": AgentConfig(token="coder-token-0123456789")},
            extauthz=ExtAuthzConfig(
                grpc_listen="127.0.0.1:0", http_listen="127.0.0.1:0", identity_header=MESH_HEADER
            ),
            admin=AdminConfig(listen="127.0.0.1:0", token=ADMIN),
        )
        rt = build(config)
        await start(rt)
        headers = {"Authorization": f"Bearer {ADMIN}"}
        try:
            async with (
                httpx.AsyncClient(base_url=rt.endpoints["admin"], headers=headers) as api,
                httpx.AsyncClient(base_url=rt.endpoints["ext_authz HTTP"]) as authz,
            ):
                check = {MESH_HEADER: "coder", "X-Original-URI": "/reports"}
                await dependency(api, up=True, within=3)
                await link.set("down")
                _, ready = await dependency(api, up=False, within=3)
                assert ready["status"] == "degraded"
                assert (
                    "bundle server unreachable" in ready["dependencies"]["bundle_server"]["error"]
                )
                metrics = (await api.get("/metrics")).text
                assert 'interlock_dependency_up{name="bundle_server"} 0' in metrics
                assert (await authz.get("/", headers=check)).status_code == 200
                await link.set("pass")
                took, ready = await dependency(api, up=True, within=3)
                assert ready["status"] == "ok"
                print(f"\nbundle server down: reported up again in {took:.3f} s")
        finally:
            await rt.stop()
            await link.stop()
