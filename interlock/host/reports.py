"""Connections the table dropped, read from NFLOG and decided as actions (so audited).

The packet is already gone when the report arrives: the decision is at least a deny. A
stricter answer from the policy (restrict, isolate) is applied like any decision's, and
the attempt joins the agent's context, so bypassing the proxies feeds its risk.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace

from interlock.core.model import Action, Agent, Decision, Effect, Operation
from interlock.core.pdp import PDP
from interlock.core.result import parse_result
from interlock.errors import HostError, PolicyError
from interlock.host import nflog
from interlock.host.rules import PREFIX, Mode

log = logging.getLogger(__name__)

QUEUE = 1000
"""Attempts waiting to be decided and audited; beyond it they are counted in `lost` (the
kernel counter still has them)."""
SAME_ATTEMPT_S = 10.0
"""A retransmitted SYN (same source port) within this long is the same attempt."""
RECENT_ATTEMPTS = 4096
REASON = "host: connection outside interlock's proxies dropped by the firewall"
ISOLATED_REASON = "host: agent isolated, every connection dropped by the firewall"


def action_of(dropped: nflog.Dropped, agent_of: Mapping[int, str]) -> Action | None:
    """The action a dropped packet stands for; None when the prefix is not one of this
    table's or names no configured agent."""
    parts = dropped.prefix.split()
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1].isdigit():
        return None
    uid, mode = int(parts[1]), parts[2]
    agent = agent_of.get(uid)
    if agent is None:
        return None
    host = f"[{dropped.destination}]" if ":" in dropped.destination else dropped.destination
    target = f"{dropped.protocol}://{host}" + (f":{dropped.port}" if dropped.port else "")
    details = {"uid": uid, "transport": dropped.protocol, "destination": dropped.destination,
               "port": dropped.port, "mode": mode, "enforced_by": "nftables"}  # fmt: skip
    return Action(Agent(agent, authn="uid"), "host", Operation.CONNECT, target, details)


def enforced(decision: Decision, mode: str) -> Decision:
    """What was enforced: a permissive answer became a deny; a stricter one stands."""
    reason = ISOLATED_REASON if mode == Mode.ISOLATED else REASON
    if decision.effect in (Effect.ALLOW, Effect.APPROVE):
        return replace(decision, effect=Effect.DENY, reasons=(reason,), obligations=())
    return replace(decision, reasons=(reason, *decision.reasons))


class Reports:
    """The NFLOG group's one reader, and the queue of attempts to decide."""

    def __init__(self, pdp: PDP, agent_of: Mapping[int, str], group: int) -> None:
        self.pdp = pdp
        self.agent_of = agent_of
        self.group = group
        self.lost = 0
        """Dropped attempts not audited: each one the queue had no room for, and each
        netlink buffer overrun (which loses one or more)."""
        self._queue: asyncio.Queue[nflog.Dropped] = asyncio.Queue(QUEUE)
        self._recent: OrderedDict[tuple[object, ...], float] = OrderedDict()
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Bind the group (HostError if the kernel refuses) and start deciding."""
        self._sock = self._bind()
        asyncio.get_running_loop().add_reader(self._sock, self._readable)
        self._task = asyncio.create_task(self._decide_all())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock)
            self._sock.close()

    def _bind(self) -> socket.socket:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nflog.NETLINK_NETFILTER)
        except OSError as exc:
            raise HostError(f"netfilter netlink unavailable for NFLOG: {exc}") from None
        try:
            sock.bind((0, 0))
            sock.settimeout(2.0)
            sock.send(nflog.bind_request(self.group))
            acks = 0
            while acks < 2:
                for item in nflog.parse(sock.recv(65536)):
                    if isinstance(item, nflog.NetlinkError):
                        raise HostError(
                            f"NFLOG group {self.group}: {os.strerror(item.errno)} "
                            "(another reader on this group? set host.nflog_group)"
                        )
                    acks += 1
        except OSError as exc:
            sock.close()
            raise HostError(f"NFLOG group {self.group}: {exc}") from None
        except HostError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    log.error("host: reading NFLOG failed: %s", exc)
                    return
                # The kernel dropped log messages (a burst): the counters still have them.
                self.lost += 1
                continue
            for item in nflog.parse(data):
                if isinstance(item, nflog.Dropped):
                    self._enqueue(item)

    def _enqueue(self, dropped: nflog.Dropped) -> None:
        now = time.monotonic()
        key = (dropped.prefix, dropped.protocol, dropped.destination, dropped.port,
               dropped.source_port)  # fmt: skip
        seen = self._recent.get(key)
        self._recent[key] = now
        self._recent.move_to_end(key)
        while len(self._recent) > RECENT_ATTEMPTS:
            self._recent.popitem(last=False)
        if seen is not None and now - seen < SAME_ATTEMPT_S:
            return
        try:
            self._queue.put_nowait(dropped)
        except asyncio.QueueFull:
            self.lost += 1

    async def _decide_all(self) -> None:
        while True:
            dropped = await self._queue.get()
            try:
                await self.decide(dropped)
            except Exception:
                log.exception("host: reporting a dropped connection failed")

    async def decide(self, dropped: nflog.Dropped) -> Decision | None:
        """Ask the policy about one attempt, enforce at least a deny, audit it."""
        action = action_of(dropped, self.agent_of)
        if action is None:
            return None
        a = await self.pdp.assess(action)
        if a.error is not None:
            decision = a.deny(a.error)
        else:
            try:
                result = a.policy.evaluate(self.pdp.entrypoint, a.input_doc, bounded=True)
                decision = parse_result(
                    result, decision_id=a.decision_id, risk=a.risk,
                    policy_version=a.version, now=a.now,
                )  # fmt: skip
            except PolicyError as exc:
                decision = a.deny(f"policy: {exc}")
        return await self.pdp.settle(a.action, a, enforced(decision, action.details["mode"]))
