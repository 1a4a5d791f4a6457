"""The audit log the PDP writes to: group commit, durability rule, checkpoints.

Durability rule ("audit before allow"): an append with `durable=True` returns only once
its record is committed; the PDP asks for that for every decision above `low` (and for all
of them when `audit.fail_open_max_tier = "none"`). Other records are queued and committed
within `max_delay`, in order, with the next batch.

When the store fails, the batch is rolled back as a whole. Durable appends in it fail at
once (the PDP then denies the action) and are dropped, so the log never shows an `allow`
that did not happen; queued records stay at the head of the queue and are retried with
backoff until the store is back, so nothing the log accepted is lost while the process
lives. A crash can lose queued records (at most `max_delay` worth); never durable ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from interlock.audit import merkle
from interlock.audit.checkpoint import CheckpointError, NoteSigner, checkpoint_text, open_checkpoint
from interlock.audit.record import encode
from interlock.audit.store import AuditStore
from interlock.audit.witnessing import Witnesses
from interlock.core.record import DecisionRecord
from interlock.errors import AuditError

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 1.0


@dataclass(slots=True)
class _Entry:
    decision_id: str
    record: DecisionRecord | None
    data: bytes | None = None
    done: asyncio.Future[None] | None = None
    at: float = 0.0
    """time.monotonic() when it was accepted."""
    held: bool = False
    """A queued record whose append waits for its commit only to bound the loss window:
    on a store failure it stays queued like any other, and only its waiter hears of it."""


@dataclass
class AuditStats:
    appended: int = 0
    batches: int = 0
    failures: int = 0
    dropped_durable: int = 0
    last_error: str | None = None
    healthy: bool = True
    last_checkpoint_size: int = -1
    timings: list[float] = field(default_factory=list)


ENCODE_SLICE = 32
"""Records encoded before the writer lets other tasks run: at about 12 us each, a proxy
waits at most about 0.4 ms for a slice."""


MAX_BATCH = 512
"""Records committed together by default: the most a log holds before its writer takes
them."""


class AuditLog:
    """An `AuditSink` over an `AuditStore`, signing checkpoints with `signer`."""

    def __init__(
        self,
        store: AuditStore,
        signer: NoteSigner,
        origin: str,
        *,
        max_batch: int = MAX_BATCH,
        max_delay: float = 0.005,
        max_pending: int = 100_000,
        write_timeout: float = 5.0,
        checkpoint_interval: float = 60.0,
        clock: Callable[[], float] = time.time,
        witnesses: Witnesses | None = None,
        loss_window: float = 0.1,
        final_checkpoint: bool = True,
    ) -> None:
        self.store = store
        self.signer = signer
        self.origin = origin
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.max_pending = max_pending
        self.write_timeout = write_timeout
        self.checkpoint_interval = checkpoint_interval
        self.clock = clock
        self.witnesses = witnesses
        self.loss_window = loss_window
        self.final_checkpoint = final_checkpoint
        """Sign a checkpoint at `close` (off in a Postgres worker other than the first,
        which appends to the tree the first one checkpoints)."""
        """Longest an acknowledged record may stay uncommitted (0: no bound). Once the
        oldest uncommitted record is older, appends wait for their commit, so a crash
        loses at most what was acknowledged within this window before the last answer."""
        self._taken: deque[float] = deque()
        """Acceptance times of the first record of each batch taken but not committed."""
        """Asked to cosign each checkpoint (c2sp.org/tlog-witness) before it is stored."""
        self.stats = AuditStats()
        self._queue: deque[_Entry] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._signed: tuple[int, bytes] | None = None
        """(size, root) of the last checkpoint this log signed, or found signed in the
        store when it started: every new one must extend it."""

    async def start(self) -> None:
        await self.store.open()
        start_writer = getattr(self.store, "start_writer", None)  # stores with a writer process
        if start_writer is not None:
            await start_writer()
        self._tasks = [asyncio.create_task(self._writer(), name="audit-writer")]
        if self.checkpoint_interval > 0:
            self._tasks.append(asyncio.create_task(self._checkpointer(), name="audit-ckpt"))

    async def append(self, record: DecisionRecord, *, durable: bool = True) -> None:
        """Accept a record; with `durable`, return only once it is committed."""
        if self._closed:
            raise AuditError("audit log is closed")
        if len(self._queue) >= self.max_pending:
            raise AuditError(f"audit queue full ({self.max_pending} records pending)")
        now = time.monotonic()
        entry = _Entry(record.decision.decision_id, record, at=now)
        if not durable and self.loss_window > 0 and self.stats.healthy:
            # A slow store is waited for; a failing one is not (its records are kept
            # and retried, and the decision cannot wait out every retry).
            oldest = self._taken[0] if self._taken else (self._queue[0].at if self._queue else None)
            entry.held = oldest is not None and now - oldest > self.loss_window
        if durable or entry.held:
            entry.done = asyncio.get_running_loop().create_future()
        self._queue.append(entry)
        self._idle.clear()
        self._wake.set()
        if entry.done is not None:
            await entry.done

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def flush(self) -> None:
        """Wait until everything queued so far is committed (or the writer gave up)."""
        while self._queue or not self._idle.is_set():
            await self._idle.wait()
            if self._queue:
                await asyncio.sleep(0)

    async def _writer(self) -> None:
        """Commit batches in order, encoding the next batch while the last one commits.

        Encoding is Python CPU work, so it runs here on the loop in slices, between the
        proxies' own tasks: on another thread it gained nothing (it holds the GIL either
        way) and cost about a quarter more CPU per record in GIL hand-offs (measured in
        docs/benchmarks.md). Committing is the store's: the SQLite store hands the batch
        to its writer process, which hashes and writes it on the other core."""
        backoff = 0.01
        inflight: tuple[list[_Entry], asyncio.Task[None]] | None = None
        while True:
            if not self._queue and inflight is None:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            batch: list[_Entry] = []
            if self._queue:
                if inflight is None and len(self._queue) < self.max_batch and self.max_delay > 0:
                    await asyncio.sleep(self.max_delay)
                take = min(self.max_batch, len(self._queue))
                batch = [self._queue.popleft() for _ in range(take)]
                self._taken.append(batch[0].at)
                await self._encode(batch)
            if inflight is not None:
                done, task = inflight
                inflight = None
                try:
                    await task
                except Exception as exc:
                    self._queue.extendleft(reversed(batch))
                    self._taken.clear()  # both batches are back at the head of the queue
                    self._failed(done, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    continue
                self._succeeded(done)
                backoff = 0.01
            if batch:
                inflight = (batch, asyncio.create_task(self._store(batch)))

    async def _encode(self, batch: list[_Entry]) -> None:
        done = 0
        for e in batch:
            if e.data is None and e.record is not None:
                e.data, e.record = encode(e.record), None
                done += 1
                if done % ENCODE_SLICE == 0:
                    await asyncio.sleep(0)

    async def _store(self, batch: list[_Entry]) -> None:
        start = time.perf_counter()
        await asyncio.wait_for(
            self.store.append([(e.decision_id, e.data or b"") for e in batch]),
            self.write_timeout,
        )
        self.stats.timings.append(time.perf_counter() - start)
        del self.stats.timings[:-1000]

    def _succeeded(self, batch: list[_Entry]) -> None:
        if self._taken:
            self._taken.popleft()
        self.stats.appended += len(batch)
        self.stats.batches += 1
        if not self.stats.healthy:
            log.warning("audit store is writable again; %d records pending", len(self._queue))
        self.stats.healthy = True
        for e in batch:
            if e.done is not None and not e.done.done():
                e.done.set_result(None)

    def _failed(self, batch: list[_Entry], exc: Exception) -> None:
        reason = str(exc) or type(exc).__name__
        self.stats.failures += 1
        self.stats.healthy = False
        self.stats.last_error = reason
        keep = [e for e in batch if e.done is None or e.held]
        for e in batch:
            if e.done is None:
                continue
            if e.held:
                # Queued like the rest; its append learns the store is failing, so the
                # decision is taken under fail_open_max_tier as for a durable one.
                if not e.done.done():
                    e.done.set_exception(
                        AuditError(f"audit store failing, record kept queued: {reason}")
                    )
            else:
                self.stats.dropped_durable += 1
                if not e.done.done():
                    e.done.set_exception(AuditError(f"audit record not written: {reason}"))
        self._queue.extendleft(reversed(keep))
        log.error(
            "audit store write failed (%d durable refused, %d queued kept): %s",
            len(batch) - len(keep),
            len(self._queue),
            reason,
        )

    async def _checkpointer(self) -> None:
        while True:
            await asyncio.sleep(self.checkpoint_interval)
            try:
                await self.checkpoint()
            except AuditError as exc:
                log.error("checkpoint failed: %s", exc)

    async def checkpoint(self) -> tuple[int, str] | None:
        """Sign and store a checkpoint of the current tree, unless one exists for it."""
        size = await self.store.size()
        if size == self.stats.last_checkpoint_size:
            return None
        try:
            root = merkle.root_from(size, await self.store.nodes(merkle.frontier_keys(size)))
            await self._check_extends(size, root)
        except merkle.ProofError as exc:  # a missing node: the store is damaged
            raise AuditError(f"not signing a checkpoint at size {size}: {exc}") from exc
        note = await self.signer.sign_note(checkpoint_text(self.origin, size, root))
        if self.witnesses is not None:
            note = await self.witnesses.cosign(self.store, note, size)
        await self.store.add_checkpoint(size, note)
        self.stats.last_checkpoint_size = size
        self._signed = (size, root)
        return size, note

    async def _check_extends(self, size: int, root: bytes) -> None:
        """Refuse to sign a tree that does not extend the last one this log signed.

        The root is read from the store, so whoever can write the store (without the
        key) could otherwise edit signed records, recompute the tree and have the log
        itself sign the result at its next checkpoint, replacing the checkpoint that
        would have shown the edit (a restart re-signs the same size). The anchor is the
        last checkpoint signed in this process, or at the first one, the latest stored
        one that verifies under the log's own key."""
        anchor = self._signed
        if anchor is None:
            for _, note in reversed(await self.store.checkpoints()):
                try:
                    cp = open_checkpoint(note, self.signer.verifier)
                except CheckpointError:
                    continue  # not ours (another key, damaged): `verify` reports it
                if cp.origin == self.origin:
                    anchor = (cp.size, cp.root)
                    break
        if anchor is None:
            return
        old, old_root = anchor
        if old > size:
            raise AuditError(
                f"not signing size {size}: a checkpoint of this log covers {old} records "
                "(the store was truncated or rolled back)"
            )
        if old == size:
            if old_root != root:
                raise AuditError(
                    f"not signing size {size}: the stored tree's root differs from the one "
                    "signed for that size (records or tree nodes were changed)"
                )
            return
        if old == 0:
            return
        ranges = merkle.consistency_ranges(old, size)
        nodes = await self.store.nodes(merkle.plan(ranges))
        proof = [merkle.range_hash(s, e, nodes) for s, e in ranges]
        if not merkle.verify_consistency(old, size, old_root, root, proof):
            raise AuditError(
                f"not signing size {size}: the stored tree does not extend the checkpoint "
                f"at size {old} (signed records or tree nodes were changed)"
            )

    async def close(self) -> None:
        """Commit what is queued, write a final checkpoint, stop."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wait_for(self.flush(), self.write_timeout * 2)
        except TimeoutError:
            log.error("audit log closed with %d records not written", len(self._queue))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.final_checkpoint:
            try:
                await self.checkpoint()
            except AuditError as exc:
                log.error("final checkpoint failed: %s", exc)
        await self.store.close()

    def status(self) -> dict[str, Any]:
        s = self.stats
        return {
            "healthy": s.healthy,
            "appended": s.appended,
            "pending": len(self._queue),
            "failures": s.failures,
            "refused_durable": s.dropped_durable,
            "last_error": s.last_error,
        }
