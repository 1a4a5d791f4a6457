"""A running interlock (HTTP proxy, admin server, approval channels) in front of a small
upstream app, and an agent whose low self-reported confidence gets its request held."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from interlock.approvals.request import ApprovalRequest
from interlock.config import AdminConfig, AgentConfig, ApprovalsConfig, Config, HttpConfig
from interlock.core.model import Action, Decision
from interlock.runtime import Runtime, build, start

TOKEN = "coder-token-0123456789"
ADMIN = "admin-token-0123456789abcdef"
OWNER = "alice@example.com"


@dataclass
class Rig:
    rt: Runtime
    proxy: str
    admin: str
    app: str

    def held(self, path: str = "/report") -> asyncio.Task[httpx.Response]:
        """A request an unsure agent makes: confidence 0.1 makes it medium risk."""

        async def go() -> httpx.Response:
            async with httpx.AsyncClient(proxy=self.proxy, timeout=60) as client:
                return await client.get(self.app + path, headers={"X-Interlock-Confidence": "0.1"})

        return asyncio.create_task(go())

    async def pending(self) -> ApprovalRequest:
        for _ in range(400):
            pending = self.rt.holds.pending()
            if pending:
                return pending[0]
            await asyncio.sleep(0.025)
        pytest.fail("nothing was held")

    notes: list[tuple[Action, str]] = field(default_factory=list)
    """Observations the PDP audited (approval outcomes), oldest first."""

    def outcome(self, decision_id: str) -> tuple[dict[str, Any], str]:
        """The audited outcome of a held decision: its details and reason."""
        for action, reason in self.notes:
            if action.protocol == "approval" and action.target == decision_id:
                return dict(action.details), reason
        pytest.fail(f"no audited outcome for {decision_id}")


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[RigFactory]:
    """Start a rig with the given `[approvals]` section (and agent owner)."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    started: list[Runtime] = []

    async def factory(
        approvals: ApprovalsConfig | None = None, owner: str | None = OWNER, hold_s: float = 20
    ) -> Rig:
        config = Config(
            data_dir=tmp_path / "data",
            agents={"coder": AgentConfig(token=TOKEN, owner=owner)},
            http=HttpConfig(
                listen="127.0.0.1:0", allow_networks=["127.0.0.0/8"], approval_timeout=hold_s
            ),
            admin=AdminConfig(listen="127.0.0.1:0", token=ADMIN),
            approvals=approvals or ApprovalsConfig(),
        )
        rt = build(config)
        await start(rt)
        started.append(rt)
        rig = Rig(
            rt,
            f"http://coder:{TOKEN}@" + rt.endpoints["http"].removeprefix("http://"),
            rt.endpoints["admin"],
            f"http://127.0.0.1:{runner.addresses[0][1]}",
        )
        observe = rt.pdp.observe

        async def noting(action: Action, reason: str, parent: Decision, **kw: Any) -> Decision:
            rig.notes.append((action, reason))
            return await observe(action, reason, parent, **kw)

        # A spy, not a stand-in: every call still reaches the real PDP and audit log; the
        # tests read the outcomes here instead of decoding the SQLite log. mypy forbids
        # assigning to a method, hence the ignore.
        rt.pdp.observe = noting  # type: ignore[method-assign]
        return rig

    yield factory
    for rt in started:
        await rt.stop()
    await runner.cleanup()
