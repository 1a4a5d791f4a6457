"""Holds: answers bound to the request, ext_authz retries, channels, audit and history."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from interlock.approvals.holds import MAX_PENDING_PER_AGENT, ChannelError, Holds
from interlock.approvals.request import (
    ApprovalError,
    ApprovalRequest,
    action_hash,
    summary,
    visible,
)
from interlock.audit.record import document
from interlock.core.model import Action, Agent, Decision, Effect, Operation
from interlock.core.pdp import PDP
from interlock.testing import CaptureSink, FakeClock, make_pdp

OWNER = "alice@example.com"
AGENT = Agent("reporter", ("analyst",), OWNER, authn="token")


def ddl(table: str = "public.t", sql: str = "create table t (a int)") -> Action:
    return Action(AGENT, "postgres", Operation.DDL, table, {"sql": sql})


@pytest.fixture
def pdp(clock: FakeClock, sink: CaptureSink) -> PDP:
    return make_pdp(clock=clock, sink=sink)


def holds_for(pdp: PDP, **kw: Any) -> Holds:
    holds = Holds(**kw)
    holds.pdp = pdp
    return holds


async def answer_when_pending(holds: Holds, approved: bool, who: str = OWNER) -> ApprovalRequest:
    for _ in range(200):
        if holds.pending():
            request = holds.pending()[0]
            holds.answer(request.decision_id, approved, who, "test")
            return request
        await asyncio.sleep(0.005)
    pytest.fail("nothing was held")


async def held(pdp: PDP, holds: Holds, action: Action, approved: bool) -> Decision:
    decision = await pdp.decide(action)
    answering = asyncio.create_task(answer_when_pending(holds, approved))
    verdict = await holds.wait(decision, 5, action)
    await answering
    assert verdict.approved is approved
    return decision


async def test_approvals_of_a_kind_lower_its_risk_and_denials_raise_it(pdp: PDP) -> None:
    holds = holds_for(pdp)
    first = await held(pdp, holds, ddl(), True)
    assert first.effect is Effect.APPROVE
    await pdp.decide(ddl("public.other"))  # seen once, never answered
    unanswered = (await pdp.decide(ddl("public.other"))).risk.score
    approved = await pdp.decide(ddl())
    assert approved.risk.score < unanswered, "one approval of this kind lowers its risk"
    assert approved.effect is Effect.ALLOW
    for _ in range(2):
        await held(pdp, holds, ddl("public.other"), False)
    denied = await pdp.decide(ddl("public.other"))
    assert denied.risk.score > unanswered, "denials of that kind raise it"


async def test_every_outcome_is_audited_under_the_held_decision(
    pdp: PDP, sink: CaptureSink
) -> None:
    holds = holds_for(pdp)
    decision = await held(pdp, holds, ddl(), True)
    note = sink.last
    assert note.action.protocol == "approval"
    assert note.action.parents == (decision.decision_id,)
    details = note.action.details
    assert details["approver"] == OWNER
    assert details["channel"] == "test"
    assert details["action_sha256"] == action_hash(ddl())
    assert document(note)["approver"] == {"id": OWNER, "channel": "test", "approved": True}
    expired = await pdp.decide(ddl())
    verdict = await holds.wait(expired, 0.05, ddl())
    assert not verdict.approved
    assert verdict.approver is None
    assert "not approved: approval not given within 0.05 s" in sink.last.decision.reasons[0]
    assert document(sink.last)["approver"] is None, "nobody answered"


async def test_an_answer_after_the_hold_ended_is_409_until_it_would_have_expired(
    pdp: PDP, clock: FakeClock
) -> None:
    """docs/approvals.md: a second answer is 409, an unknown or expired id 404; the hold
    leaving the table when its waiter wakes must not turn the first into the second."""
    holds = holds_for(pdp, clock=clock)
    decision = await pdp.decide(ddl())
    waiting = asyncio.create_task(holds.wait(decision, 30, ddl()))
    await asyncio.sleep(0.01)
    holds.answer(decision.decision_id, False, OWNER, "test")
    assert (await waiting).approver == OWNER
    assert holds.get(decision.decision_id) is None, "the hold is over"
    with pytest.raises(ApprovalError) as again:
        holds.answer(decision.decision_id, True, OWNER, "test")
    assert again.value.status == 409
    clock.advance(31)
    with pytest.raises(ApprovalError) as expired:
        holds.answer(decision.decision_id, True, OWNER, "test")
    assert expired.value.status == 404


async def test_only_the_owner_or_a_named_approver_may_answer(pdp: PDP) -> None:
    holds = holds_for(pdp, approvers=["oncall@example.com"])
    decision = await pdp.decide(ddl())
    waiting = asyncio.create_task(holds.wait(decision, 5, ddl()))
    await asyncio.sleep(0.01)
    with pytest.raises(ApprovalError) as refused:
        holds.answer(decision.decision_id, True, "mallory@example.com", "test")
    assert refused.value.status == 403
    holds.answer(decision.decision_id, True, "oncall@example.com", "test")
    with pytest.raises(ApprovalError) as again:
        holds.answer(decision.decision_id, True, OWNER, "test")
    assert again.value.status == 409, "already answered, not unknown"
    assert (await waiting).approver == "oncall@example.com"
    with pytest.raises(ApprovalError) as unknown:
        holds.answer("no-such-id", True, OWNER, "test")
    assert unknown.value.status == 404
    anyone = holds_for(pdp, owner_only=False)
    decision = await pdp.decide(ddl())
    waiting = asyncio.create_task(anyone.wait(decision, 5, ddl()))
    await asyncio.sleep(0.01)
    anyone.answer(decision.decision_id, True, "mallory@example.com", "test")
    assert (await waiting).approved


async def test_a_retry_passes_only_after_approval_and_only_as_often_as_granted(
    pdp: PDP, clock: FakeClock
) -> None:
    holds = holds_for(pdp, grant_ttl=60, grant_uses=2, clock=clock)
    action = ddl()
    first = await holds.retry(await pdp.decide(action), 30, action)
    assert first.state == "pending"
    again = await holds.retry(await pdp.decide(action), 30, action)
    assert (again.state, again.approval_id) == ("pending", first.approval_id)
    assert len(holds.pending()) == 1, "a retry while pending opens no second request"
    holds.answer(first.approval_id, True, OWNER, "test")
    await asyncio.sleep(0.01)
    changed = replace(action, details={"sql": "create table t (a int, b int)"})
    assert (await holds.retry(await pdp.decide(changed), 30, changed)).state == "pending"
    for _ in range(2):
        granted = await holds.retry(await pdp.decide(action), 30, action)
        assert (granted.state, granted.approval_id) == ("granted", first.approval_id)
        assert granted.verdict is not None
        assert granted.verdict.approver == OWNER
    assert (await holds.retry(await pdp.decide(action), 30, action)).state == "pending", (
        "uses spent"
    )


async def test_a_grant_expires_and_a_denial_sticks_for_its_lifetime(
    pdp: PDP, clock: FakeClock
) -> None:
    holds = holds_for(pdp, grant_ttl=60, clock=clock)
    action = ddl()
    opened = await holds.retry(await pdp.decide(action), 30, action)
    holds.answer(opened.approval_id, True, OWNER, "test")
    await asyncio.sleep(0.01)
    clock.advance(61)
    assert (await holds.retry(await pdp.decide(action), 30, action)).state == "pending"
    (request,) = holds.pending()
    holds.answer(request.decision_id, False, OWNER, "test", "no")
    await asyncio.sleep(0.01)
    denied = await holds.retry(await pdp.decide(action), 30, action)
    assert denied.state == "denied"
    assert denied.verdict is not None
    assert denied.verdict.approver == OWNER
    await holds.close()


class Broken:
    name = "pager"

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def ask(self, request: ApprovalRequest, holds: Holds) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ChannelError("provider unreachable: refused"), "pager: provider unreachable: refused"),
        (KeyError("bug"), "pager: KeyError"),
    ],
)
async def test_a_channel_that_cannot_reach_anyone_denies_the_hold(
    pdp: PDP, error: Exception, reason: str
) -> None:
    holds = holds_for(pdp)
    holds.channels.append(Broken(error))
    verdict = await holds.wait(await pdp.decide(ddl()), 5, ddl())
    assert (verdict.approved, verdict.approver, verdict.reason) == (False, None, reason)
    assert holds.pending() == []


def test_the_hash_binds_the_exact_action() -> None:
    base = ddl()
    assert action_hash(base) == action_hash(ddl())
    assert action_hash(base) != action_hash(ddl(sql="create table t (a bigint)"))
    assert action_hash(base) != action_hash(replace(base, agent=Agent("other", owner=OWNER)))
    assert len(action_hash(base)) == 64


async def test_stopping_denies_what_still_waits(pdp: PDP) -> None:
    holds = holds_for(pdp)
    waiting = asyncio.create_task(holds.wait(await pdp.decide(ddl()), 30, ddl()))
    await asyncio.sleep(0.01)
    await holds.close()
    verdict = await waiting
    assert (verdict.approved, verdict.reason) == (False, "interlock is stopping")


async def test_an_approval_that_cannot_be_audited_does_not_count(
    pdp: PDP, sink: CaptureSink
) -> None:
    holds = holds_for(pdp)
    decision = await pdp.decide(ddl())
    waiting = asyncio.create_task(holds.wait(decision, 5, ddl()))
    await asyncio.sleep(0.01)
    sink.unavailable = True
    holds.answer(decision.decision_id, True, OWNER, "test")
    verdict = await waiting
    assert not verdict.approved
    assert verdict.reason == "the approval could not be audited"


async def test_an_agent_cannot_flood_its_owner_with_requests(pdp: PDP) -> None:
    holds = holds_for(pdp)
    waiting = []
    for i in range(MAX_PENDING_PER_AGENT):
        decision = await pdp.decide(ddl(f"public.t{i}"))
        waiting.append(asyncio.create_task(holds.wait(decision, 5, ddl())))
    await asyncio.sleep(0.01)
    extra = await holds.wait(await pdp.decide(ddl()), 5, ddl())
    assert (extra.approved, extra.reason) == (False, "too many approvals pending")
    assert len(holds.pending()) == MAX_PENDING_PER_AGENT
    await holds.close()
    verdicts = await asyncio.gather(*waiting)
    assert not any(v.approved for v in verdicts)


def test_what_a_person_reads_hides_nothing() -> None:
    shown = visible("rm -rf /tmp/x \u202e\u0007\x00 ok", 100)
    assert "\u202e" not in shown
    assert "\\u202e" in shown
    assert "\\u0007" in shown
    assert "\\u0000" in shown
    assert visible("a" * 10, 4) == "aaaa …[+6 chars]"
    assert visible("line one\nline two", 100) == "line one\nline two"
    long = "select 1; " + " " * 300 + "drop table payroll"
    assert summary(ddl(), long).endswith("drop table payroll"), "whitespace padding folds"


def test_the_exact_text_is_part_of_the_hash() -> None:
    assert action_hash(ddl(), "create table t (a int)") != action_hash(
        ddl(), "create table t (a int); drop table payroll"
    )


async def test_a_client_that_goes_away_withdraws_its_request(pdp: PDP, sink: CaptureSink) -> None:
    holds = holds_for(pdp)
    decision = await pdp.decide(ddl())
    waiting = asyncio.create_task(holds.wait(decision, 30, ddl()))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0.01)
    assert holds.pending() == []
    assert sink.last.decision.reasons == ("not approved: the client went away",)
