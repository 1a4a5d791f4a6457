"""Same-policy replay of recorded traffic reports zero changes: refusals made before the
policy ran, and hold outcomes, are listed as not replayable instead of as changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from interlock.approvals.holds import Holds
from interlock.audit.factory import log_for
from interlock.config import load_config
from interlock.core.context import MemoryStore
from interlock.core.model import Action, Agent, Effect, Operation
from interlock.core.pdp import PDP
from interlock.core.policy import PolicyManager
from interlock.core.refusal import guard_action
from interlock.errors import StateError
from interlock.testing import CaptureSink, FakeClock, make_pdp
from tests.audit.conftest import audit_cli

pytestmark = pytest.mark.integration

OWNER = "alice@example.com"
AGENT = Agent("reporter", ("analyst",), OWNER, authn="token")


def ddl(table: str) -> Action:
    return Action(AGENT, "postgres", Operation.DDL, table, {"sql": f"create table {table} (a int)"})


async def held(pdp: PDP, holds: Holds, action: Action, approved: bool | None) -> None:
    """Hold `action`; answer it, or (None) leave it pending until interlock stops."""
    decision = await pdp.decide(action)
    assert decision.effect is Effect.APPROVE
    waiting = asyncio.create_task(holds.wait(decision, 30, action))
    for _ in range(1000):
        if holds.pending():
            break
        await asyncio.sleep(0.005)
    if approved is None:
        await holds.close()
    else:
        holds.answer(holds.pending()[0].decision_id, approved, OWNER, "test")
    await waiting


async def record_traffic(cfg: Path) -> None:
    log = log_for(load_config(cfg))
    await log.start()
    clock = FakeClock()
    pdp = PDP(PolicyManager(None), MemoryStore(clock), log, clock=clock)
    pdp.policy.load()
    holds = Holds()
    holds.pdp = pdp
    for i in range(3):
        await pdp.decide(Action(AGENT, "postgres", Operation.READ, f"public.t{i}"))
    await held(pdp, holds, ddl("public.a"), True)
    await held(pdp, holds, ddl("public.b"), False)
    await pdp.refuse(
        Action(AGENT, "http", Operation.READ, "https://example.com/"), "request body truncated"
    )
    await pdp.decide(Action(AGENT, "postgres", Operation.WRITE, "public.t0"))
    # A guard's refusal of a reporter session (what isolation's ending of it records).
    ended = {"database": "app", "session": "ended"}
    refused = guard_action(AGENT, "postgres", Operation.CONNECT, "app", ended)
    await pdp.refuse(refused, "session ended: agent is isolated")
    await held(pdp, holds, ddl("public.c"), None)
    await log.close()


def test_same_policy_replay_of_recorded_traffic_changes_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n[audit]\ncheckpoint_interval = 0\n')
    asyncio.run(record_traffic(cfg))
    out = audit_cli("replay", "-c", str(cfg), "--agent", "reporter")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "CHANGED" not in out.stdout, out.stdout
    assert lines[-1].endswith(", 0 would change, 5 not replayable (no policy decided them)")
    assert lines[-1].startswith("12 decisions replayed"), out.stdout
    assert next(x for x in lines if " connect app" in x).endswith("deny -> not replayable")
    refused = [x for x in lines if "https://example.com/" in x]
    assert len(refused) == 1, out.stdout
    assert refused[0].startswith("n/a "), out.stdout
    assert refused[0].endswith("deny -> not replayable")
    outcomes = [x for x in lines if " delegate " in x]
    assert len(outcomes) == 3, out.stdout
    assert [x.split(": ")[-1] for x in outcomes] == [
        "allow -> not replayable",
        "deny -> not replayable",
        "deny -> not replayable",
    ]


async def test_a_decision_denied_before_the_policy_ran_names_no_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The state store down: denied without asking the policy, so replay must not
    re-decide it (its engine is what marks it)."""
    sink = CaptureSink()
    pdp = make_pdp(sink=sink)

    async def down(*_: object) -> None:
        raise StateError("state store unreachable")

    monkeypatch.setattr(pdp.store, "posture", down)
    decision = await pdp.decide(Action(AGENT, "postgres", Operation.READ, "public.t"))
    assert decision.effect is Effect.DENY
    assert sink.last.engine is None
    monkeypatch.undo()
    await pdp.decide(Action(AGENT, "postgres", Operation.READ, "public.t"))
    assert sink.last.engine is not None
