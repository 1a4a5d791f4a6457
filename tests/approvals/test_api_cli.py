"""A held HTTP request, seen and answered through the admin API and the CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.approvals.conftest import ADMIN, OWNER, Rig, RigFactory

pytestmark = pytest.mark.integration


def api(rig: Rig) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=rig.admin, headers={"Authorization": f"Bearer {ADMIN}"})


async def test_the_owner_approves_through_the_api_and_the_request_proceeds(
    make_rig: RigFactory,
) -> None:
    rig = await make_rig()
    task = rig.held()
    await rig.pending()
    async with api(rig) as c:
        (pending,) = (await c.get("/v1/approvals")).json()["pending"]
        assert pending["agent"] == "coder"
        assert pending["owner"] == OWNER
        assert "/report" in pending["summary"]
        assert len(pending["action_sha256"]) == 64
        assert (await c.get(f"/v1/approvals/{pending['id']}")).json() == pending
        url = f"/v1/approvals/{pending['id']}/approve"
        other = await c.post(url, json={"approver": "mallory@example.com"})
        assert other.status_code == 403
        # Trying to answer for someone else's agent is a refusal in the log.
        (refused,) = [
            r for r in rig.rt.pdp.stats.recent
            if r["protocol"] == "approval" and r["effect"] == "deny"
        ]  # fmt: skip
        assert (refused["agent"], refused["target"]) == ("coder", pending["id"])
        assert refused["parents"] == [pending["id"]]
        assert refused["reasons"][0].startswith("answer refused: only ")
        assert (await c.post(url, json={})).status_code == 400, "no approver named"
        ok = await c.post(url, json={"approver": OWNER, "reason": "expected"})
        assert ok.status_code == 200
        again = await c.post(url, json={"approver": OWNER})
        assert again.status_code == 409, again.text
        unknown = await c.post("/v1/approvals/nope/deny", json={"approver": OWNER})
        assert unknown.status_code == 404
        assert (await c.get("/v1/approvals/nope")).status_code == 404
    response = await task
    assert response.text == "done"
    answered = [r for r in rig.rt.pdp.stats.recent if r["decision_id"] == pending["id"]]
    assert answered[0]["effect"] == "approve"
    details, reason = rig.outcome(pending["id"])
    assert (details["approver"], details["channel"]) == (OWNER, "api")
    assert reason == f"approved by {OWNER} via api"


def cli(rig: Rig, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "interlock.toml"
    config.write_text(
        f'data_dir = "{rig.rt.config.data_dir}"\n[admin]\n'
        f'listen = "{rig.admin.removeprefix("http://")}"\ntoken = "{ADMIN}"\n'
    )
    return subprocess.run(
        [sys.executable, "-m", "interlock.cli", "approvals", *args, "-c", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_a_denial_through_the_cli_fails_the_request_cleanly(
    make_rig: RigFactory, tmp_path: Path
) -> None:
    rig = await make_rig()
    task = rig.held()
    pending = await rig.pending()
    listed = await asyncio.to_thread(cli, rig, tmp_path, "list")
    assert pending.decision_id in listed.stdout
    out = await asyncio.to_thread(
        cli, rig, tmp_path, "deny", pending.decision_id, "--as", OWNER, "--reason", "not now"
    )
    assert out.returncode == 0, out.stderr
    response = await task
    assert response.status_code == 403
    assert "held for approval" in response.json()["reason"]
    assert rig.outcome(pending.decision_id)[1] == f"denied by {OWNER} via cli"
    unknown = await asyncio.to_thread(cli, rig, tmp_path, "approve", "nope", "--as", OWNER)
    assert unknown.returncode != 0
    assert "404" in unknown.stderr
