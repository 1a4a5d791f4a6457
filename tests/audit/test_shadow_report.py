"""`interlock audit shadow-report` on a real log written in shadow mode; verify and replay
keep working on it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from interlock.audit.factory import log_for
from interlock.audit.shadow import summarize
from interlock.config import load_config
from interlock.core.context import MemoryStore
from interlock.core.model import Action, Agent, Operation
from interlock.core.modes import Mode
from interlock.core.pdp import PDP
from interlock.core.policy import PolicyManager
from interlock.testing import FakeClock
from tests.audit.conftest import audit_cli

REPORTER = Agent("reporter", ("analyst",), authn="token")
PLANNER = Agent("planner", (), authn="token")
FORBIDDEN = {"flags": ["copy_program"], "statements": ["copy"], "reads": ["public.t"]}


async def record_traffic(cfg: Path) -> list[dict[str, object]]:
    config = load_config(cfg)
    log = log_for(config)
    await log.start()
    clock = FakeClock()
    pdp = PDP(PolicyManager(None), MemoryStore(clock), log, clock=clock, modes=config.modes())
    pdp.policy.load()
    for agent in (REPORTER, PLANNER):
        await pdp.decide(Action(agent, "postgres", Operation.READ, "public.t"))
        await pdp.decide(Action(agent, "postgres", Operation.DDL, "public.t"))
        await pdp.decide(Action(agent, "postgres", Operation.WRITE, "public.t", FORBIDDEN))
    await pdp.set_agent_mode("planner", Mode.ENFORCE, "admin API")
    await pdp.decide(Action(PLANNER, "postgres", Operation.WRITE, "public.t", FORBIDDEN))
    await log.close()
    store = log.store
    await store.open()
    try:
        return [json.loads(r.data) for r in await store.records(0, await store.size())]
    finally:
        await store.close()


def test_the_report_matches_the_log_and_the_log_still_verifies(tmp_path: Path) -> None:
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[policy]\nmode = "shadow"\n'
        "[audit]\ncheckpoint_interval = 0\n"
    )
    records = asyncio.run(record_traffic(cfg))
    out = audit_cli("shadow-report", "-c", str(cfg), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    shadowed = [r for r in records if r.get("enforced") is False]
    assert report["not_enforced"] == len(shadowed) == 4
    assert report["decisions"] == 7, "the mode change is not a decision"
    assert report["by_effect"] == {"approve": 2, "deny": 2}
    assert {(r["effect"], r["reason"], r["count"]) for r in report["by_reason"]} >= {
        ("deny", "forbidden construct: copy_program", 2)
    }
    assert report["agents"] == {
        "planner": {"approve": 1, "deny": 1},
        "reporter": {"approve": 1, "deny": 1},
    }
    assert [m["to"] for m in report["mode_changes"]] == ["enforce"]
    assert sorted((s["statement"], s["count"]) for s in report["top_statements"]) == [
        ("copy public.t", 2),
        ("ddl public.t", 2),
    ]

    one = audit_cli("shadow-report", "-c", str(cfg), "--agent", "planner")
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith("4 decisions, 2 not enforced"), one.stdout
    assert "admin API, agent planner: unset -> enforce" in one.stdout
    assert audit_cli("shadow-report", "-c", str(cfg), "--since", "yesterday").returncode != 0

    verify = audit_cli("verify", "-c", str(cfg))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    replay = audit_cli("replay", "-c", str(cfg), "--agent", "reporter")
    assert replay.returncode == 0, replay.stderr
    assert "0 would change" in replay.stdout, replay.stdout


def test_records_older_than_shadow_mode_count_as_enforced() -> None:
    old = {
        "time": "2026-11-26T10:31:00.123456Z",
        "agent": {"id": "reporter"},
        "action": {"protocol": "postgres", "operation": "ddl", "target": "public.t"},
        "effect": "approve",
        "reasons": ["risk medium (40)"],
    }
    report = summarize([old]).to_json()
    assert (report["decisions"], report["not_enforced"], report["agents"]) == (1, 0, {})
