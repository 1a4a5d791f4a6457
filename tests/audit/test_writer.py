"""The SQLite store's writer process: its pipe protocol, bad requests, and a writer that
dies, is cancelled mid-batch or is sent a terminal's signals."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.audit import merkle, writer
from interlock.audit.checkpoint import Signer
from interlock.audit.log import AuditLog
from interlock.audit.sqlite import SqliteStore
from interlock.audit.sqlitefile import Appender, connect
from interlock.errors import AuditError
from tests.audit.test_log import sample_records
from tests.audit.test_merkle import mth


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.text(max_size=40), st.binary()),
        max_size=30,
    )
)
def test_a_request_decodes_to_the_entries_it_was_made_from(
    entries: list[tuple[str, bytes]],
) -> None:
    entries = [(did, data) for did, data in entries if _utf8(did)]
    request = writer.encode_append(entries)
    assert int.from_bytes(request[:4], "big") == len(request) - 4
    batch = writer.decode_append(request[4:])
    assert batch.ids == [did for did, _ in entries]
    assert list(batch.lengths) == [len(data) for _, data in entries]
    assert bytes(batch.data) == b"".join(data for _, data in entries)


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_request_cut_or_padded_anywhere_is_refused(data: st.DataObject) -> None:
    entries = [(f"id{i}", bytes([i]) * i) for i in range(5)]
    body = writer.encode_append(entries)[4:]
    cut = data.draw(st.integers(0, len(body) - 1))
    refused = "not an append request|truncated|do not match"
    with pytest.raises(ValueError, match=refused):
        writer.decode_append(body[:cut])
    with pytest.raises(ValueError, match=refused):
        writer.decode_append(body + data.draw(st.binary(min_size=1, max_size=8)))


def test_a_bad_request_is_answered_with_its_reason_and_the_next_one_is_served(
    tmp_path: Path,
) -> None:
    good = writer.encode_append([("d0", b"zero"), ("d1", b"one")])
    requests = io.BytesIO(
        len(b"Xjunk").to_bytes(4, "big") + b"Xjunk" + good + good[: len(good) // 2]
    )
    replies = io.BytesIO()
    writer.serve(tmp_path / "a.db", requests, replies)
    out = replies.getvalue()
    assert out.startswith(writer.READY)  # said before any request was read
    out = out[len(writer.READY) :]
    first_len = int.from_bytes(out[:4], "big")
    with pytest.raises(AuditError, match="not an append request"):
        writer.decode_reply(out[4 : 4 + first_len])
    second = out[4 + first_len :]
    assert writer.decode_reply(second[4:]) == 0
    # The half-sent third request was never applied: the parent went away mid-request.
    assert len(second) == 4 + int.from_bytes(second[:4], "big")


def test_a_file_the_writer_cannot_open_is_its_only_answer(tmp_path: Path) -> None:
    (tmp_path / "a.db").mkdir()  # a directory where the file should be
    requests = io.BytesIO(writer.encode_append([("d0", b"zero")]))
    replies = io.BytesIO()
    writer.serve(tmp_path / "a.db", requests, replies)
    out = replies.getvalue()
    assert len(out) == 4 + int.from_bytes(out[:4], "big")  # one answer, no append served
    with pytest.raises(AuditError, match="cannot open sqlite audit store"):
        writer.decode_reply(out[4:])


def _replace_with_a_directory(path: Path) -> None:
    for leftover in path.parent.iterdir():  # the file, its WAL and shared memory
        leftover.unlink()
    path.mkdir()


async def test_a_writer_that_cannot_open_the_file_stops_the_start_with_its_reason(
    tmp_path: Path,
) -> None:
    """The parent opened the file; the writer process finds a directory in its place (a
    file replaced under the running log): the start fails with the writer's own reason
    instead of the first decisions failing later."""
    path = tmp_path / "a.db"
    store = SqliteStore(path)
    await store.open()
    try:
        _replace_with_a_directory(path)
        with pytest.raises(AuditError, match="cannot open sqlite audit store"):
            await store.start_writer()
        assert store._writer is None  # nothing left running
    finally:
        await store.close()


def script(path: Path, body: str) -> Path:
    """An executable shell script at `path` (stands in for the writer's interpreter)."""
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o700)
    return path


async def test_a_start_cancelled_before_the_writer_said_open_leaves_no_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start given up on (the log's write timeout cancels an append that was starting
    a writer) must not leave that process as the store's writer: its late "open" would
    be taken for the next batch's answer, and every answer after it would belong to the
    batch before."""
    slow = script(tmp_path / "slow-python", f'sleep 2\nexec "{sys.executable}" "$@"')
    store = SqliteStore(tmp_path / "a.db")
    await store.open()
    try:
        monkeypatch.setattr(sys, "executable", str(slow))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.start_writer(), 0.3)
        assert store._writer is None
        monkeypatch.undo()
        assert await store.append([("d0", b"zero")]) == 0
        assert await store.append([("d1", b"one")]) == 1
        assert await store.append([("d2", b"two"), ("d3", b"three")]) == 2
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("answer", "refused"),  # the answer as printf(1) escapes
    [
        (r"\000\000\000\002zz", "not a reply"),  # framed, but no reply
        (r"\000\000", "did not start"),  # cut inside the frame header, then exit
        ("", "did not start"),  # nothing at all, then exit
    ],
)
async def test_a_writer_whose_first_answer_is_not_open_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: str, refused: str
) -> None:
    """Garbage, a cut frame or silence where the "open" answer belongs: the start fails
    with a reason, no writer is kept, and a later append starts a real one."""
    fake = script(tmp_path / "fake-python", f"printf '{answer}'")
    store = SqliteStore(tmp_path / "a.db")
    await store.open()
    try:
        monkeypatch.setattr(sys, "executable", str(fake))
        with pytest.raises(AuditError, match=refused):
            await store.start_writer()
        assert store._writer is None
        monkeypatch.undo()
        assert await store.append([("d0", b"zero")]) == 0
    finally:
        await store.close()


async def _root_matches(store: SqliteStore) -> list[bytes]:
    size = await store.size()
    recs = await store.records(0, size)
    assert [r.index for r in recs] == list(range(size))
    data = [r.data for r in recs]
    assert merkle.root_from(size, await store.nodes(merkle.frontier_keys(size))) == mth(data)
    return data


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A store whose writer is up: one record ("d0", b"zero") appended."""
    store = SqliteStore(tmp_path / "a.db")
    await store.open()
    try:
        assert await store.append([("d0", b"zero")]) == 0
        yield store
    finally:
        await store.close()


def _writer_of(store: SqliteStore) -> asyncio.subprocess.Process:
    assert store._writer is not None
    return store._writer


async def test_a_writer_that_died_while_idle_is_replaced_without_failing_an_append(
    started: SqliteStore,
) -> None:
    store = started
    proc = _writer_of(store)
    proc.kill()
    await proc.wait()
    assert await store.append([("d1", b"one")]) == 1
    assert store._writer is not None
    assert store._writer.pid != proc.pid
    assert await _root_matches(store) == [b"zero", b"one"]


async def test_a_writer_that_dies_mid_batch_fails_the_append_and_its_retry_lands_once(
    started: SqliteStore,
) -> None:
    store = started
    proc = _writer_of(store)
    batch = [(f"b{i}", os.urandom(3000)) for i in range(400)]  # more than a pipe holds
    proc.send_signal(signal.SIGSTOP)  # it reads nothing: the batch waits on the pipe
    task = asyncio.create_task(store.append(batch))
    for _ in range(3):
        await asyncio.sleep(0)
    proc.kill()
    with pytest.raises(AuditError, match="writer process failed"):
        await task
    assert await store.append(batch) == 1  # the retry, whatever the first one did
    assert await _root_matches(store) == [b"zero", *(d for _, d in batch)]


async def test_an_append_cancelled_mid_batch_is_retried_without_duplicates(
    started: SqliteStore,
) -> None:
    """The log's write timeout cancels an append while the batch is on the pipe and then
    retries it: the writer is replaced, the batch is in the log whole or not at all, and
    the retry does not write it twice."""
    store = started
    big = [(f"b{i}", os.urandom(4000)) for i in range(600)]  # more than a pipe holds
    task = asyncio.create_task(store.append(big))
    for _ in range(3):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.size() in (1, 601)
    assert await store.append(big) == 1
    assert await store.append([("after", b"after")]) == 601
    data = await _root_matches(store)
    assert data == [b"zero", *(d for _, d in big), b"after"]


def test_a_recheck_skips_exactly_the_records_already_logged(tmp_path: Path) -> None:
    """After an append whose outcome is unknown the log retries its records, less the
    durable ones it refused and with newer ones behind them: what is logged already (same
    id and bytes) is skipped, and nothing else."""
    appender = Appender(connect(tmp_path / "a.db"))

    def batch(*entries: tuple[str, bytes], recheck: bool = False) -> writer.Batch:
        return writer.decode_append(writer.encode_append(entries, recheck=recheck)[4:])

    assert appender.append(*batch(("a", b"1"), ("b", b"2"), ("c", b"3"))) == 0
    # The retry: "b" was durable and refused, "d" was queued behind.
    assert appender.append(*batch(("a", b"1"), ("c", b"3"), ("d", b"4"), recheck=True)) == 0
    # The same id with other bytes (a fail-closed denial under its decision's id) is new.
    assert appender.append(*batch(("a", b"denied"), recheck=True)) == 4
    # Without a recheck nothing is skipped: two appends of equal records are two records.
    assert appender.append(*batch(("d", b"4"))) == 5
    rows = appender.db.execute("SELECT decision_id, data FROM audit_records ORDER BY idx")
    assert [(d, bytes(b)) for d, b in rows] == [
        ("a", b"1"),
        ("b", b"2"),
        ("c", b"3"),
        ("d", b"4"),
        ("a", b"denied"),
        ("d", b"4"),
    ]


async def test_a_store_write_timeout_is_kept_while_another_process_holds_the_lock(
    tmp_path: Path,
) -> None:
    """`write_timeout` bounds how long a durable decision waits: the stuck writer is
    killed, not waited for, and the records are logged once when the lock is free."""
    path = tmp_path / "a.db"
    store = SqliteStore(path)
    log = AuditLog(store, Signer("t", Ed25519PrivateKey.generate()), "t", write_timeout=0.3,
                   checkpoint_interval=0)  # fmt: skip
    await log.start()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        recs = await sample_records(3)
        started = time.monotonic()
        with pytest.raises(AuditError):
            await log.append(recs[0], durable=True)
        assert time.monotonic() - started < 3  # writers wait up to 5 s for a lock
        await log.append(recs[1], durable=False)
        holder.execute("ROLLBACK")
        await log.append(recs[2], durable=True)
        ids = [r.decision_id for r in await store.records(0, await store.size())]
        assert ids == [recs[1].decision.decision_id, recs[2].decision.decision_id]
    finally:
        holder.close()
        await log.close()


async def test_an_append_behind_close_is_refused_and_starts_no_writer(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "a.db")
    await store.open()
    await store.append([("d0", b"zero")])
    closing = asyncio.create_task(store.close())
    await asyncio.sleep(0)
    with pytest.raises(AuditError, match="not open"):
        await store.append([("d1", b"one")])
    await closing
    assert store._writer is None


async def test_the_writer_imports_nothing_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process that writes the log runs interlock's code and the standard library,
    not a `hashlib.py` that happens to sit where interlock was started."""
    trap = tmp_path / "cwd"
    trap.mkdir()
    marker = tmp_path / "imported"
    (trap / "hashlib.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(trap)
    store = SqliteStore(tmp_path / "a.db")
    await store.open()
    try:
        assert await store.append([("d0", b"zero")]) == 0
    finally:
        await store.close()
    assert not marker.exists()


async def test_the_terminals_signals_do_not_stop_the_writer(started: SqliteStore) -> None:
    """Ctrl-C or a SIGTERM to everything must not abort a batch being committed: only
    the store, by closing the pipe, ends its writer."""
    store = started
    proc = _writer_of(store)
    assert os.getpgid(proc.pid) != os.getpgid(0)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGTERM)
    assert await store.append([("d1", b"one")]) == 1
    assert store._writer is proc
    await store.close()
    assert proc.returncode == 0  # it ended when its pipe closed, not by a signal


async def test_an_id_sqlite_cannot_store_is_refused_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "a.db")
    await store.open()
    try:
        with pytest.raises(AuditError, match="decision id"):
            await store.append([("ok", b"a"), ("bad\ud800", b"b")])
        assert await store.size() == 0
        assert await store.append([("ok", b"a")]) == 0
    finally:
        await store.close()


async def test_the_log_starts_its_writer_before_the_first_decision(tmp_path: Path) -> None:
    """Its start-up is paid when the log starts, not by the decisions first served."""
    store = SqliteStore(tmp_path / "a.db")
    log = AuditLog(store, Signer("t", Ed25519PrivateKey.generate()), "t", checkpoint_interval=0)
    await log.start()
    try:
        assert store._writer is not None
        assert store._writer.returncode is None
    finally:
        await log.close()
    assert store._writer is None
