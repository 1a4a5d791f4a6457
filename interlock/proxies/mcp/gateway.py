"""The stdio MCP gateway's decisions: relay events turned into PDP questions and answers.

No process or pipe here (stdio.py owns those): lines go in through `host_line` and
`server_line`, encoded lines come out through `send`. Each request that acts is decided
in its own task, so a held call does not stop the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from interlock.approvals.holds import Holds
from interlock.approvals.pins import PinStore, change_action, owner_of
from interlock.classify.content import MAX_SCAN, HeuristicDetector
from interlock.classify.mcp import masked
from interlock.core.model import Action, Agent, Decision, Effect, Operation
from interlock.core.pdp import PDP
from interlock.core.refusal import UNRECORDED, FloodLimit, guard_action
from interlock.errors import StateError
from interlock.proxies.mcp.actions import Unreadable, Where, action_for, held_text, labels_of
from interlock.proxies.mcp.relay import (
    DENIED,
    DESCRIBED,
    INVALID_REQUEST,
    Cancel,
    Decide,
    Event,
    IdKey,
    Inspect,
    Problem,
    Refused,
    Relay,
    Send,
    Side,
    encode,
    error,
)

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 5.0
"""Seconds between progress notifications to a host that asked for them while held."""
SKIPPED_KEYS = frozenset({"blob", "data"})
"""Base64 payloads (images, binary resources) the host does not read as text."""


def mask_strings(value: Any, labels: frozenset[str]) -> Any:
    """`value` with the given labels masked in every string the model may read."""
    if isinstance(value, str):
        return masked(value, labels)
    if isinstance(value, list):
        return [mask_strings(x, labels) for x in value]
    if isinstance(value, dict):
        return {k: x if k in SKIPPED_KEYS else mask_strings(x, labels) for k, x in value.items()}
    return value


def result_text(value: Any) -> str:
    """Every string in a result, one per line: what the model may read of it."""
    parts: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str):
            parts.append(v)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            for k, x in v.items():
                if k not in SKIPPED_KEYS:
                    walk(x)

    walk(value)
    return "\n".join(parts)


class Gateway:
    """One host-server session's decisions."""

    def __init__(
        self,
        pdp: PDP,
        holds: Holds,
        agent: Agent,
        where: Where,
        send: Callable[[Side, bytes], None],
        *,
        pins: PinStore | None = None,
        approval_timeout: float = 30.0,
        taint_ttl: float = 900.0,
    ) -> None:
        self.pdp = pdp
        self.holds = holds
        self.agent = agent
        self.where = where
        self.send = send
        self.pins = pins
        self.approval_timeout = approval_timeout
        self.taint_ttl = taint_ttl
        self.relay = Relay()
        self.detector = HeuristicDetector()
        self._deciding: dict[IdKey, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._refusing: set[asyncio.Task[None]] = set()
        """Refusals being recorded: finished at close, never cancelled."""
        self.flood = FloodLimit(pdp, "mcp")
        """What the server sends that is refused, at most one record a second: a server
        that prints its logs to stdout is not an agent filling the log on purpose. (The
        host's refusals are the agent's own, each recorded.)"""
        self._held: set[asyncio.Task[Any]] = set()

    # --- input -------------------------------------------------------------------------

    def host_line(self, line: bytes) -> None:
        self._run(self.relay.from_host(line))

    def server_line(self, line: bytes) -> None:
        self._run(self.relay.from_server(line))

    def too_long(self, side: Side, reason: str) -> None:
        """A line the transport skipped unread (over its size limit): refused like a
        malformed one, recorded, and its sender told."""
        self._run([Refused(side, reason, None, INVALID_REQUEST)])

    def _run(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Send):
                self.send(event.to, event.data)
            elif isinstance(event, Decide):
                self._deciding[event.key] = asyncio.create_task(self._decide(event))
            elif isinstance(event, Cancel):
                deciding = self._deciding.pop(event.key, None)
                if deciding is not None:
                    deciding.cancel()  # a hold is withdrawn and audited by Holds
            elif isinstance(event, Inspect):
                self._spawn(self._inspect(event))
            elif isinstance(event, Refused):
                self._refuse(event)
            elif isinstance(event, Problem):
                log.warning(
                    "mcp %s: %s sent: %s", self.where.server, event.side.value, event.reason
                )

    def _refuse(self, event: Refused) -> None:
        suppressed: int | None = None
        if event.side is Side.SERVER:
            self.flood.start()
            suppressed = self.flood.take(f"mcp server {self.where.server[:200]}")
            if suppressed is None:
                log.warning("mcp %s: server sent: %s", self.where.server, event.reason)
                if event.code is not None:
                    data = {"audit": UNRECORDED}
                    reply = error(event.id, event.code, f"interlock: {event.reason}", data)
                    self.send(event.side, reply)
                return
        task = asyncio.create_task(self._refused(event, suppressed))
        self._refusing.add(task)
        task.add_done_callback(self._refusing.discard)

    async def _refused(self, event: Refused, suppressed: int | None) -> None:
        """A message the relay refused is a refusal in the log like any other (the
        session's agent, which side sent it); the error its sender gets names it."""
        log.warning("mcp %s: %s sent: %s", self.where.server, event.side.value, event.reason)
        details: dict[str, Any] = {
            "mcp_server": self.where.server, "transport": "stdio", "side": event.side.value,
        }  # fmt: skip
        if suppressed is not None:
            details["suppressed_since_last"] = suppressed
        action = guard_action(self.agent, "mcp", Operation.TOOL_CALL, self.where.server, details)
        why = f"message from the {event.side.value} refused: {event.reason}"
        decision = await self.pdp.refuse(action, why)
        if event.code is not None:
            data = {"decision_id": decision.decision_id}
            self.send(event.side, error(event.id, event.code, f"interlock: {event.reason}", data))

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """The session ends: requests still waiting are withdrawn (holds audit that)."""
        waiting = [*self._deciding.values(), *self._tasks]
        for task in waiting:
            task.cancel()
        for task in waiting:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._refusing:
            await asyncio.gather(*self._refusing, return_exceptions=True)
        await self.flood.stop()  # the count a flood of server output left

    # --- requests ----------------------------------------------------------------------

    def _deny(self, key: IdKey, decision: Decision, why: str | None = None) -> None:
        reason = why or "; ".join(decision.reasons) or decision.effect.value
        data = {"decision_id": decision.decision_id}
        self._run(self.relay.deny(key, f"denied by interlock: {reason}", data))

    def _stub(self, method: str, operation: Operation = Operation.TOOL_CALL) -> Action:
        """An action for what could not be read as one, so its refusal is audited."""
        details = {"mcp_server": self.where.server, "transport": "stdio", "method": method[:100]}
        return Action(self.agent, "mcp", operation, method[:100], details)

    async def _decide(self, event: Decide) -> None:
        try:
            await self._decide_one(event)
        except asyncio.CancelledError:
            self.relay.forget(event.key)  # the host cancelled it, or the session ends
            raise
        except Exception as exc:
            # Fail closed, and keep serving the session's other requests.
            log.exception("mcp %s: deciding %s failed", self.where.server, event.method[:100])
            why = f"internal error: {type(exc).__name__}"
            self._deny(event.key, await self.pdp.refuse(self._stub(event.method), why))
        finally:
            self._deciding.pop(event.key, None)

    async def _decide_one(self, event: Decide) -> None:
        try:
            bases = (*self.where.bases, *self.relay.roots)
            where = dataclasses.replace(self.where, bases=bases)
            action = action_for(event.method, event.request, self.agent, where)
        except Unreadable as exc:
            self._deny(event.key, await self.pdp.refuse(self._stub(event.method), str(exc)))
            return
        if action.operation is Operation.TOOL_CALL and self.pins is not None:
            # A point read in WAL mode never waits for a writer: cheaper on the loop
            # than a hop to a thread, on every call.
            held = self.pins.held(self.where.server, owner_of(self.agent), action.target)
            if held:
                why = f"tool held until its owner approves it ({held})"
                self._deny(event.key, await self.pdp.refuse(action, why))
                return
        decision = await self.pdp.decide(action)
        if decision.effect is Effect.APPROVE:
            verdict = await self._hold(event, action, decision)
            if not verdict.approved:
                self._deny(event.key, decision, f"held for approval: {verdict.reason or 'denied'}")
                return
        elif decision.effect is not Effect.ALLOW:
            self._deny(event.key, decision)
            return
        self._run(self.relay.allow(event.key, decision))

    async def _hold(self, event: Decide, action: Action, decision: Decision) -> Any:
        meta = event.request.get("params", {}).get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        tickers: list[asyncio.Task[None]] = []
        on_open = None
        if isinstance(token, (str, int)) and not isinstance(token, bool):
            progress_token: str | int = token

            def on_open() -> None:
                # Only now: the host may hand the id to an approver at once.
                tickers.append(
                    asyncio.create_task(self._progress(progress_token, decision.decision_id))
                )

        try:
            return await self.holds.wait_in(
                self._held,
                decision,
                self.approval_timeout,
                action,
                held_text(event.method, event.request),
                on_open,
            )
        finally:
            for ticker in tickers:
                ticker.cancel()

    async def _progress(self, token: str | int, decision_id: str) -> None:
        """The host asked for progress: say the call waits for a person, until it ends."""
        step = 0
        while True:
            step += 1
            note = {
                "jsonrpc": "2.0",
                "method": "notifications/progress",
                "params": {
                    "progressToken": token,
                    "progress": step,
                    "message": f"held by interlock for approval (decision {decision_id})",
                },
            }
            self.send(Side.HOST, encode(note))
            await asyncio.sleep(PROGRESS_INTERVAL)

    # --- answers -----------------------------------------------------------------------

    async def _inspect(self, event: Inspect) -> None:
        response = event.response
        try:
            if event.method == "tools/list":
                if "result" in response:
                    response = await self._pin(response)
            elif event.method in DESCRIBED:
                await self._described(event.method, response)
            else:
                response = await self._scan(event, response)
        except Exception as exc:
            # Content the session would not know it read, a listing that cannot be
            # pinned, or a failure here: it does not reach the host.
            if not isinstance(exc, StateError | Unreadable):
                log.exception("mcp %s: reading the answer failed", self.where.server)
                exc = Unreadable(f"internal error: {type(exc).__name__}")
            action = self._stub(event.method, Operation.READ)
            decision = await self.pdp.refuse(action, f"answer withheld: {exc}")
            response = {
                "jsonrpc": "2.0",
                "id": response["id"],
                "error": {
                    "code": DENIED,
                    "message": f"denied by interlock: answer withheld: {exc}",
                    "data": {"decision_id": decision.decision_id},
                },
            }
        self._run(self.relay.release(response))

    async def _described(self, method: str, response: dict[str, Any]) -> None:
        """The server's own words to the model (`initialize` instructions, resource and
        prompt descriptions) that try to steer it taint the session as a tool result
        that does would (`prompt_injection_suspected`); plain descriptions do not taint
        it, or every session would start tainted."""
        text = result_text(response.get("result"))
        step = MAX_SCAN - 4096
        reasons: set[str] = set()
        for start in range(0, max(len(text), 1), step):
            reasons.update(self.detector.scan(text[start : start + MAX_SCAN]))
        if not reasons:
            return
        until = self.pdp.clock() + self.taint_ttl
        await self.pdp.store.add_taint(self.agent.id, "prompt_injection_suspected", until, "")
        log.warning(
            "mcp %s: %s answer tries to steer the model (%s): session tainted",
            self.where.server, method, ", ".join(sorted(reasons)),
        )  # fmt: skip

    async def _scan(self, event: Inspect, response: dict[str, Any]) -> dict[str, Any]:
        """Tool results, resources and prompts are text from outside: the session is
        tainted by reading them, harder when they try to steer the agent, and labelled
        values in them are decided as a read (the policy's taints and masks apply)."""
        decision = event.note
        source = decision.decision_id if isinstance(decision, Decision) else ""
        part = "result" if "result" in response else "error"
        text = result_text(response.get(part))
        until = self.pdp.clock() + self.taint_ttl
        store = self.pdp.store
        await store.add_taint(self.agent.id, "untrusted_content", until, source)
        step = MAX_SCAN - 4096
        reasons: set[str] = set()
        for start in range(0, max(len(text), 1), step):
            reasons.update(self.detector.scan(text[start : start + MAX_SCAN]))
        if reasons:
            await store.add_taint(self.agent.id, "prompt_injection_suspected", until, source)
        labels = labels_of(text)
        if not labels:
            return response
        read = Action(
            self.agent, "mcp", Operation.READ, f"{event.method} result",
            {"mcp_server": self.where.server, "transport": "stdio", "method": event.method,
             "injection": sorted(reasons)},
            labels=labels, parents=(source,) if source else (),
        )  # fmt: skip
        verdict = await self.pdp.decide(read)
        refusal = None
        if verdict.effect is Effect.APPROVE:
            what = f"result of MCP {event.method} holds {', '.join(sorted(labels))}"
            answer = await self.holds.wait_in(
                self._held, verdict, self.approval_timeout, read, what
            )
            if not answer.approved:
                refusal = f"held for approval: {answer.reason or 'denied'}"
        elif verdict.effect is not Effect.ALLOW:
            refusal = "; ".join(verdict.reasons) or verdict.effect.value
        if refusal is not None:
            return {
                "jsonrpc": "2.0",
                "id": response["id"],
                "error": {
                    "code": DENIED,
                    "message": f"denied by interlock: result withheld: {refusal}",
                    "data": {"decision_id": verdict.decision_id},
                },
            }
        hidden = frozenset(
            str(label)
            for o in verdict.obligations
            if o.type == "mask"
            for label in o.params.get("labels", ())
        )
        if not hidden:
            return response
        return {**response, part: mask_strings(response.get(part), hidden)}

    async def _pin(self, response: dict[str, Any]) -> dict[str, Any]:
        """The listing as the host may see it: held tools left out (a changed description
        never reaches the model before the owner accepted it)."""
        result = response["result"]
        tools = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance(t.get("name"), str) and t["name"] for t in tools
        ):
            raise Unreadable("tools/list result has no list of named tools")
        if self.pins is None:
            return response
        owner = owner_of(self.agent)
        changes, held = await asyncio.to_thread(self.pins.check, self.where.server, owner, tools)
        for change in changes:
            action = change_action(self.agent, self.where.server, change)
            decision = await self.pdp.refuse(action, f"tool held: {change.reason}")
            log.warning(
                "mcp %s: tool %r held (%s), decision %s; accept with `interlock mcp"
                " approve-tool`",
                self.where.server, change.name, change.reason, decision.decision_id,
            )  # fmt: skip
        if not held:
            return response
        kept = [t for t in tools if t["name"] not in held]
        return {**response, "result": {**result, "tools": kept}}
