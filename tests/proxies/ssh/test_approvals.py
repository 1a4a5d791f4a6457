"""A held SSH command: it runs after approval, fails cleanly (126, the reason on stderr)
after a denial or expiry, and other sessions keep working while it waits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from interlock.testing.services import Sshd
from tests.proxies.ssh.conftest import Rig, make_rig

pytestmark = pytest.mark.integration
OWNER = "alice@example.com"
HELD = "rm -rf /tmp/interlock-held-{}"
"""Destructive: scores 39 the first time, held under the bundled tiers too; the copy below
makes 30 and up `medium` so that it stays held."""


@pytest.fixture
async def held_rig(tmp_path: Path, sshd: Sshd, bundle_copy: Path) -> AsyncIterator[Rig]:
    data = json.loads((bundle_copy / "data.json").read_text())
    data["interlock"]["risk"]["tiers"]["medium"] = 30
    (bundle_copy / "data.json").write_text(json.dumps(data))
    rig = await make_rig(tmp_path, sshd, bundle=bundle_copy, approval_timeout=3)
    yield rig
    await rig.proxy.stop()


async def _pending(rig: Rig) -> str:
    for _ in range(200):
        pending = rig.proxy.holds.pending()
        if pending:
            return pending[0].decision_id
        await asyncio.sleep(0.05)
    pytest.fail("the command was not held")


async def test_a_held_command_runs_once_the_owner_approves(held_rig: Rig) -> None:
    marker = held_rig.sshd.root / "approved"
    marker.mkdir(exist_ok=True)
    held = asyncio.create_task(held_rig.ssh(f"rm -rf {marker} && echo removed"))
    decision_id = await _pending(held_rig)
    # Another session is served while the first one waits.
    other = await held_rig.ssh("echo still-serving")
    assert other.returncode == 0
    assert other.stdout == b"still-serving\n"
    request = held_rig.proxy.holds.get(decision_id)
    assert request is not None
    assert f"rm -rf {marker}" in request.summary
    held_rig.proxy.holds.answer(decision_id, True, OWNER, "test")
    done = await held
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"removed\n"
    assert not marker.exists()


async def test_a_denied_command_fails_cleanly_and_the_session_goes_on(held_rig: Rig) -> None:
    marker = held_rig.sshd.root / "denied"
    marker.mkdir(exist_ok=True)
    held = asyncio.create_task(held_rig.ssh(f"rm -rf {marker}"))
    decision_id = await _pending(held_rig)
    held_rig.proxy.holds.answer(decision_id, False, OWNER, "test", "not today")
    done = await held
    assert done.returncode == 126
    assert b"held for approval" in done.stderr
    assert marker.exists()
    assert (await held_rig.ssh("echo next")).stdout == b"next\n"


async def test_an_unanswered_command_expires_as_a_denial(held_rig: Rig) -> None:
    done = await held_rig.ssh(HELD.format("expired"))
    assert done.returncode == 126
    assert b"approval not given within 3 s" in done.stderr
    assert held_rig.proxy.holds.pending() == []
