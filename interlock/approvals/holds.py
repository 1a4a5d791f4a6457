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
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from interlock.core.model import Action, Agent, Decision, Effect, Operation, Risk, Tier, thaw

if TYPE_CHECKING:
    from interlock.core.pdp import PDP

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Verdict:
    approved: bool
    approver: str | None
    """Who answered; None when no person did (expiry, a failed channel)."""
    reason: str
    channel: str = ""


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """What a person is asked to approve."""

    decision_id: str
    agent: str
    owner: str | None
    summary: str
    action_hash: str
    risk: dict[str, Any]
    created: float
    expires: float
    kind: str = ""
    """protocol:operation:target, the unit approval history is kept by."""
    protocol: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.decision_id,
            "agent": self.agent,
            "owner": self.owner,
            "summary": self.summary,
            "action_sha256": self.action_hash,
            "kind": self.kind,
            "risk": self.risk,
            "created": self.created,
            "expires": self.expires,
        }


def action_hash(action: Action) -> str:
    """SHA-256 of the action's identity: agent, protocol, operation, target and details
    (the statement, the command line, or method, path and the hashes of query and body)."""
    doc = {
        "agent": action.agent.id,
        "protocol": action.protocol,
        "operation": action.operation.value,
        "target": action.target,
        "details": thaw(action.details),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def summary(action: Action) -> str:
    """One line a person can judge: who, what, on what, and the words of it."""
    d = action.details
    what = (
        d.get("command")
        or d.get("sql")
        or " ".join(str(x) for x in (d.get("method", ""), d.get("path", "")) if x)
        or ""
    )
    line = f"{action.agent.id}: {action.protocol} {action.operation.value} {action.target}"
    return f"{line}: {str(what)[:200]}" if what else line


class ApprovalError(Exception):
    """An answer that cannot be taken; `status` is the HTTP status the API answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


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
        self._clock = clock
        self._waiting: dict[str, _Hold] = {}
        self._by_hash: dict[str, str] = {}
        """ext_authz: action hash -> open request id."""
        self._grants: dict[str, _Grant] = {}
        self._refusals: dict[str, tuple[Verdict, float]] = {}
        self._background: set[asyncio.Task[None]] = set()

    # --- holding -------------------------------------------------------------------------

    async def wait(self, decision: Decision, limit: float, action: Action | None = None) -> Verdict:
        """Hold until answered or `limit` seconds pass (a denial)."""
        hold = self._open(decision, limit, action)
        try:
            verdict = await self._settle(hold, limit)
        finally:
            self._close(hold)
        await self._record(hold.request, verdict)
        return verdict

    def retry(self, decision: Decision, limit: float, action: Action) -> Retry:
        """ext_authz: pass an approved action again, report a pending one, or open one."""
        digest = action_hash(action)
        now = self._clock()
        grant = self._grants.get(digest)
        if grant is not None and grant.expires > now and grant.uses > 0:
            grant.uses -= 1
            if grant.uses == 0:
                del self._grants[digest]
            verdict = Verdict(True, grant.approver, "approved earlier", "retry")
            return Retry("granted", grant.decision_id, verdict)
        open_id = self._by_hash.get(digest)
        if open_id is not None and open_id in self._waiting:
            return Retry("pending", open_id)
        refused = self._refusals.get(digest)
        if refused is not None and refused[1] > now:
            return Retry("denied", "", refused[0])
        hold = self._open(decision, limit, action)
        self._by_hash[digest] = decision.decision_id
        task = asyncio.create_task(self._await_retry(hold, limit, digest))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return Retry("pending", decision.decision_id)

    async def _await_retry(self, hold: _Hold, limit: float, digest: str) -> None:
        try:
            verdict = await self._settle(hold, limit)
        finally:
            self._close(hold)
            self._by_hash.pop(digest, None)
        until = self._clock() + self.grant_ttl
        self._prune()
        if verdict.approved:
            self._grants[digest] = _Grant(
                hold.request.decision_id, verdict.approver, until, self.grant_uses
            )
        else:
            self._refusals[digest] = (verdict, until)
        await self._record(hold.request, verdict)

    def _open(self, decision: Decision, limit: float, action: Action | None) -> _Hold:
        now = self._clock()
        request = ApprovalRequest(
            decision.decision_id,
            action.agent.id if action is not None else "",
            action.agent.owner if action is not None else None,
            summary(action) if action is not None else "",
            action_hash(action) if action is not None else "",
            {"score": decision.risk.score, "tier": decision.risk.tier.value},
            now,
            now + limit,
            kind=_kind(action) if action is not None else "",
            protocol=action.protocol if action is not None else "",
        )
        hold = _Hold(request, asyncio.get_running_loop().create_future())
        self._waiting[decision.decision_id] = hold
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

    def _close(self, hold: _Hold) -> None:
        self._waiting.pop(hold.request.decision_id, None)
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
            raise ApprovalError(404, f"no pending approval {decision_id!r} (unknown or expired)")
        request = hold.request
        if hold.future.done():
            raise ApprovalError(409, f"approval {decision_id} was already answered")
        if check_owner and not self.may_answer(request, approver):
            raise ApprovalError(403, f"only {request.owner} may answer for {request.agent}")
        hold.future.set_result(Verdict(approved, approver, reason, channel))
        return request

    def expire(self, decision_id: str, reason: str, channel: str) -> None:
        """End a request without a human answer (e.g. the provider's request expired)."""
        hold = self._waiting.get(decision_id)
        if hold is not None and not hold.future.done():
            hold.future.set_result(Verdict(False, None, reason, channel))

    def resolve(self, decision_id: str, approved: bool, approver: str, reason: str = "") -> bool:
        """Answer a held action; False when it cannot be answered (see `answer`)."""
        try:
            self.answer(decision_id, approved, approver, "api", reason)
        except ApprovalError:
            return False
        return True

    async def _record(self, request: ApprovalRequest, verdict: Verdict) -> None:
        """Audit the outcome under the held decision; human answers become history."""
        pdp = self.pdp
        if pdp is None:
            return
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
            await pdp.observe(
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
            )
            if verdict.approver is not None and request.agent and request.kind:
                await pdp.store.record_approval(request.agent, request.kind, verdict.approved)
        except Exception:
            # The held action was already decided either way; losing this note is loud.
            log.exception("could not record the answer to %s", request.decision_id)

    async def close(self) -> None:
        """Deny everything still waiting (the PEPs answer their clients cleanly)."""
        for hold in list(self._waiting.values()):
            if not hold.future.done():
                hold.future.set_result(Verdict(False, None, "interlock is stopping", "shutdown"))
        await asyncio.sleep(0)
        for task in list(self._background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _kind(action: Action) -> str:
    from interlock.core.pdp import target_key

    return target_key(action)


def _expiry(value: _Grant | tuple[Verdict, float]) -> float:
    return value.expires if isinstance(value, _Grant) else value[1]
