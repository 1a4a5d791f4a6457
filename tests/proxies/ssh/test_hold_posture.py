"""A held SSH command approved after the agent was made read-only must not run: the
person approved the action as it was decided, under the posture then in force, and
read_only is promised to stop the next write on an open SSH connection."""

from __future__ import annotations

import asyncio

import pytest

from tests.proxies.ssh.conftest import Rig
from tests.proxies.ssh.test_approvals import OWNER, _pending, held_rig  # noqa: F401

pytestmark = pytest.mark.integration


async def test_read_only_during_a_hold_stops_the_approved_write(held_rig: Rig) -> None:  # noqa: F811
    held_rig.proxy.holds.pdp = held_rig.proxy.pdp  # as runtime.build wires it
    marker = held_rig.sshd.root / "held-then-read-only"
    marker.mkdir(exist_ok=True)
    held = asyncio.create_task(held_rig.ssh(f"rm -rf {marker} && echo removed"))
    decision_id = await _pending(held_rig)
    await held_rig.proxy.pdp.store.restrict("coder", ["read_only"], reason="operator")
    held_rig.proxy.holds.answer(decision_id, True, OWNER, "test")
    done = await held
    assert marker.exists(), "the write ran although the agent is read_only"
    assert done.returncode == 126
    assert b"read_only" in done.stderr
