"""The running enforcer: posture in, the table and tool ACLs out.

It follows the posture stream every PEP follows (the state store's subscription), and
re-reads every agent's posture each `resync_interval` so an expiry or a message missed
while Redis was away still lands. The table is rewritten whole, in one `nft`
transaction, only when it would change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from interlock.config import Config
from interlock.core.context import Posture
from interlock.core.pdp import PDP
from interlock.errors import HostError, StateError
from interlock.host import rules, system
from interlock.host.reports import Reports
from interlock.host.rules import Mode

log = logging.getLogger(__name__)


class HostEnforcer:
    """One per machine (or network namespace): the `inet interlock` table's only writer."""

    def __init__(self, config: Config, pdp: PDP, clock: Callable[[], float] = time.time) -> None:
        if config.host is None:
            raise HostError("no [host] section in the config")
        self.host = config.host
        self.pdp = pdp
        self.clock = clock
        self.endpoints = rules.endpoints(config)
        self.uids = {name: agent.uid for name, agent in self.host.agents.items()}
        self.agent_of = {uid: name for name, uid in self.uids.items()}
        self.postures: dict[str, Posture] = {}
        self.modes: dict[str, Mode] = {}
        self.reports = Reports(pdp, self.agent_of, self.host.nflog_group)
        self._lost_said = 0
        self._unreadable: set[str] = set()
        self._script: str | None = None
        self._denied: frozenset[tuple[int, Path]] = frozenset()
        self._acls_synced = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    async def start(self) -> None:
        """Install the table for the current posture, then follow changes."""
        system.require_tools()
        if os.geteuid() != 0:
            raise HostError("interlock host runs as root: it changes the firewall and ACLs")
        self._unsubscribe = self.pdp.store.subscribe(self._heard)
        await self._resync()
        await self._apply()
        self.reports.start()
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        """Stop following; the table and ACLs stay unless `keep_lockdown` is false."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.reports.close()
        if not self.host.keep_lockdown:
            await system.remove_table()
            for uid, path in sorted(self._denied):
                await system.restore_execute(uid, path)
            log.warning("host: table inet %s removed, tool ACLs restored", rules.TABLE)

    # --- posture -> rules ------------------------------------------------------------------

    def _heard(self, agent_id: str, posture: Posture) -> None:
        if agent_id in self.uids:
            self.postures[agent_id] = posture
            self._unreadable.discard(agent_id)
            self._wake.set()

    async def _resync(self) -> None:
        """Read every agent's posture from the store. One that cannot be read is treated
        as isolated until it can (fail closed), except that a posture already known stays."""
        now = self.clock()
        for agent in self.uids:
            try:
                self.postures[agent] = await self.pdp.store.posture(agent, now)
                self._unreadable.discard(agent)
            except StateError as exc:
                if agent not in self.postures:
                    self._unreadable.add(agent)
                log.error("host: posture of %s unreadable: %s", agent, exc)

    def _mode(self, agent: str, now: float) -> Mode:
        if agent in self._unreadable:
            return Mode.ISOLATED
        return rules.mode_of(self.postures.get(agent, Posture()), now)

    def _next_expiry(self, now: float) -> float:
        ends = [p.until for p in self.postures.values() if p.until is not None and p.until > now]
        return min([self.host.resync_interval, *(u - now + 0.01 for u in ends)])

    async def _follow(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._next_expiry(self.clock()))
            except TimeoutError:
                await self._resync()
                if self.reports.lost != self._lost_said:
                    self._lost_said = self.reports.lost
                    log.warning("host: %d dropped attempts (or NFLOG overruns) not audited",
                                self._lost_said)  # fmt: skip
                # A package upgrade replaces a binary (a new file without the entry):
                # the next pass sets or clears every mapped pair again.
                self._acls_synced = False
                if not await system.table_present():
                    # Someone flushed the ruleset (a firewall service reloading): the
                    # agents' users must not stay unfenced until the next posture change.
                    log.error("host: table inet %s was removed; installing it again", rules.TABLE)
                    self._script = None
            self._wake.clear()
            try:
                await self._apply()
            except HostError as exc:
                # The table in place stays (the last one applied): retried next round.
                log.error("host: %s", exc)
            except Exception:
                log.exception("host: applying posture failed")

    async def _apply(self) -> None:
        now = self.clock()
        modes = {agent: self._mode(agent, now) for agent in self.uids}
        script = rules.ruleset(
            {self.uids[a]: m for a, m in modes.items()}, self.endpoints, self.host.nflog_group
        )
        # ACLs first: they never raise, so a table nft refuses still leaves them right.
        await self._apply_acls(now)
        if script != self._script:
            await system.load(script)
            self._script = script
            log.warning(
                "host: table inet %s: %s",
                rules.TABLE,
                ", ".join(f"{a} {m}" for a, m in sorted(modes.items())) or "no agents",
            )
        for agent, mode in modes.items():
            if (
                mode is Mode.ISOLATED
                and self.modes.get(agent) is not Mode.ISOLATED
                and self.host.kill_on_isolate
            ):
                killed = system.kill_user(self.uids[agent], signal.SIGKILL)
                log.warning("host: %s isolated: %d processes of uid %d killed",
                            agent, killed, self.uids[agent])  # fmt: skip
        self.modes = modes

    async def _apply_acls(self, now: float) -> None:
        """Bring the tool ACLs to what posture wants. A binary that cannot be changed is
        logged and retried on the next pass; the others (and the table) still apply."""
        disabled = {a: rules.disabled_tools(p, now) for a, p in self.postures.items()}
        wanted = rules.acl_denials(self.uids, self.host.tools, disabled)
        if self._acls_synced and wanted == self._denied:
            return
        # The first pass trusts nothing it did not see: every mapped pair is set or
        # cleared, so a restore that happened while the enforcer was down still lands.
        mapped = {(u, p) for u in self.uids.values() for p in self.host.tools.values()}
        known = self._denied if self._acls_synced else frozenset(mapped)
        denying = sorted(wanted - (self._denied if self._acls_synced else set()))
        changes = [(True, pair) for pair in denying]
        changes += [(False, pair) for pair in sorted(known - wanted)]
        applied, failed = set(self._denied), False
        for deny, (uid, path) in changes:
            change = system.deny_execute if deny else system.restore_execute
            try:
                await change(uid, path)
            except HostError as exc:
                failed = True
                what = "set" if deny else "restored"
                log.error("host: tool ACL for uid %d not %s: %s", uid, what, exc)
                continue
            if deny:
                applied.add((uid, path))
            else:
                applied.discard((uid, path))
        self._denied = frozenset(applied)
        self._acls_synced = self._acls_synced or not failed
