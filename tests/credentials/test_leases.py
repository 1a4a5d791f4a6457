"""The lease journal: what a crashed run left is found; torn or hostile lines are not
mistaken for leases."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from interlock.credentials.leases import JOURNAL, Lease, LeaseBook


def test_leases_not_recorded_as_revoked_are_leftover(tmp_path: Path) -> None:
    book = LeaseBook(tmp_path)
    a, b, c = (Lease(f"database/creds/rw/{i}", "reporter", "postgres") for i in "abc")
    for lease in (a, b, c):
        book.add(lease)
    book.remove(b.lease_id)
    assert [x.lease_id for x in book.of_agent("reporter")] == [a.lease_id, c.lease_id]
    # A new process (after a crash) reads the journal.
    again = LeaseBook(tmp_path)
    assert again.leftover() == [a, c]
    again.reset([c])
    assert LeaseBook(tmp_path).leftover() == [c]
    assert (tmp_path / JOURNAL).stat().st_mode & 0o777 == 0o600


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    book = LeaseBook(tmp_path)
    book.add(Lease("l1", "reporter", "postgres"))
    with (tmp_path / JOURNAL).open("a") as f:
        f.write('{"op": "add", "id": "l2", "age')
    assert [x.lease_id for x in LeaseBook(tmp_path).leftover()] == ["l1"]


@given(st.lists(st.text(max_size=80), max_size=20))
def test_arbitrary_journal_text_never_crashes(lines: list[str]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / JOURNAL).write_text("\n".join(lines), errors="replace")
        for lease in LeaseBook(Path(d)).leftover():
            assert isinstance(lease.lease_id, str)


def test_one_instance_per_journal(tmp_path: Path) -> None:
    import pytest

    from interlock.credentials.leases import JournalBusy

    first = LeaseBook(tmp_path)
    first.lock()
    with pytest.raises(JournalBusy, match="in use by another interlock"):
        LeaseBook(tmp_path).lock()
    first.unlock()
    LeaseBook(tmp_path).lock()


def test_a_line_after_a_torn_one_is_not_lost(tmp_path: Path) -> None:
    book = LeaseBook(tmp_path)
    with (tmp_path / JOURNAL).open("a") as f:
        f.write('{"op": "add", "id": "torn", "ag')
    book.add(Lease("l2", "reporter", "postgres"))
    assert [x.lease_id for x in LeaseBook(tmp_path).leftover()] == ["l2"]
