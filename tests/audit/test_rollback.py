"""A verifier that never says "ok" to a rollback, a fork or a damaged store.

Each case edits a real SQLite log written by the real `AuditLog` the way an attacker who
controls the host would, then runs the real CLI: the honest log passes, every edit fails
with a message that names it, and nothing ends in a traceback.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from interlock.audit.checkpoint import Signer, load_or_create_key, sign_checkpoint
from interlock.audit.record import encode
from interlock.audit.sqlite import SqliteStore
from interlock.testing import FakeClock
from tests.audit.conftest import audit_cli
from tests.audit.test_log import sample_records
from tests.audit.test_merkle import mth
from tests.audit.test_tamper import copy, flip_byte, pristine, rebuild_tree, sql

pytestmark = pytest.mark.integration

__all__ = ["copy", "pristine"]

Log = tuple[Path, str, Path]
ORIGIN = "interlock.local/audit"


def kept(db: Path, size: int, where: Path) -> Path:
    """The checkpoint an auditor saved when it was published."""
    conn = sqlite3.connect(db)
    (note,) = conn.execute("SELECT note FROM audit_checkpoints WHERE size = ?", (size,)).fetchone()
    conn.close()
    where.write_text(note, "utf-8")
    return where


def verify(cfg: Path, key: str, *extra: str) -> subprocess.CompletedProcess[str]:
    out = audit_cli("verify", "-c", str(cfg), "--key", key, *extra)
    assert "Traceback" not in out.stderr, out.stderr
    return out


def failed(out: subprocess.CompletedProcess[str], *messages: str) -> None:
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.startswith("FAILED"), out.stdout
    for message in messages:
        assert message in out.stdout, out.stdout


def resign_all(log: Log) -> None:
    """Re-sign every checkpoint over the current records with the log's own key: what a
    host that holds `audit.key` can always do."""
    cfg, _, db = log
    signer = Signer(ORIGIN, load_or_create_key(cfg.parent / "data" / "audit.key"))
    conn = sqlite3.connect(db)
    with conn:
        data = [bytes(d) for (d,) in conn.execute("SELECT data FROM audit_records ORDER BY idx")]
        for (size,) in conn.execute("SELECT size FROM audit_checkpoints").fetchall():
            note = sign_checkpoint(signer, ORIGIN, size, mth(data[:size]))
            conn.execute("UPDATE audit_checkpoints SET note = ? WHERE size = ?", (note, size))
    conn.close()


def test_honest_log_is_consistent_with_every_checkpoint_kept(copy: Log, tmp_path: Path) -> None:
    cfg, key, db = copy
    for size in (20, 50):
        out = verify(cfg, key, "--since", str(kept(db, size, tmp_path / f"{size}.note")))
        assert out.returncode == 0, out.stdout
        assert f"consistent with your checkpoint at size {size}" in out.stdout


def test_rollback_past_a_kept_checkpoint_is_not_ok(copy: Log, tmp_path: Path) -> None:
    """The issue's attack: delete the checkpoints after size 20, rewrite a record past it
    and rebuild its leaf and nodes. The log's own checkpoints still verify."""
    cfg, key, db = copy
    note = kept(db, 50, tmp_path / "50.note")
    sql(db, "DELETE FROM audit_checkpoints WHERE size > 20")
    conn = sqlite3.connect(db)
    (data,) = conn.execute("SELECT data FROM audit_records WHERE idx = 30").fetchone()
    with conn:
        conn.execute(
            "UPDATE audit_records SET data = ? WHERE idx = 30",
            (bytes(data).replace(b'"effect":"allow"', b'"effect":"deny"'),),
        )
    conn.close()
    rebuild_tree(db)
    failed(
        verify(cfg, key),
        "first bad index: 20",
        "unsigned tail: 30 record(s) after the latest signed checkpoint (size 20)",
    )
    failed(
        verify(cfg, key, "--since", str(note), "--max-unsigned-age", "3600"),
        "fork: the log's first 50 records do not hash to the root of the checkpoint you kept",
        "rolled back: the log's latest signed checkpoint is at size 20, older than the one "
        "you kept at 50",
    )


def test_rollback_shown_as_an_export_is_not_ok(copy: Log, tmp_path: Path) -> None:
    cfg, key, db = copy
    note = kept(db, 50, tmp_path / "50.note")
    sql(db, "DELETE FROM audit_checkpoints WHERE size > 20")
    bundle = tmp_path / "export"
    assert audit_cli("export", "-c", str(cfg), str(bundle)).returncode == 0
    out = audit_cli("verify", "-c", str(cfg), "--bundle", str(bundle), "--key", key)
    failed(out, "unsigned tail: 30 record(s) after the latest signed checkpoint (size 20)")
    out = audit_cli(
        "verify", "--bundle", str(bundle), "--key", key, "--since", str(note),
        "--max-unsigned-age", "3600",
    )  # fmt: skip
    failed(out, "rolled back: the log's latest signed checkpoint is at size 20")


def test_a_kept_checkpoint_under_another_key_proves_nothing(copy: Log, tmp_path: Path) -> None:
    cfg, key, _ = copy
    other = Signer(ORIGIN, load_or_create_key(tmp_path / "other.key"))
    note = tmp_path / "other.note"
    note.write_text(sign_checkpoint(other, ORIGIN, 20, b"\0" * 32), "utf-8")
    failed(
        verify(cfg, key, "--since", str(note)),
        "your checkpoint at size 20: no signature by the trusted key",
    )


def test_truncation_below_a_kept_checkpoint_is_not_ok(copy: Log, tmp_path: Path) -> None:
    cfg, key, db = copy
    note = kept(db, 50, tmp_path / "50.note")
    sql(
        db,
        "DELETE FROM audit_records WHERE idx >= 30",
        "DELETE FROM audit_checkpoints WHERE size > 20",
        "UPDATE audit_head SET size = 30",
    )
    rebuild_tree(db)
    failed(
        verify(cfg, key, "--since", str(note), "--max-unsigned-age", "3600"),
        "rolled back: 30 records, but the checkpoint you kept covers 50",
    )


def fork(log: Log, size: int, where: Path) -> Path:
    """Keep the checkpoint at `size`, then rewrite record 7 with every hash rebuilt and
    every checkpoint re-signed by the host's own key: a different branch. Returns the
    kept checkpoint's file."""
    note = kept(log[2], size, where / f"{size}.note")
    flip_byte(log[2])
    rebuild_tree(log[2])
    resign_all(log)
    return note


def test_a_different_branch_signed_with_the_host_key_is_a_fork(copy: Log, tmp_path: Path) -> None:
    """Only the auditor's kept checkpoint can catch a host that re-signs its rewrite."""
    cfg, key, _ = copy
    note = fork(copy, 50, tmp_path)
    assert verify(cfg, key).returncode == 0, "the log alone cannot tell"
    failed(
        verify(cfg, key, "--since", str(note)),
        "fork: the log's first 50 records do not hash",
        "split view: the log signs a different root for size 50",
    )


def test_a_fork_shown_as_an_export_is_not_ok(copy: Log, tmp_path: Path) -> None:
    cfg, key, _ = copy
    note = fork(copy, 20, tmp_path)
    bundle = tmp_path / "export"
    assert audit_cli("export", "-c", str(cfg), str(bundle)).returncode == 0
    out = audit_cli("verify", "--bundle", str(bundle), "--key", key, "--since", str(note))
    failed(out, "fork: the log's first 20 records do not hash")


@pytest.mark.parametrize(
    ("statement", "missing", "messages"),
    [
        (
            "DELETE FROM audit_records WHERE idx >= 45",
            "45..49",
            ["first bad index: 45", "record 45: missing: records 45..49 absent (5 record(s))"],
        ),
        (
            "DELETE FROM audit_records WHERE idx BETWEEN 10 AND 14",
            "10..14",
            [
                "record 10: missing: records 10..14 absent (5 record(s))",
                "2 checkpoint(s) from size 20 cannot be checked: records before them are missing",
            ],
        ),
        (
            "DELETE FROM audit_nodes WHERE level = 4 AND idx = 1",
            None,
            [
                "record 16: stored tree node covering records 16..31 is missing",
            ],
        ),
    ],
    ids=["deleted tail", "deleted range", "deleted node"],
)
def test_damaged_store_is_diagnosed_not_a_traceback(
    copy: Log, tmp_path: Path, statement: str, missing: str | None, messages: list[str]
) -> None:
    cfg, key, db = copy
    sql(db, statement)
    failed(verify(cfg, key), *messages)
    bundle = tmp_path / "export"
    out = audit_cli("export", "-c", str(cfg), str(bundle))
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 1
    assert "damaged store:" in out.stderr
    if missing is not None:
        assert f"damaged store: records {missing} missing from the store" in out.stderr
        bundled = audit_cli("verify", "--bundle", str(bundle), "--key", key)
        failed(bundled, f"missing: records {missing} absent")


def test_unsigned_tail_is_reported_and_bounded(copy: Log) -> None:
    """Records appended after the last checkpoint: fine while young, a failure once older
    than the bound (default twice the checkpoint interval; 0 here, so any tail fails)."""
    cfg, key, db = copy

    async def more() -> None:
        """Appends as the log's writer does, then stops as a crash would: no checkpoint."""
        store = SqliteStore(db)
        await store.open()
        recs = await sample_records(5, clock=FakeClock(time.time() - 60))
        await store.append([(r.decision.decision_id, encode(r)) for r in recs])
        await store.close()

    asyncio.run(more())
    young = verify(cfg, key, "--max-unsigned-age", "3600")
    assert young.returncode == 0, young.stdout
    assert "unsigned tail: 5 record(s) from index 50, oldest 6" in young.stdout
    failed(
        verify(cfg, key, "--max-unsigned-age", "30"),
        "record 50: unsigned tail: 5 record(s) after the latest signed checkpoint (size 50), "
        "the oldest 6",
        "past the 30 s bound",
    )
    failed(verify(cfg, key), "past the 0 s bound")


def test_an_empty_signed_log_says_so(tmp_path: Path) -> None:
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n[audit]\ncheckpoint_interval = 0\n')
    assert audit_cli("checkpoint", "-c", str(cfg)).returncode == 0
    out = audit_cli("verify", "-c", str(cfg))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "signed: no records (checkpoint at size 0)" in out.stdout


def test_a_rewritten_tail_dated_in_the_future_is_not_young(copy: Log) -> None:
    """Later checkpoints deleted and the tail rewritten: the bound on the unsigned tail
    measures the first unsigned record's own `time`. Dated ahead, its age read as 0 s and
    `verify` said ok, for as long as the date stayed ahead."""
    cfg, key, db = copy
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM audit_checkpoints WHERE size = 50")
        rows = conn.execute("SELECT idx, data FROM audit_records WHERE idx >= 20").fetchall()
        for idx, data in rows:
            edited = bytes(data).replace(b'"effect":"allow"', b'"effect":"deny"')
            stamp = edited.index(b'"time":"') + 8
            edited = edited[:stamp] + b"2099" + edited[stamp + 4 :]
            conn.execute("UPDATE audit_records SET data = ? WHERE idx = ?", (edited, idx))
    conn.close()
    rebuild_tree(db)
    failed(
        verify(cfg, key, "--max-unsigned-age", "120"),
        "record 20: unsigned tail: the first unsigned record is dated",
        "in the future",
    )
