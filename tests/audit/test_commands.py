"""`interlock audit show|tail|proof|replay|key` on a real log."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from interlock.audit import merkle
from interlock.audit.factory import log_for
from interlock.config import load_config
from tests.audit.conftest import audit_cli
from tests.audit.test_log import sample_records

pytestmark = pytest.mark.integration

cli = audit_cli


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("log")
    cfg = root / "interlock.toml"
    cfg.write_text(f'data_dir = "{root / "data"}"\n[audit]\ncheckpoint_interval = 0\n')
    ids: list[str] = []

    async def build() -> None:
        log = log_for(load_config(cfg))
        await log.start()
        for rec in await sample_records(12):
            await log.append(rec)
            ids.append(rec.decision.decision_id)
        await log.close()

    asyncio.run(build())
    return cfg, ids


def test_show_by_id_and_index_with_a_verifiable_inclusion_proof(
    logged: tuple[Path, list[str]],
) -> None:
    cfg, ids = logged
    by_id = json.loads(cli("show", "-c", str(cfg), ids[4]).stdout)
    by_index = json.loads(cli("show", "-c", str(cfg), "4").stdout)
    assert by_id == by_index
    assert by_id["record"]["decision_id"] == ids[4]
    proof = by_id["inclusion_proof"]
    root = base64.b64decode(by_id["checkpoint"].split("\n")[2])
    leaf = base64.b64decode(by_id["leaf_hash"])
    assert merkle.verify_inclusion(
        4, proof["size"], leaf, [base64.b64decode(h) for h in proof["hashes"]], root
    )


def test_show_unknown_record(logged: tuple[Path, list[str]]) -> None:
    cfg, _ = logged
    out = cli("show", "-c", str(cfg), "no-such-id")
    assert out.returncode == 1
    assert "no record" in out.stderr


def test_tail_prints_the_last_canonical_records(logged: tuple[Path, list[str]]) -> None:
    cfg, ids = logged
    lines = cli("tail", "-c", str(cfg), "-n", "3").stdout.splitlines()
    assert [json.loads(x)["decision_id"] for x in lines] == ids[-3:]


def test_consistency_and_inclusion_proofs_verify(logged: tuple[Path, list[str]]) -> None:
    cfg, _ = logged
    c = json.loads(cli("proof", "-c", str(cfg), "--consistency", "5", "12").stdout)
    assert merkle.verify_consistency(
        5,
        12,
        base64.b64decode(c["first_root"]),
        base64.b64decode(c["second_root"]),
        [base64.b64decode(h) for h in c["proof"]],
    )
    bad = cli("proof", "-c", str(cfg), "--consistency", "9", "5")
    assert bad.returncode == 2
    assert "need 0 <= A <= B" in bad.stderr


def test_replay_shows_which_effects_a_new_policy_would_change(
    logged: tuple[Path, list[str]], bundle_copy: Path
) -> None:
    cfg, _ = logged
    same = cli("replay", "-c", str(cfg), "--agent", "reporter")
    assert same.returncode == 0
    last = same.stdout.strip().splitlines()[-1]
    assert last.startswith("12 decisions replayed against policy "), last
    assert last.endswith(", 0 would change, 0 not replayable (no policy decided them)"), last
    data = json.loads((bundle_copy / "data.json").read_text())
    data["interlock"]["policy"]["forbidden_operations"] = {"postgres": ["read"]}
    (bundle_copy / "data.json").write_text(json.dumps(data))
    changed = cli("replay", "-c", str(cfg), "--agent", "reporter", "--policy", str(bundle_copy))
    assert "12 would change" in changed.stdout
    assert "CHANGED #0" in changed.stdout
    assert "allow -> deny" in changed.stdout
    nobody = cli("replay", "-c", str(cfg), "--agent", "nobody")
    assert "0 decisions replayed" in nobody.stdout


def test_verify_without_any_key_says_what_to_pass(tmp_path: Path) -> None:
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "empty"}"\n')
    out = cli("verify", "-c", str(cfg))
    assert out.returncode == 2
    assert "pass --key" in out.stderr
