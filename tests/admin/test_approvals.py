"""A held HTTP request, seen and answered through the admin API and the CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from interlock.config import AdminConfig, AgentConfig, Config, HttpConfig
from interlock.runtime import Runtime, build, start

pytestmark = pytest.mark.integration
TOKEN = "coder-token-0123456789"
ADMIN = "admin-token-0123456789abcdef"
OWNER = "alice@example.com"


@dataclass
class Rig:
    rt: Runtime
    config_file: Path
    proxy: str
    admin: str
    app: str


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    config = Config(
        data_dir=tmp_path / "data",
        agents={"coder": AgentConfig(token=TOKEN, owner=OWNER)},
        http=HttpConfig(listen="127.0.0.1:0", allow_networks=["127.0.0.0/8"], approval_timeout=20),
        admin=AdminConfig(listen="127.0.0.1:0", token=ADMIN),
    )
    rt = build(config)
    await start(rt)
    admin = rt.endpoints["admin"]
    config_file = tmp_path / "interlock.toml"
    config_file.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[admin]\n'
        f'listen = "{admin.removeprefix("http://")}"\ntoken = "{ADMIN}"\n'
    )
    yield Rig(
        rt,
        config_file,
        f"http://coder:{TOKEN}@" + rt.endpoints["http"].removeprefix("http://"),
        admin,
        f"http://127.0.0.1:{runner.addresses[0][1]}",
    )
    await rt.stop()
    await runner.cleanup()


async def held_request(rig: Rig) -> asyncio.Task[httpx.Response]:
    """A request an unsure agent makes: low reported confidence makes it medium risk."""

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(proxy=rig.proxy, timeout=30) as client:
            return await client.get(rig.app + "/report", headers={"X-Interlock-Confidence": "0.1"})

    task = asyncio.create_task(go())
    for _ in range(100):
        if rig.rt.holds.pending():
            return task
        await asyncio.sleep(0.05)
    pytest.fail("the request was not held")


def api(rig: Rig) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=rig.admin, headers={"Authorization": f"Bearer {ADMIN}"})


async def test_the_owner_approves_through_the_api_and_the_request_proceeds(rig: Rig) -> None:
    task = await held_request(rig)
    async with api(rig) as c:
        (pending,) = (await c.get("/v1/approvals")).json()["pending"]
        assert pending["agent"] == "coder"
        assert pending["owner"] == OWNER
        assert "GET /report" in pending["summary"]
        assert len(pending["action_sha256"]) == 64
        url = f"/v1/approvals/{pending['id']}/approve"
        other = await c.post(url, json={"approver": "mallory@example.com"})
        assert other.status_code == 403
        ok = await c.post(url, json={"approver": OWNER, "reason": "expected"})
        assert ok.status_code == 200
        again = await c.post(url, json={"approver": OWNER})
        assert again.status_code in (404, 409)
        assert (
            await c.post("/v1/approvals/nope/deny", json={"approver": OWNER})
        ).status_code == 404
    response = await task
    assert response.text == "done"
    answered = [r for r in rig.rt.pdp.stats.recent if r["decision_id"] == pending["id"]]
    assert answered[0]["effect"] == "approve"


async def test_a_denial_through_the_cli_fails_the_request_cleanly(rig: Rig) -> None:
    task = await held_request(rig)
    (pending,) = rig.rt.holds.pending()
    listed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "interlock.cli", "approvals", "list", "-c", str(rig.config_file)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert pending.decision_id in listed.stdout
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "interlock.cli", "approvals", "deny", pending.decision_id,
         "--as", OWNER, "--reason", "not now", "-c", str(rig.config_file)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    response = await task
    assert response.status_code == 403
    assert "held for approval" in response.json()["reason"]
