"""Helpers for testing policies and PEPs without mocks: capture audit records, fake time.

from interlock.testing import CaptureSink, FakeClock, make_pdp
pdp = make_pdp(clock=FakeClock())
decision = await pdp.decide(action)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from aiohttp import web

from interlock.core.context import MemoryStore, StateStore
from interlock.core.model import Tier
from interlock.core.pdp import PDP
from interlock.core.policy import PolicyManager
from interlock.core.record import DecisionRecord


class CaptureSink:
    """An audit sink that keeps records in a list. Set `unavailable` to make writes fail,
    which is how a test exercises the PDP's fail-closed path for a log that is down."""

    def __init__(self) -> None:
        self.records: list[DecisionRecord] = []
        self.durable: list[bool] = []
        self.unavailable = False

    async def append(self, record: DecisionRecord, *, durable: bool = True) -> None:
        if self.unavailable:
            raise OSError("audit store unavailable (CaptureSink.unavailable is set)")
        self.records.append(record)
        self.durable.append(durable)

    @property
    def last(self) -> DecisionRecord:
        return self.records[-1]


class FakeClock:
    """A callable clock for the PDP and stores; `advance(seconds)` moves it."""

    def __init__(self, start: float = 1_780_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_pdp(
    bundle: Path | str | None = None,
    *,
    clock: FakeClock | None = None,
    sink: CaptureSink | None = None,
    store: StateStore | None = None,
    entrypoints: Sequence[str] = ("interlock/decision",),
    audit_fail_open_max_tier: Tier | None = Tier.LOW,
) -> PDP:
    """A PDP on `bundle` (default: the bundled policy) with in-memory state and a CaptureSink."""
    clock = clock or FakeClock()
    manager = PolicyManager(bundle, entrypoints=entrypoints)
    manager.load()
    return PDP(
        manager,
        store or MemoryStore(clock),
        sink or CaptureSink(),
        clock=clock,
        audit_fail_open_max_tier=audit_fail_open_max_tier,
    )


@contextlib.asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """Serve an aiohttp app (a stand-in upstream for a test) on a free loopback port;
    yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
