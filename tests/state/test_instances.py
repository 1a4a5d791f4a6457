"""Two interlock instances sharing one real Redis: an agent isolated through one instance's
admin API is refused by the other's HTTP proxy within a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from interlock.config import AdminConfig, AgentConfig, Config, HttpConfig, StateConfig
from interlock.runtime import Runtime, build, start
from interlock.testing import serve_app
from interlock.testing.services import Redis

pytestmark = pytest.mark.integration
TOKEN = "coder-token-0123456789"
ADMIN = "admin-token-0123456789abcdef"


@pytest.fixture
async def app() -> AsyncIterator[str]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="done")

    application = web.Application()
    application.router.add_get("/{tail:.*}", ok)
    async with serve_app(application) as url:
        yield url


@pytest.fixture
async def pair(redis: Redis, tmp_path: Path) -> AsyncIterator[tuple[Runtime, Runtime]]:
    started = []
    for name in ("one", "two"):
        config = Config(
            data_dir=tmp_path / name,
            state=StateConfig(store=redis.url),
            agents={"coder": AgentConfig(token=TOKEN)},
            http=HttpConfig(listen="127.0.0.1:0", allow_networks=["127.0.0.0/8"]),
            admin=AdminConfig(listen="127.0.0.1:0", token=ADMIN),
        )
        rt = build(config)
        await start(rt)
        started.append(rt)
    yield started[0], started[1]
    for rt in started:
        await rt.stop()


async def test_isolation_through_one_instance_is_enforced_by_the_other(
    pair: tuple[Runtime, Runtime], app: str
) -> None:
    one, two = pair
    proxy = f"http://coder:{TOKEN}@" + two.endpoints["http"].removeprefix("http://")
    async with httpx.AsyncClient(proxy=proxy, timeout=10) as agent:
        assert (await agent.get(app + "/a")).text == "done"
        async with httpx.AsyncClient(
            base_url=one.endpoints["admin"], headers={"Authorization": f"Bearer {ADMIN}"}
        ) as admin:
            started = time.monotonic()
            r = await admin.post("/v1/agents/coder/isolate", json={"reason": "test"})
            assert r.status_code == 200, r.text
        while True:
            try:
                refused = await agent.get(app + "/b")
            except httpx.TransportError:
                break  # the other instance closed the agent's connection
            if refused.status_code == 403:
                break
            assert time.monotonic() - started < 1.0, "not refused within a second"
            await asyncio.sleep(0.05)
        assert time.monotonic() - started < 1.0
    async with httpx.AsyncClient(proxy=proxy, timeout=10) as again:
        denied = await again.get(app + "/c")
        assert denied.status_code == 403
        assert "isolated" in denied.json()["reason"]
