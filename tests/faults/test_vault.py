"""Vault (OpenBao) frozen under the Postgres proxy: new logins that need dynamic
credentials are refused within the credentials timeout, audited under a decision id, the
open session keeps its lease, the readiness probe says so, and logins resume once it
answers again."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import asyncpg
import pytest

from interlock.admin.readiness import Readiness, vault_answers
from tests.credentials.conftest import start_vaulted
from tests.services import Postgres, openbao_server

pytestmark = pytest.mark.integration
RECOVERY_BOUND_S = 3.0


async def test_a_frozen_vault_refuses_new_logins_with_an_audited_reason(
    postgres: Postgres, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with openbao_server() as bao:
        v = await start_vaulted(postgres, bao, tmp_path / "data")
        ready = Readiness(listening=True)
        ready.add("vault", lambda: vault_answers(bao.address))
        try:
            conn = await asyncpg.connect(v.dsn())
            os.kill(bao.proc_pid, signal.SIGSTOP)
            try:
                asked = time.monotonic()
                with pytest.raises(asyncpg.PostgresError, match="no database credentials") as err:
                    await asyncpg.connect(v.dsn())
                took = time.monotonic() - asked
                print(f"\nvault frozen: login refused in {took:.3f} s")
                assert took < 5, "bounded by the credentials timeout (2 s)"
                assert err.value.sqlstate == "08006"
                refused = v.sink.last
                assert refused.decision.decision_id in str(err.value)
                assert refused.action.operation.value == "connect"
                status, body = await ready.report()
                assert status == 503
                assert body["down"] == ["vault"]
                assert await conn.fetchval("select 2") == 2, "the open session keeps its lease"
            finally:
                os.kill(bao.proc_pid, signal.SIGCONT)
            started = time.monotonic()
            while True:
                try:
                    other = await asyncpg.connect(v.dsn())
                    break
                except asyncpg.PostgresError:
                    assert time.monotonic() - started < RECOVERY_BOUND_S
                    await asyncio.sleep(0.05)
            print(f"\nvault frozen: login back in {time.monotonic() - started:.3f} s")
            await other.close()
            await conn.close()
            assert (await ready.report())[0] == 200
        finally:
            await v.proxy.stop()
            await v.broker.stop()
    assert not [r for r in caplog.records if r.exc_info and r.name.startswith("interlock")]
