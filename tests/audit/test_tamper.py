"""`interlock audit verify` detects every kind of tampering, naming what is wrong."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from interlock.audit import merkle
from interlock.audit.checkpoint import Signer, load_or_create_key, sign_checkpoint
from interlock.audit.factory import log_for
from interlock.audit.sqlite import SqliteStore
from interlock.config import load_config
from interlock.errors import AuditError
from tests.audit.conftest import audit_cli
from tests.audit.test_log import sample_records
from tests.audit.test_merkle import mth

pytestmark = pytest.mark.integration

cli = audit_cli


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A log of 50 records with checkpoints at 20 and 50, and its trusted key."""
    root = tmp_path_factory.mktemp("pristine")
    cfg = root / "interlock.toml"
    cfg.write_text(f'data_dir = "{root / "data"}"\n[audit]\ncheckpoint_interval = 0\n')
    config = load_config(cfg)

    async def build() -> None:
        log = log_for(config)
        await log.start()
        recs = await sample_records(50)
        for rec in recs[:20]:
            await log.append(rec)
        await log.checkpoint()
        for rec in recs[20:]:
            await log.append(rec)
        await log.close()

    asyncio.run(build())
    key = cli("key", "-c", str(cfg)).stdout.strip()
    return root, key


@pytest.fixture
def copy(pristine: tuple[Path, str], tmp_path: Path) -> tuple[Path, str, Path]:
    root, key = pristine
    target = tmp_path / "log"
    shutil.copytree(root, target)
    cfg = target / "interlock.toml"
    cfg.write_text(f'data_dir = "{target / "data"}"\n[audit]\ncheckpoint_interval = 0\n')
    return cfg, key, target / "data" / "audit.db"


def verify(cfg: Path, key: str) -> subprocess.CompletedProcess[str]:
    return cli("verify", "-c", str(cfg), "--key", key)


def sql(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db)
    with conn:
        for s in statements:
            conn.execute(s)
    conn.close()


def test_untouched_log_verifies(copy: tuple[Path, str, Path]) -> None:
    cfg, key, _ = copy
    out = verify(cfg, key)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == [
        "ok: 50 records, 2 signed checkpoint(s) verify",
        "  signed: records 0..49 (checkpoint at size 50)",
        "  unsigned tail: none",
    ]


def flip_byte(db: Path) -> None:
    conn = sqlite3.connect(db)
    (data,) = conn.execute("SELECT data FROM audit_records WHERE idx = 7").fetchone()
    data = bytearray(data)
    data[40] ^= 0x01
    with conn:
        conn.execute("UPDATE audit_records SET data = ? WHERE idx = 7", (bytes(data),))
    conn.close()


def swap(db: Path) -> None:
    sql(
        db,
        "UPDATE audit_records SET idx = -1 WHERE idx = 3",
        "UPDATE audit_records SET idx = 3 WHERE idx = 9",
        "UPDATE audit_records SET idx = 9 WHERE idx = -1",
    )


CASES: list[tuple[str, Callable[[Path], None], int | None, str]] = [
    ("flipped byte", flip_byte, 7, "record 7: does not match the leaf hash"),
    (
        "deleted record",
        lambda db: sql(db, "DELETE FROM audit_records WHERE idx = 7"),
        7,
        "record 7: missing",
    ),
    ("reordered records", swap, 0, "record 0: records 0..15 do not match the stored tree"),
    (
        "truncated tail",
        lambda db: sql(
            db, "DELETE FROM audit_records WHERE idx >= 40", "UPDATE audit_head SET size = 40"
        ),
        40,
        "log truncated: 40 records, but a signed checkpoint covers 50",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "first_bad", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_tampering_is_detected_and_named(
    copy: tuple[Path, str, Path], mutate: Callable[[Path], None], first_bad: int, message: str
) -> None:
    cfg, key, db = copy
    mutate(db)
    out = verify(cfg, key)
    assert out.returncode == 1
    assert out.stdout.startswith("FAILED")
    assert f"first bad index: {first_bad}" in out.stdout
    assert message in out.stdout


def test_rewriting_records_and_tree_together_is_caught_by_the_checkpoint(
    copy: tuple[Path, str, Path],
) -> None:
    """The attacker recomputes every leaf and node; only the signature stands in the way."""
    cfg, key, db = copy
    flip_byte(db)
    rebuild_tree(db)
    out = verify(cfg, key)
    assert out.returncode == 1
    assert "records 0..19 do not match the signed checkpoint at size 20" in out.stdout


def test_whole_log_rebuilt_under_another_key_is_rejected(
    copy: tuple[Path, str, Path], tmp_path: Path
) -> None:
    cfg, key, db = copy
    flip_byte(db)
    rebuild_tree(db)
    forger = Signer("interlock.local/audit", load_or_create_key(tmp_path / "forged.key"))
    conn = sqlite3.connect(db)
    with conn:
        data = [bytes(d) for (d,) in conn.execute("SELECT data FROM audit_records ORDER BY idx")]
        for (size,) in conn.execute("SELECT size FROM audit_checkpoints").fetchall():
            note = sign_checkpoint(forger, "interlock.local/audit", size, mth(data[:size]))
            conn.execute("UPDATE audit_checkpoints SET note = ? WHERE size = ?", (note, size))
    conn.close()
    out = verify(cfg, key)
    assert out.returncode == 1
    assert "no signature by the trusted key interlock.local/audit" in out.stdout
    assert "no checkpoint signed by the trusted key" in out.stdout


def rebuild_tree(db: Path) -> None:
    """What a careful attacker does after editing records: recompute every hash."""
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT idx, data FROM audit_records ORDER BY idx").fetchall()
    leaves = [merkle.leaf_hash(bytes(d)) for _, d in rows]
    new, _ = merkle.extend(0, {}, leaves)
    with conn:
        conn.executemany(
            "UPDATE audit_records SET leaf = ? WHERE idx = ?",
            [(leaf, idx) for (idx, _), leaf in zip(rows, leaves, strict=True)],
        )
        conn.execute("DELETE FROM audit_nodes")
        conn.executemany(
            "INSERT INTO audit_nodes VALUES (?, ?, ?)",
            [n for n in new if n[0] >= merkle.TILE_LEVEL],
        )
    conn.close()


def test_export_verifies_offline_and_detects_an_edited_export(
    copy: tuple[Path, str, Path], tmp_path: Path
) -> None:
    cfg, key, _ = copy
    bundle = tmp_path / "export"
    out = cli("export", "-c", str(cfg), str(bundle))
    assert out.returncode == 0, out.stderr
    assert (bundle / "records.jsonl").read_bytes().count(b"\n") == 50
    ok = cli("verify", "--bundle", str(bundle), "--key", key)
    assert ok.returncode == 0, ok.stdout
    lines = (bundle / "records.jsonl").read_bytes().split(b"\n")
    lines[12] = lines[12].replace(b'"effect":"allow"', b'"effect":"deny"')
    (bundle / "records.jsonl").write_bytes(b"\n".join(lines))
    bad = cli("verify", "--bundle", str(bundle), "--key", key)
    assert bad.returncode == 1
    assert "first bad index: 12" in bad.stdout
    assert "record 12: inclusion proof in the signed checkpoint fails" in bad.stdout


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("missing.jsonl", '{"start": "a", "end": 1}\n'),
        ("missing.jsonl", '{"begin": 1}\n'),
        ("missing.jsonl", "[1, 2]\n"),
        ("proofs/inclusion.jsonl", '{"index": 1, "size": 50, "proof": 5}\n'),
        ("proofs/consistency.jsonl", '{"first": 10}\n'),
    ],
)
def test_a_malformed_export_fails_with_what_was_wrong(
    copy: tuple[Path, str, Path], tmp_path: Path, name: str, text: str
) -> None:
    # (review: a bad missing.jsonl ended in a TypeError traceback)
    cfg, key, _ = copy
    bundle = tmp_path / "export"
    assert cli("export", "-c", str(cfg), str(bundle)).returncode == 0
    (bundle / name).parent.mkdir(exist_ok=True)
    (bundle / name).write_text(text)
    out = cli("verify", "--bundle", str(bundle), "--key", key)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "is malformed" in out.stderr
    assert "Traceback" not in out.stderr


def test_wrong_key_format_is_a_clear_error(copy: tuple[Path, str, Path]) -> None:
    cfg, _, _ = copy
    out = verify(cfg, "not-a-key")
    assert out.returncode == 2
    assert "malformed verifier key" in out.stderr


async def test_sqlite_store_can_read_while_tampered(copy: tuple[Path, str, Path]) -> None:
    _, _, db = copy
    store = SqliteStore(db)
    await store.open()
    try:
        assert await store.size() == 50
    finally:
        await store.close()


def test_the_log_does_not_sign_a_tree_rewritten_behind_its_back(
    copy: tuple[Path, str, Path],
) -> None:
    """Someone who can write the store but holds no key edits signed records and
    recomputes every hash; interlock restarts. Its checkpoints read the root from the
    store: without a check it re-signed size 50 over the edit (replacing the genuine
    checkpoint) and signed the next size too, and `verify` said ok."""
    cfg, key, db = copy
    flip_byte(db)
    rebuild_tree(db)
    config = load_config(cfg)

    async def restart_and_grow() -> None:
        log = log_for(config)
        await log.start()
        with pytest.raises(AuditError, match="not signing size 50"):
            await log.checkpoint()
        for rec in await sample_records(3):
            await log.append(rec)
        with pytest.raises(AuditError, match="does not extend the checkpoint at size 50"):
            await log.checkpoint()
        await log.close()  # its final checkpoint is refused too (logged)

    asyncio.run(restart_and_grow())
    out = verify(cfg, key)
    assert out.returncode == 1, out.stdout
    assert "records 0..19 do not match the signed checkpoint at size 20" in out.stdout


def test_a_changed_decision_id_index_is_detected(copy: tuple[Path, str, Path]) -> None:
    """The store's decision id column is covered by no hash. Pointed at another record,
    `audit show ID` returned that record with a valid inclusion proof, and `verify` said
    ok."""
    cfg, key, db = copy
    conn = sqlite3.connect(db)
    (wanted,) = conn.execute("SELECT decision_id FROM audit_records WHERE idx = 7").fetchone()
    conn.close()
    sql(
        db,
        "UPDATE audit_records SET decision_id = "
        "(SELECT decision_id FROM audit_records WHERE idx = 7) WHERE idx = 9",
        "UPDATE audit_records SET decision_id = 'x' WHERE idx = 7",
    )
    out = verify(cfg, key)
    assert out.returncode == 1, out.stdout
    assert f"record 9: indexed under decision id '{wanted}', but the record is" in out.stdout
    shown = cli("show", "-c", str(cfg), wanted)
    assert shown.returncode != 0, shown.stdout
    assert "its index was changed" in shown.stderr
