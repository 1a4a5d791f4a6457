"""Holding an action until a human decides, bounded by a deadline.

A PEP that gets `approve` calls `await holds.wait(decision, timeout, action)`; whoever
answers for the agent calls `holds.answer(decision_id, approved, approver, channel)`. No
answer by the deadline is a denial. The hold is bound to the decision id, and the
request carries a hash of exactly the action it was about, so a person approves that
action and no other.

ext_authz cannot keep an Envoy request waiting, so it uses `retry`: the first attempt
opens a request and is refused with its id; once approved, the same action (same hash,
same agent) passes on retry, within `grant_ttl` and `grant_uses`.

Channels (webhook, OpenID CIBA) are told about each request as it opens. A channel that
cannot reach its person denies the hold with the reason: a broken approval path shows at
once instead of as a silent wait for the deadline.

Every outcome is audited as an observation under the held decision (approver, channel,
action hash), and human answers feed the agent's approval history for that kind of
action (`target_key`), which the `approval_history` signal reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from redis.exceptions import RedisError

from interlock.approvals.request import (
    MAX_TEXT,
    ApprovalError,
    ApprovalRequest,
    Verdict,
    action_hash,
    summary,
    visible,
)
from interlock.core.enforcement import posture_veto
from interlock.core.model import Action, Agent, Decision, Effect, Operation, Risk, Tier
from interlock.errors import StateError

if TYPE_CHECKING:
    from interlock.approvals.shared import SharedApprovals
    from interlock.core.pdp import PDP

T = TypeVar("T")

log = logging.getLogger(__name__)


MAX_PENDING_PER_AGENT = 20
"""Open requests per agent; more are refused at once (a flood buries the one that matters)."""


class ChannelError(Exception):
    """A channel could not reach its person; the hold is denied with this message."""


class Channel(Protocol):
    name: str

    async def ask(self, request: ApprovalRequest, holds: Holds) -> None:
        """Put the request in front of a person. Return once delivered (the answer may
        arrive later through `holds.answer`); raise ChannelError when no one can be
        reached."""
        ...


@dataclass
class _Hold:
    request: ApprovalRequest
    future: asyncio.Future[Verdict]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    published: asyncio.Task[None] | None = None
    """Its request being published to shared approvals (answerable elsewhere once done)."""


@dataclass
class _Grant:
    decision_id: str
    approver: str | None
    expires: float
    uses: int


@dataclass(frozen=True, slots=True)
class Retry:
    """What an ext_authz retry is told: `granted` (pass; `verdict` says who approved),
    `pending` (still waiting; `approval_id` to show) or `denied` (`verdict`)."""

    state: str
    approval_id: str
    verdict: Verdict | None = None


class Holds:
    def __init__(
        self,
        owner_only: bool = True,
        approvers: Iterable[str] = (),
        *,
        grant_ttl: float = 300.0,
        grant_uses: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.owner_only = owner_only
        """Only the agent's owner (or an `approvers` member) may answer, when it has one."""
        self.approvers = frozenset(approvers)
        self.grant_ttl = grant_ttl
        self.grant_uses = grant_uses
        self.channels: list[Channel] = []
        self.pdp: PDP | None = None
        """Where outcomes are audited and approval history is kept (set by the runtime)."""
        self.shared: SharedApprovals | None = None
        """Several instances: requests shown and answered on any of them (Redis)."""
        self._clock = clock
        self._waiting: dict[str, _Hold] = {}
        self._by_hash: dict[str, str] = {}
        """ext_authz: action hash -> open request id."""
        self._grants: dict[str, _Grant] = {}
        self._refusals: dict[str, tuple[Verdict, float]] = {}
        self._answered: dict[str, float] = {}
        """Answered request id -> its expiry: until then a second answer is told 409
        (already answered), not 404 (unknown or expired)."""
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False

    # --- holding -------------------------------------------------------------------------

    async def wait(
        self,
        decision: Decision,
        limit: float,
        action: Action,
        text: str = "",
        on_open: Callable[[], None] | None = None,
    ) -> Verdict:
        """Hold until answered or `limit` seconds pass (a denial). `text` is the exact
        statement, command or request the PEP will carry out if approved. `on_open` is
        called once the request can be answered on any instance (for a PEP that tells
        its client the id: an approver acting on that at once must find it)."""
        hold = self._open(decision, limit, action, text)
        try:
            if on_open is not None:
                if hold.published is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(hold.published)  # a failure is logged there
                on_open()
            verdict = await self._settle(hold, limit)
        except asyncio.CancelledError:
            # The client went away while it waited: the request ends, and says so.
            gone = Verdict(False, None, "the client went away", "withdrawn")
            self._spawn(self._note(hold.request, gone))
            raise
        finally:
            self._close(hold)
        if not await self._record(hold.request, verdict) and verdict.approved:
            # An approval nobody can later prove is not one.
            return Verdict(False, verdict.approver, "the approval could not be audited")
        if verdict.approved:
            veto = await self._posture_veto(action)
            if veto is not None:
                return Verdict(False, verdict.approver, veto, verdict.channel)
        return verdict

    async def _posture_veto(self, action: Action) -> str | None:
        """Why the posture in force now forbids `action`, or None. A person approved the
        action under the posture it was decided in; a restriction or isolation that came
        while it waited (an operator, another proxy's decision) must still stop it, as it
        stops every later action. The store unreachable is a refusal (fail closed)."""
        pdp = self.pdp
        if pdp is None:
            return None
        try:
            posture = await pdp.store.posture(action.agent.id, pdp.clock())
        except StateError as exc:
            return f"posture unknown after approval: {exc}"
        veto = posture_veto(action, posture)
        return None if veto is None else f"{veto} (set while the action was held)"

    async def wait_in(
        self,
        group: set[asyncio.Task[Verdict]],
        decision: Decision,
        limit: float,
        action: Action,
        text: str = "",
        on_open: Callable[[], None] | None = None,
    ) -> Verdict:
        """`wait`, as a task in `group`, which the PEP cancels when the client goes away
        (a disconnect the waiting coroutine itself would not notice): the request is then
        withdrawn, and the verdict is a denial saying so."""
        waiting = asyncio.ensure_future(self.wait(decision, limit, action, text, on_open))
        group.add(waiting)
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            if not waiting.cancelled():
                waiting.cancel()  # the PEP itself is being cancelled
                raise
            return Verdict(False, None, "the client went away", "withdrawn")
        finally:
            group.discard(waiting)

    async def retry(
        self, decision: Decision, limit: float, action: Action, text: str = ""
    ) -> Retry:
        """ext_authz: pass an approved action again, report a pending one, or open one.
        With shared approvals the grant, a denial and the open request are found on any
        instance; Redis unreachable then means refused (fail closed)."""
        digest = action_hash(action, text)
        now = self._clock()
        grant = self._grants.get(digest)
        if grant is not None and grant.expires > now and grant.uses > 0:
            grant.uses -= 1
            if grant.uses == 0:
                del self._grants[digest]
            verdict = Verdict(True, grant.approver, "approved earlier", "retry")
            return Retry("granted", grant.decision_id, verdict)
        if self.shared is not None:
            # Redis first: another instance may have granted or refused it meanwhile.
            try:
                found = await self._retry_shared(digest, decision.decision_id, limit)
            except (OSError, RedisError) as exc:
                why = f"shared approvals unavailable: {type(exc).__name__}"
                return Retry("denied", "", Verdict(False, None, why, "retry"))
            if found is not None:
                return found
        open_id = self._by_hash.get(digest)
        if open_id is not None and open_id in self._waiting:
            return Retry("pending", open_id)
        refused = self._refusals.get(digest)
        if refused is not None and refused[1] > now:
            return Retry("denied", "", refused[0])
        hold = self._open(decision, limit, action, text)
        self._by_hash[digest] = decision.decision_id
        self._spawn(self._await_retry(hold, limit, digest))
        if hold.published is not None:
            # The client is told the id next: answerable on any instance by then.
            await asyncio.shield(hold.published)
        return Retry("pending", decision.decision_id)

    async def _retry_shared(self, digest: str, decision_id: str, limit: float) -> Retry | None:
        assert self.shared is not None
        got = await self.shared.take_grant(digest)
        if got is not None:
            return Retry("granted", got[0], Verdict(True, got[1], "approved earlier", "retry"))
        refused = await self.shared.refusal(digest)
        if refused is not None:
            approver, reason = refused.get("approver"), str(refused.get("reason", ""))
            verdict = Verdict(False, approver, reason, str(refused.get("channel", "")))
            return Retry("denied", "", verdict)
        if digest in self._by_hash and self._by_hash[digest] in self._waiting:
            return None  # open here: the local check answers
        elsewhere = await self.shared.open_retry(digest, decision_id, limit)
        if elsewhere is not None:
            return Retry("pending", elsewhere)
        return None

    async def _await_retry(self, hold: _Hold, limit: float, digest: str) -> None:
        try:
            verdict = await self._settle(hold, limit)
        finally:
            self._close(hold)
            self._by_hash.pop(digest, None)
        if not await self._record(hold.request, verdict) and verdict.approved:
            # An approval nobody can later prove is not one: no grant.
            verdict = Verdict(False, verdict.approver, "the approval could not be audited")
        until = self._clock() + self.grant_ttl
        self._prune()
        if verdict.approved and self.shared is None:
            self._grants[digest] = _Grant(
                hold.request.decision_id, verdict.approver, until, self.grant_uses
            )
        elif not verdict.approved:
            self._refusals[digest] = (verdict, until)
        if self.shared is not None:
            await self._share_outcome(hold.request.decision_id, digest, verdict)

    async def _share_outcome(self, decision_id: str, digest: str, verdict: Verdict) -> None:
        """The grant (only there, so its uses are counted once) or the denial, for every
        instance. Unreachable Redis loses a grant: the next retry asks again."""
        assert self.shared is not None
        try:
            if verdict.approved:
                await self.shared.put_grant(
                    digest, decision_id, verdict.approver, self.grant_uses, self.grant_ttl
                )
            elif verdict.approver:
                # A person's denial holds everywhere; expiry, a full queue or a stopping
                # instance only refuse here (the next retry elsewhere asks again).
                doc = {"approver": verdict.approver, "reason": verdict.reason,
                       "channel": verdict.channel}  # fmt: skip
                await self.shared.put_refusal(digest, doc, self.grant_ttl)
        except (OSError, RedisError) as exc:
            log.warning("retry outcome of %s not shared: %s", decision_id, exc)
        finally:
            with contextlib.suppress(OSError, RedisError):
                await self.shared.close_retry(digest)

    def _open(self, decision: Decision, limit: float, action: Action, text: str) -> _Hold:
        now = self._clock()
        request = ApprovalRequest(
            decision.decision_id,
            action.agent.id,
            action.agent.owner,
            summary(action, text),
            action_hash(action, text),
            {"score": decision.risk.score, "tier": decision.risk.tier.value},
            now,
            now + limit,
            kind=_kind(action),
            protocol=action.protocol,
            text=visible(text, MAX_TEXT),
        )
        hold = _Hold(request, asyncio.get_running_loop().create_future())
        open_for_agent = sum(
            1 for h in self._waiting.values() if h.request.agent == action.agent.id
        )
        if self._closed or open_for_agent >= MAX_PENDING_PER_AGENT:
            why = "interlock is stopping" if self._closed else "too many approvals pending"
            hold.future.set_result(Verdict(False, None, why, "limit"))
            return hold
        self._waiting[decision.decision_id] = hold
        if self.shared is not None:
            hold.published = self._spawn(self.shared.opened(request))
        for channel in self.channels:
            hold.tasks.append(asyncio.create_task(self._ask(channel, hold)))
        return hold

    async def _ask(self, channel: Channel, hold: _Hold) -> None:
        try:
            await channel.ask(hold.request, self)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = str(exc) if isinstance(exc, ChannelError) else f"{type(exc).__name__}"
            if not isinstance(exc, ChannelError):
                log.exception("approval channel %s failed", channel.name)
            if not hold.future.done():
                verdict = Verdict(False, None, f"{channel.name}: {reason}", channel.name)
                hold.future.set_result(verdict)

    async def _settle(self, hold: _Hold, limit: float) -> Verdict:
        remaining = max(0.0, hold.request.expires - self._clock())
        try:
            return await asyncio.wait_for(asyncio.shield(hold.future), remaining)
        except TimeoutError:
            verdict = Verdict(False, None, f"approval not given within {limit:g} s", "expiry")
            if not hold.future.done():
                hold.future.set_result(verdict)
            return hold.future.result()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _close(self, hold: _Hold) -> None:
        if self._waiting.pop(hold.request.decision_id, None) is not None and self.shared:
            self._spawn(self.shared.closed(hold.request.decision_id))
        if not hold.future.done():
            hold.future.cancel()
        for task in hold.tasks:
            task.cancel()

    def _prune(self) -> None:
        now = self._clock()
        for table in (self._grants, self._refusals):
            for key in [k for k, v in table.items() if _expiry(v) <= now]:
                del table[key]

    # --- answering -----------------------------------------------------------------------

    def pending(self) -> list[ApprovalRequest]:
        return [h.request for h in self._waiting.values() if not h.future.done()]

    def get(self, decision_id: str) -> ApprovalRequest | None:
        hold = self._waiting.get(decision_id)
        return hold.request if hold is not None else None

    def may_answer(self, request: ApprovalRequest, approver: str) -> bool:
        if not self.owner_only or not request.owner:
            return True
        return approver == request.owner or approver in self.approvers

    def answer(
        self,
        decision_id: str,
        approved: bool,
        approver: str,
        channel: str,
        reason: str = "",
        *,
        check_owner: bool = True,
    ) -> ApprovalRequest:
        """Answer a held action, or raise ApprovalError: unknown or expired (404), already
        answered (409), not someone who may answer for the agent (403). `check_owner` is
        off only for channels where the provider authenticated the owner itself (CIBA)."""
        hold = self._waiting.get(decision_id)
        if hold is None:
            raise self._gone(decision_id)
        request = hold.request
        if hold.future.done():
            raise ApprovalError(409, f"approval {decision_id} was already answered")
        if check_owner and not self.may_answer(request, approver):
            raise ApprovalError(403, f"only {request.owner} may answer for {request.agent}")
        hold.future.set_result(Verdict(approved, approver, reason, channel))
        now = self._clock()
        for key in [k for k, until in self._answered.items() if until <= now]:
            del self._answered[key]
        self._answered[decision_id] = request.expires
        return request

    def _gone(self, decision_id: str) -> ApprovalError:
        """Not held: answered already (409, until the request would have expired), or
        unknown or expired (404)."""
        if self._answered.get(decision_id, 0.0) > self._clock():
            return ApprovalError(409, f"approval {decision_id} was already answered")
        return ApprovalError(404, f"no pending approval {decision_id!r} (unknown or expired)")

    def expire(self, decision_id: str, reason: str, channel: str) -> None:
        """End a request without a human answer (e.g. the provider's request expired)."""
        hold = self._waiting.get(decision_id)
        if hold is not None and not hold.future.done():
            hold.future.set_result(Verdict(False, None, reason, channel))

    # --- any instance (the admin API, the page and links use these) ----------------------

    async def pending_anywhere(self) -> list[ApprovalRequest]:
        found = {r.decision_id: r for r in self.pending()}
        if self.shared is not None:
            for r in await self._shared(self.shared.pending()):
                found.setdefault(r.decision_id, r)
        return sorted(found.values(), key=lambda r: r.created)

    async def get_anywhere(self, decision_id: str) -> ApprovalRequest | None:
        local = self.get(decision_id)
        if local is not None or self.shared is None:
            return local
        return await self._shared(self.shared.get(decision_id))

    async def answer_anywhere(
        self, decision_id: str, approved: bool, approver: str, channel: str, reason: str = ""
    ) -> ApprovalRequest:
        """`answer`, for a request held by this instance or (with shared approvals) any
        other: checked here, claimed once across instances, delivered to its holder. An
        answer refused because its approver may not answer for the agent (403) is a
        refusal in the audit log: someone tried to approve what was not theirs."""
        try:
            return await self._answer_anywhere(decision_id, approved, approver, channel, reason)
        except ApprovalError as exc:
            if exc.status == 403:
                await self._refused_answer(decision_id, approved, approver, channel, str(exc))
            raise

    async def _refused_answer(
        self, decision_id: str, approved: bool, approver: str, channel: str, why: str
    ) -> None:
        if self.pdp is None:
            return
        try:
            request = await self.get_anywhere(decision_id)
        except ApprovalError:
            request = None  # shared approvals unreachable: recorded without the agent
        agent = request.agent if request is not None else None
        details = {"approved": approved, "approver": approver[:256], "channel": channel}
        action = Action(
            Agent(agent or "unknown", owner=request.owner if request else None, authn="none"),
            "approval",
            Operation.DELEGATE,
            decision_id,
            details,
            parents=(decision_id,),
        )
        await self.pdp.refuse(action, f"answer refused: {why}")

    async def _answer_anywhere(
        self, decision_id: str, approved: bool, approver: str, channel: str, reason: str
    ) -> ApprovalRequest:
        if self.shared is None:
            return self.answer(decision_id, approved, approver, channel, reason)
        request = await self.get_anywhere(decision_id)
        if request is None:
            if await self._shared(self.shared.answered(decision_id)):
                raise ApprovalError(409, f"approval {decision_id} was already answered")
            raise self._gone(decision_id)
        if not self.may_answer(request, approver):
            raise ApprovalError(403, f"only {request.owner} may answer for {request.agent}")
        if not await self._shared(self.shared.claim(request)):
            raise ApprovalError(409, f"approval {decision_id} was already answered")
        if decision_id in self._waiting:
            return self.answer(decision_id, approved, approver, channel, reason)
        await self._shared(self.shared.send(decision_id, approved, approver, channel, reason))
        return request

    @staticmethod
    async def _shared(op: Awaitable[T]) -> T:
        try:
            return await op
        except (OSError, RedisError) as exc:
            raise ApprovalError(
                503, f"shared approvals unavailable: {type(exc).__name__}"
            ) from None

    def resolve(self, decision_id: str, approved: bool, approver: str, reason: str = "") -> bool:
        """Answer a held action; False when it cannot be answered (see `answer`)."""
        try:
            self.answer(decision_id, approved, approver, "api", reason)
        except ApprovalError:
            return False
        return True

    async def _note(self, request: ApprovalRequest, verdict: Verdict) -> None:
        await self._record(request, verdict)

    async def _record(self, request: ApprovalRequest, verdict: Verdict) -> bool:
        """Audit the outcome under the held decision; human answers become history.
        False when the record could not be written."""
        pdp = self.pdp
        if pdp is None:
            return True
        if verdict.approved:
            outcome = f"approved by {verdict.approver} via {verdict.channel}"
        elif verdict.approver is not None:
            outcome = f"denied by {verdict.approver} via {verdict.channel}"
        else:
            outcome = f"not approved: {verdict.reason}"
        risk = Risk(int(request.risk.get("score", 0)), Tier(request.risk.get("tier", "medium")))
        parent = Decision(request.decision_id, Effect.APPROVE, risk, pdp.policy.current.version)
        details = {
            "approved": verdict.approved,
            "approver": verdict.approver,
            "channel": verdict.channel,
            "action_sha256": request.action_hash,
            "kind": request.kind,
        }
        if verdict.reason:
            details["reason"] = verdict.reason[:500]
        try:
            written = await pdp.observe(
                Action(
                    Agent(request.agent or "unknown", owner=request.owner, authn="none"),
                    "approval",
                    Operation.DELEGATE,
                    request.decision_id,
                    details,
                    parents=(request.decision_id,),
                ),
                outcome,
                parent,
                approver=None
                if verdict.approver is None
                else {
                    "id": verdict.approver,
                    "channel": verdict.channel,
                    "approved": verdict.approved,
                },
                required=True,
                effect=Effect.ALLOW if verdict.approved else Effect.DENY,
            )
            if verdict.approver is not None and request.agent and request.kind:
                await pdp.store.record_approval(request.agent, request.kind, verdict.approved)
        except StateError as exc:
            # The answer is audited; only the approval history missed it.
            log.warning("approval history of %s not updated: %s", request.decision_id, exc)
        except Exception:
            log.exception("could not record the answer to %s", request.decision_id)
            return False
        return written is not None

    async def close(self) -> None:
        """Deny everything still waiting and anything asked from now on (the PEPs answer
        their clients cleanly); give the outcomes a moment to be recorded."""
        self._closed = True
        for hold in list(self._waiting.values()):
            if not hold.future.done():
                hold.future.set_result(Verdict(False, None, "interlock is stopping", "shutdown"))
        if self._background:
            _, late = await asyncio.wait(list(self._background), timeout=2.0)
            for task in late:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _kind(action: Action) -> str:
    from interlock.core.pdp import target_key

    return target_key(action)


def _expiry(value: _Grant | tuple[Verdict, float]) -> float:
    return value.expires if isinstance(value, _Grant) else value[1]
