"""ext_authz retries across instances sharing a real Redis: Envoy's retry of an approved
request may land on either instance, so the open request, the grant (counted once) and a
denial are found on both; Redis unreachable means refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from interlock.approvals.holds import Holds
from interlock.approvals.shared import ANSWERS, SharedApprovals
from interlock.core.model import Action, Agent, Operation
from interlock.core.pdp import PDP
from interlock.testing import make_pdp
from interlock.testing.services import Redis
from tests.services import redis_server

pytestmark = pytest.mark.integration
OWNER = "alice@example.com"
AGENT = Agent("mesh-client", (), OWNER, authn="header")


def request(path: str = "/admin/users") -> tuple[Action, str]:
    action = Action(AGENT, "http", Operation.WRITE, f"app.mesh{path}", {"method": "DELETE"})
    return action, f"DELETE http://app.mesh{path}"


async def instance(url: str, pdp: PDP) -> tuple[Holds, SharedApprovals]:
    holds = Holds(grant_ttl=60, grant_uses=1)
    holds.pdp = pdp
    shared = SharedApprovals(aioredis.from_url(url, decode_responses=True))
    holds.shared = shared
    await shared.start(holds)
    return holds, shared


@pytest.fixture
async def pair(redis: Redis) -> AsyncIterator[tuple[PDP, Holds, Holds]]:
    pdp = make_pdp()
    one, shared_one = await instance(redis.url, pdp)
    two, shared_two = await instance(redis.url, pdp)
    # Answers are published, not stored: wait until both instances listen.
    for _ in range(200):
        ((_, listening),) = await shared_one.redis.pubsub_numsub(ANSWERS)
        if listening >= 2:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the instances did not subscribe to approval answers")
    yield pdp, one, two
    for holds, shared in ((one, shared_one), (two, shared_two)):
        await holds.close()
        await shared.close()


async def until(predicate: object, limit: float = 10.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + limit
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def shown(holds: Holds, approval_id: str) -> bool:
    return await holds.get_anywhere(approval_id) is not None


async def test_a_retry_on_the_other_instance_sees_the_open_request_then_the_grant_once(
    pair: tuple[PDP, Holds, Holds],
) -> None:
    pdp, one, two = pair
    action, text = request()
    first = await one.retry(await pdp.decide(action), 30, action, text)
    assert first.state == "pending"
    elsewhere = await two.retry(await pdp.decide(action), 30, action, text)
    assert (elsewhere.state, elsewhere.approval_id) == ("pending", first.approval_id)
    assert two.pending() == [], "no second request was opened on the other instance"
    await until(lambda: shown(two, first.approval_id))
    await two.answer_anywhere(first.approval_id, True, OWNER, "api")

    async def granted_on_two() -> bool:
        got = await two.retry(await pdp.decide(action), 30, action, text)
        if got.state == "granted":
            assert got.approval_id == first.approval_id
            assert got.verdict is not None
            assert got.verdict.approver == OWNER
            return True
        assert got.state == "pending"
        return False

    await until(granted_on_two)
    # One use granted, spent on instance two: instance one asks again.
    again = await one.retry(await pdp.decide(action), 30, action, text)
    assert again.state == "pending"
    assert again.approval_id != first.approval_id


async def test_a_denial_given_on_one_instance_sticks_on_the_other(
    pair: tuple[PDP, Holds, Holds],
) -> None:
    pdp, one, two = pair
    action, text = request("/admin/keys")
    opened = await two.retry(await pdp.decide(action), 30, action, text)
    await until(lambda: shown(one, opened.approval_id))
    await one.answer_anywhere(opened.approval_id, False, OWNER, "api", "not today")

    async def denied_on_one() -> bool:
        got = await one.retry(await pdp.decide(action), 30, action, text)
        if got.state == "denied":
            assert got.verdict is not None
            assert got.verdict.approver == OWNER
            assert got.verdict.reason == "not today"
            return True
        return False

    await until(denied_on_one)


async def test_redis_unreachable_refuses_the_retry() -> None:
    pdp = make_pdp()
    with redis_server() as server:
        holds, shared = await instance(server.url, pdp)
        action, text = request()
    # The server is gone: the retry cannot learn of grants or open requests elsewhere.
    refused = await holds.retry(await pdp.decide(action), 30, action, text)
    assert refused.state == "denied"
    assert refused.verdict is not None
    assert "shared approvals unavailable" in refused.verdict.reason
    assert holds.pending() == []
    await holds.close()
    await shared.close()


async def test_an_expiry_is_not_a_denial_for_the_other_instances(
    pair: tuple[PDP, Holds, Holds],
) -> None:
    """Nobody answered: the instance that asked refuses for a while, but the others ask
    again instead of refusing on nobody's word."""
    pdp, one, two = pair
    action, text = request("/admin/jobs")
    opened = await one.retry(await pdp.decide(action), 0.3, action, text)
    await asyncio.sleep(0.8)
    assert (await one.retry(await pdp.decide(action), 30, action, text)).state == "denied"
    elsewhere = await two.retry(await pdp.decide(action), 30, action, text)
    assert elsewhere.state == "pending"
    assert elsewhere.approval_id != opened.approval_id
