"""SIGKILL during heavy appends loses nothing that was acknowledged as durable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.audit.conftest import audit_cli

pytestmark = pytest.mark.integration

CHILD = r"""
import asyncio, sys
from dataclasses import replace
from interlock.audit.factory import log_for
from interlock.core.model import new_decision_id
from interlock.config import load_config
from tests.audit.test_log import sample_records

async def main():
    config = load_config(sys.argv[1])
    log = log_for(config)
    await log.start()
    recs = await sample_records(40)
    for rec in recs[:10]:
        await log.append(rec)
    await log.checkpoint()
    print("checkpoint", flush=True)

    async def worker(w):
        i = 0
        while True:
            base = recs[i % len(recs)]
            i += 1
            d = replace(base.decision, decision_id=new_decision_id())
            rec = type(base)(d, base.action, base.input)
            durable = (i % 3 != 0)
            await log.append(rec, durable=durable)
            if durable:
                print(d.decision_id, flush=True)

    await asyncio.gather(*(worker(w) for w in range(16)))

asyncio.run(main())
"""


def test_kill_during_appends_keeps_every_acknowledged_record(tmp_path: Path) -> None:
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[audit]\ncheckpoint_interval = 0\nmax_delay_ms = 2\n'
    )
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(cfg)],
        cwd=repo,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert proc.stdout is not None
    acked: list[str] = []
    deadline = time.monotonic() + 60
    assert proc.stdout.readline().strip() == "checkpoint"
    while len(acked) < 1500 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(line.strip())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(acked) >= 1500, "the child should have acknowledged plenty before the kill"
    # Lines the child printed after the last one we read were acknowledged too.
    acked += [x.strip() for x in proc.stdout.read().splitlines() if x.strip()]

    key = audit_cli("key", "-c", str(cfg)).stdout.strip()
    assert audit_cli("checkpoint", "-c", str(cfg)).returncode == 0
    verify = audit_cli("verify", "-c", str(cfg), "--key", key)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "2 signed checkpoint(s) verify" in verify.stdout, "old and new are consistent"

    import sqlite3

    conn = sqlite3.connect(tmp_path / "data" / "audit.db")
    stored = {row[0] for row in conn.execute("SELECT decision_id FROM audit_records")}
    conn.close()
    missing = [d for d in acked if d not in stored]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:3]}"
