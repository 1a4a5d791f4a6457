"""The audit log as the PDP uses it: durability rule, group commit, failures, checkpoints."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.audit.checkpoint import Signer, open_checkpoint
from interlock.audit.log import AuditLog
from interlock.audit.postgres import PostgresStore
from interlock.audit.sqlite import SqliteStore
from interlock.core.context import MemoryStore
from interlock.core.model import Action, Agent, Effect, Operation, Tier
from interlock.core.pdp import PDP
from interlock.core.policy import PolicyManager
from interlock.core.record import DecisionRecord
from interlock.errors import AuditError
from interlock.testing import CaptureSink, FakeClock, make_pdp
from tests.audit.conftest import StoreFactory, fresh_database
from tests.services import postgres_server

pytestmark = pytest.mark.integration
SIGNER = Signer("interlock.test/audit", Ed25519PrivateKey.generate())
AGENT = Agent("reporter", authn="token")


async def sample_records(
    n: int, op: Operation = Operation.READ, clock: FakeClock | None = None
) -> list[DecisionRecord]:
    sink = CaptureSink()
    pdp = make_pdp(sink=sink, clock=clock)
    for i in range(n):
        await pdp.decide(Action(AGENT, "postgres", op, f"public.t{i}"))
    return list(sink.records)


@pytest.fixture
async def audit(store_factory: StoreFactory) -> AsyncIterator[AuditLog]:
    log = AuditLog(
        store_factory(), SIGNER, "interlock.test/audit", max_delay=0.01, checkpoint_interval=0
    )
    await log.start()
    yield log
    await log.close()


async def test_durable_append_returns_only_when_committed(audit: AuditLog) -> None:
    (rec,) = await sample_records(1)
    await audit.append(rec, durable=True)
    found = await audit.store.find(rec.decision.decision_id)
    assert found is not None
    assert found.index == 0


async def test_queued_appends_are_group_committed_in_order(audit: AuditLog) -> None:
    recs = await sample_records(200)
    for rec in recs:
        await audit.append(rec, durable=False)
    assert audit.pending > 0, "queued appends do not wait for the store"
    await audit.flush()
    stored = await audit.store.records(0, 200)
    assert [r.decision_id for r in stored] == [r.decision.decision_id for r in recs]
    assert audit.stats.batches < 20


async def test_checkpoint_signs_the_current_tree(audit: AuditLog) -> None:
    for rec in await sample_records(5):
        await audit.append(rec)
    made = await audit.checkpoint()
    assert made is not None
    cp = open_checkpoint(made[1], SIGNER.verifier)
    assert (cp.origin, cp.size) == ("interlock.test/audit", 5)
    assert await audit.checkpoint() is None, "no new checkpoint for an unchanged tree"


async def test_close_flushes_and_writes_a_final_checkpoint(store_factory: StoreFactory) -> None:
    log = AuditLog(store_factory(), SIGNER, "interlock.test/audit", checkpoint_interval=0)
    await log.start()
    for rec in await sample_records(7):
        await log.append(rec, durable=False)
    await log.close()
    store = store_factory()
    await store.open()
    try:
        assert await store.size() == 7
        assert [s for s, _ in await store.checkpoints()] == [7]
    finally:
        await store.close()
    with pytest.raises(AuditError, match="closed"):
        await log.append((await sample_records(1))[0])


async def test_periodic_checkpoints(store_factory: StoreFactory) -> None:
    log = AuditLog(store_factory(), SIGNER, "interlock.test/audit", checkpoint_interval=0.05)
    await log.start()
    try:
        for rec in await sample_records(3):
            await log.append(rec)
        for _ in range(100):
            if 3 in [s for s, _ in await log.store.checkpoints()]:
                break
            await asyncio.sleep(0.02)
        sizes = [s for s, _ in await log.store.checkpoints()]
        assert sizes[-1] == 3, "a checkpoint follows the appends without being asked for"
    finally:
        await log.close()


# --- a real full disk: SQLite on a tiny tmpfs -------------------------------------------


@contextlib.contextmanager
def tiny_disk(where: Path, size_kb: int = 512) -> Iterator[Path]:
    where.mkdir()
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        pytest.fail(
            f"this test mounts a small tmpfs to fill a real disk and needs root "
            f"(CAP_SYS_ADMIN): {out.stderr.strip()}",
            pytrace=False,
        )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of `disk` (the database file itself is left as it is)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


async def test_full_disk_refuses_durable_keeps_queued_and_recovers(tmp_path: Path) -> None:
    with tiny_disk(tmp_path / "disk") as disk:
        log = AuditLog(
            SqliteStore(disk / "audit.db"),
            SIGNER,
            "interlock.test/audit",
            max_delay=0.005,
            checkpoint_interval=0,
        )
        await log.start()
        try:
            for rec in await sample_records(3):
                await log.append(rec)
            filler = fill(disk)
            big = await sample_records(60)
            refused = []
            for rec in big[:30]:
                try:
                    await log.append(rec, durable=True)
                except AuditError as exc:
                    refused.append(str(exc))
            assert refused, "durable appends are refused on a full disk"
            assert "not written" in refused[-1]
            queued = big[30:]
            for rec in queued:
                await log.append(rec, durable=False)
            await asyncio.sleep(0.1)
            assert not log.stats.healthy
            assert log.pending >= len(queued) - 0, "queued records are kept, not dropped"
            filler.unlink()
            await asyncio.wait_for(log.flush(), 10)
            assert log.stats.healthy
            for rec in queued:
                assert await log.store.find(rec.decision.decision_id) is not None
        finally:
            await log.close()


async def test_pdp_fails_closed_on_a_full_disk(tmp_path: Path) -> None:
    with tiny_disk(tmp_path / "disk") as disk:
        log = AuditLog(
            SqliteStore(disk / "audit.db"),
            SIGNER,
            "interlock.test/audit",
            max_delay=0.005,
            checkpoint_interval=0,
        )
        await log.start()
        manager = PolicyManager()
        manager.load()
        pdp = PDP(manager, MemoryStore(), log)
        strict = PDP(manager, MemoryStore(), log, audit_fail_open_max_tier=None)
        try:
            assert (
                await pdp.decide(Action(AGENT, "postgres", Operation.DDL, "t"))
            ).effect is Effect.APPROVE
            filler = fill(disk)
            held = await pdp.decide(Action(AGENT, "postgres", Operation.DDL, "t2"))
            assert held.risk.tier is Tier.MEDIUM
            assert held.effect is Effect.DENY
            assert held.reasons[-1] == "audit log unavailable"
            low = await pdp.decide(Action(AGENT, "postgres", Operation.READ, "t3"))
            assert low.effect is Effect.ALLOW, "low follows fail_open_max_tier = low"
            strict_low = await strict.decide(Action(AGENT, "postgres", Operation.READ, "t4"))
            assert strict_low.effect is Effect.DENY, "fail-open none denies low too"
            filler.unlink()
            await asyncio.wait_for(log.flush(), 10)
            low_rec = await log.store.find(low.decision_id)
            assert low_rec is not None, "the allowed low action was recorded after recovery"
            denied = await log.store.find(held.decision_id)
            assert denied is not None
            assert b'"effect":"deny"' in denied.data
        finally:
            await log.close()


async def test_postgres_going_down_denies_durable_appends(tmp_path: Path) -> None:
    with postgres_server() as pg:
        log = AuditLog(
            PostgresStore(await fresh_database(pg)),
            SIGNER,
            "interlock.test/audit",
            max_delay=0.005,
            write_timeout=2,
            checkpoint_interval=0,
        )
        await log.start()
        (first, second) = await sample_records(2, Operation.DDL)
        await log.append(first)
        pg.stop()
        with pytest.raises(AuditError, match="not written"):
            await log.append(second)
        assert not log.stats.healthy
        assert log.status()["last_error"]
        await log.close()


class SlowDisk(SqliteStore):
    """The real SQLite store behind a disk that takes `delay` per commit: a stand-in for
    an fsync stalled by other I/O, which cannot be arranged on demand here. It notes when
    each record's commit returned."""

    def __init__(self, path: Path, delay: float) -> None:
        super().__init__(path)
        self.delay = delay
        self.committed: dict[str, float] = {}

    async def append(self, entries: Sequence[tuple[str, bytes]]) -> int:
        await asyncio.sleep(self.delay)
        size = await super().append(entries)
        now = time.monotonic()
        for decision_id, _ in entries:
            self.committed[decision_id] = now
        return size


@pytest.mark.parametrize("window", [0.05, 0.0])
async def test_a_slow_disk_cannot_widen_the_loss_window(tmp_path: Path, window: float) -> None:
    """With a loss window W, whenever a queued append is acknowledged every record
    acknowledged more than W earlier is committed: a crash then loses at most W of
    acknowledged decisions, however slow the disk. Without the bound (W = 0) a disk
    taking 150 ms per commit leaves older acknowledged records uncommitted."""
    store = SlowDisk(tmp_path / "a.db", delay=0.15)
    log = AuditLog(
        store, SIGNER, "interlock.test/audit", max_delay=0.001, checkpoint_interval=0,
        loss_window=window,
    )  # fmt: skip
    await log.start()
    acks: list[tuple[str, float, float]] = []  # decision id, called, returned
    for rec in await sample_records(40):
        called = time.monotonic()
        await log.append(rec, durable=False)
        acks.append((rec.decision.decision_id, called, time.monotonic()))
        await asyncio.sleep(0.01)
    await log.close()
    late = [
        (earlier, later)
        for later, called, returned in acks
        for earlier, _, earlier_returned in acks
        if earlier_returned < called - window - 0.005 and store.committed[earlier] > returned
    ]
    if window:
        assert late == []
    else:
        assert late, "the slow disk did not leave acknowledged records uncommitted"
