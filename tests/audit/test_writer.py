"""The SQLite store's writer process: its pipe protocol, bad requests, and a writer that
dies, is cancelled mid-batch or is sent a terminal's signals."""

from __future__ import annotations

import asyncio
import io
import os
import signal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.audit import merkle, writer
from interlock.audit.sqlite import SqliteStore
from interlock.audit.sqlitefile import Appender, connect
from interlock.errors import AuditError
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
    first_len = int.from_bytes(out[:4], "big")
    with pytest.raises(AuditError, match="not an append request"):
        writer.decode_reply(out[4 : 4 + first_len])
    second = out[4 + first_len :]
    assert writer.decode_reply(second[4:]) == 0
    # The half-sent third request was never applied: the parent went away mid-request.
    assert len(second) == 4 + int.from_bytes(second[:4], "big")


async def _root_matches(store: SqliteStore) -> list[bytes]:
    size = await store.size()
    recs = await store.records(0, size)
    assert [r.index for r in recs] == list(range(size))
    data = [r.data for r in recs]
    assert merkle.root_from(size, await store.nodes(merkle.frontier_keys(size))) == mth(data)
    return data


async def test_a_killed_writer_fails_one_append_and_the_next_starts_a_new_one(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "a.db")
    await store.open()
    try:
        assert await store.append([("d0", b"zero")]) == 0
        proc = store._writer
        assert proc is not None
        proc.kill()
        await proc.wait()
        with pytest.raises(AuditError, match="writer process exited"):
            await store.append([("d1", b"one")])
        assert await store.append([("d1", b"one")]) == 1
        assert store._writer is not None
        assert store._writer.pid != proc.pid
        assert await _root_matches(store) == [b"zero", b"one"]
    finally:
        await store.close()


async def test_an_append_cancelled_mid_batch_is_retried_without_duplicates(
    tmp_path: Path,
) -> None:
    """The log's write timeout cancels an append while the batch is on the pipe and then
    retries it: the writer is replaced, the batch is in the log whole or not at all, and
    the retry does not write it twice."""
    store = SqliteStore(tmp_path / "a.db")
    await store.open()
    try:
        await store.append([("d0", b"zero")])
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
    finally:
        await store.close()


def test_a_batch_whose_answer_was_lost_is_not_written_twice(tmp_path: Path) -> None:
    appender = Appender(connect(tmp_path / "a.db"))
    batch = writer.decode_append(writer.encode_append([("a", b"1"), ("b", b"2")])[4:])
    assert appender.append(*batch) == 0
    assert appender.append(*batch) == 0  # the same batch again: a retry
    other = writer.decode_append(writer.encode_append([("a", b"1"), ("c", b"2")])[4:])
    assert appender.append(*other) == 2  # only the first matches: a new batch
    assert appender.append(*batch) == 4  # no longer at the tail: written again
    (size,) = appender.db.execute("SELECT size FROM audit_head").fetchone()
    assert size == 6


async def test_the_terminals_signals_do_not_stop_the_writer(tmp_path: Path) -> None:
    """Ctrl-C or a SIGTERM to everything must not abort a batch being committed: only
    the store, by closing the pipe, ends its writer."""
    store = SqliteStore(tmp_path / "a.db")
    await store.open()
    try:
        await store.append([("d0", b"zero")])
        proc = store._writer
        assert proc is not None
        assert os.getpgid(proc.pid) != os.getpgid(0)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGTERM)
        assert await store.append([("d1", b"one")]) == 1
        assert store._writer is proc
    finally:
        await store.close()
    assert proc.returncode == 0


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
