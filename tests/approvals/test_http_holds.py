"""A held HTTP request: other requests are served while it waits, and no answer before
the deadline is a clean 403 with the reason."""

from __future__ import annotations

import httpx
import pytest

from tests.approvals.conftest import RigFactory

pytestmark = pytest.mark.integration


async def test_others_are_served_while_one_waits_and_expiry_is_a_denial(
    make_rig: RigFactory,
) -> None:
    rig = await make_rig(hold_s=2)
    task = rig.held()
    held = await rig.pending()
    async with httpx.AsyncClient(proxy=rig.proxy, timeout=10) as client:
        for _ in range(3):
            assert (await client.get(rig.app + "/status")).text == "done"
    assert [r.decision_id for r in rig.rt.holds.pending()] == [held.decision_id]
    response = await task
    assert response.status_code == 403
    assert "held for approval: approval not given within 2 s" in response.json()["reason"]
    assert rig.rt.holds.pending() == []
    assert rig.outcome(held.decision_id)[1] == "not approved: approval not given within 2 s"
