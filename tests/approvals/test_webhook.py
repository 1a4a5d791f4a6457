"""Webhook channel: a signed JSON POST with one-time approve/deny links that release or
refuse the held request; replayed, tampered and cross-site uses are refused."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web

from interlock.approvals.webhook import SIGNATURE_HEADER
from interlock.config import ApprovalsConfig, WebhookConfig
from tests.approvals.conftest import OWNER, Rig, RigFactory
from tests.services import free_port

pytestmark = pytest.mark.integration
SECRET = "webhook-secret-0123456789"


@dataclass
class Receiver:
    url: str
    got: list[tuple[dict[str, Any], str, bytes]] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver("")

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        rec.got.append((json.loads(body), request.headers.get(SIGNATURE_HEADER, ""), body))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    yield rec
    await runner.cleanup()


async def hooked(make_rig: RigFactory, url: str) -> Rig:
    hook = WebhookConfig(url=url, secret=SECRET, attempts=2, timeout=2)
    return await make_rig(ApprovalsConfig(webhook=hook))


async def delivered(rig: Rig, rec: Receiver) -> dict[str, Any]:
    request = await rig.pending()
    for _ in range(200):
        if rec.got:
            break
        await asyncio.sleep(0.025)
    doc, signature, body = rec.got[-1]
    assert doc["id"] == request.decision_id
    stamp, _, mac = signature.partition(",")
    t = stamp.removeprefix("t=")
    expected = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert mac == f"v1={expected}", "the POST is signed with the shared secret"
    return doc


def browser(rig: Rig) -> httpx.AsyncClient:
    """Forms on our pages send Origin = the admin server."""
    return httpx.AsyncClient(headers={"Origin": rig.admin}, timeout=10)


async def test_the_approve_link_releases_the_request_once(
    make_rig: RigFactory, receiver: Receiver
) -> None:
    rig = await hooked(make_rig, receiver.url)
    task = rig.held()
    doc = await delivered(rig, receiver)
    assert doc["owner"] == OWNER
    assert "/report" in doc["summary"]
    assert len(doc["action_sha256"]) == 64
    assert doc["approve_url"].startswith(rig.admin + "/ui/approvals/link/")
    async with browser(rig) as c:
        page = await c.get(doc["approve_url"])
        assert page.status_code == 200
        assert "/report" in page.text
        assert doc["action_sha256"] in page.text
        assert rig.rt.holds.pending(), "opening the link answers nothing"
        forged = await c.post(doc["approve_url"], headers={"Origin": "https://evil.example"})
        assert forged.status_code == 403
        ok = await c.post(doc["approve_url"])
        assert ok.status_code == 200, ok.text
        assert (await task).text == "done"
        replay = await c.post(doc["approve_url"])
        assert replay.status_code == 410
        assert "already used" in replay.text
        late = await c.post(doc["deny_url"])
        assert late.status_code == 409, "the request is already answered"
    details, reason = rig.outcome(doc["id"])
    assert (details["approver"], details["channel"]) == (OWNER, "webhook")
    assert reason == f"approved by {OWNER} via webhook"


async def test_the_deny_link_refuses_the_request(make_rig: RigFactory, receiver: Receiver) -> None:
    rig = await hooked(make_rig, receiver.url)
    task = rig.held()
    doc = await delivered(rig, receiver)
    async with browser(rig) as c:
        mac = doc["approve_url"].rsplit(".", 1)[1]
        deny_body = doc["deny_url"].rsplit("/", 1)[1].split(".")[0]
        swapped = f"{rig.admin}/ui/approvals/link/{deny_body}.{mac}"
        assert (await c.post(swapped)).status_code == 403, "a MAC from another link"
        garbage = await c.post(f"{rig.admin}/ui/approvals/link/not-a-token")
        assert garbage.status_code == 403
        assert rig.rt.holds.pending(), "refused links answer nothing"
        assert (await c.post(doc["deny_url"])).status_code == 200
    response = await task
    assert response.status_code == 403
    assert "held for approval" in response.json()["reason"]
    assert rig.outcome(doc["id"])[1] == f"denied by {OWNER} via webhook"


async def test_an_unreachable_webhook_denies_the_hold_with_the_reason(
    make_rig: RigFactory,
) -> None:
    rig = await hooked(make_rig, f"http://127.0.0.1:{free_port()}/hook")
    response = await rig.held()
    assert response.status_code == 403
    reason = response.json()["reason"]
    assert "webhook: webhook not delivered after 2 attempts" in reason
