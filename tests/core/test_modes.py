"""Shadow mode in the PDP: which mode applies, what the PEP is told, what is recorded."""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.config import Config, HttpConfig, parse_config
from interlock.core.model import Action, Agent, Decision, Effect, Obligation, Operation, Risk, Tier
from interlock.core.modes import Mode, Modes, shadow_answer
from interlock.core.pdp import PDP
from interlock.testing import CaptureSink, FakeClock, make_pdp

AGENT = Agent("reporter", ("analyst",), "alice@example.com", authn="token")
OTHER = Agent("planner", (), None, authn="token")
SHADOW_ALL = Modes(default=Mode.SHADOW)


def act(op: Operation = Operation.READ, target: str = "public.orders", **kw: Any) -> Action:
    protocol = kw.pop("protocol", "postgres")
    return Action(kw.pop("agent", AGENT), protocol, op, target, **kw)


def shadow_pdp(clock: FakeClock, sink: CaptureSink, bundle: Path | None = None) -> PDP:
    pdp = make_pdp(bundle, clock=clock, sink=sink)
    pdp.modes = SHADOW_ALL
    return pdp


MODES = Modes(
    default=Mode.ENFORCE,
    protocols={"postgres": (Mode.SHADOW, "[postgres] mode")},
    agents={"reporter": Mode.ENFORCE},
)


@pytest.mark.parametrize(
    ("agent", "protocol", "overrides", "expected"),
    [
        ("planner", "http", {}, (Mode.ENFORCE, "[policy] mode")),
        ("planner", "postgres", {}, (Mode.SHADOW, "[postgres] mode")),
        ("reporter", "postgres", {}, (Mode.ENFORCE, "[agents.reporter] mode")),
        (
            "reporter",
            "postgres",
            {"reporter": Mode.SHADOW},
            (Mode.SHADOW, "admin API, agent reporter"),
        ),
    ],
    ids=["global", "proxy", "agent beats proxy", "admin API beats config"],
)
def test_the_most_specific_setting_wins(
    agent: str, protocol: str, overrides: dict[str, Mode], expected: tuple[Mode, str]
) -> None:
    assert MODES.resolve(agent, protocol, overrides) == expected


def test_changes_name_each_setting_that_moved() -> None:
    after = Modes(
        default=Mode.SHADOW,
        protocols={"postgres": (Mode.SHADOW, "[postgres] mode")},
        agents={"planner": Mode.SHADOW},
    )
    assert MODES.changes(after) == [
        ("[policy] mode", "enforce", "shadow"),
        ("[agents.planner] mode", "unset", "shadow"),
        ("[agents.reporter] mode", "enforce", "unset"),
    ]
    assert MODES.changes(MODES) == []
    http = Config(http=HttpConfig(mode="shadow")).modes()
    assert Config().modes().changes(http) == [("[http] mode", "unset", "shadow")]


@settings(max_examples=60, deadline=None)
@given(
    effect=st.sampled_from(list(Effect)),
    types=st.lists(st.sampled_from(["mask", "add_header", "strip_header", "redact"]), max_size=4),
)
def test_a_shadow_answer_restricts_nothing_and_keeps_the_id(
    effect: Effect, types: list[str]
) -> None:
    restrictions = ("read_only",) if effect is Effect.RESTRICT else ()
    d = Decision(
        "id-1", effect, Risk(50, Tier.MEDIUM), "v", ("why",), restrictions,
        tuple(Obligation(t, {}) for t in types), shadow=((Effect.DENY, "trial"),),
    )  # fmt: skip
    answer = shadow_answer(d)
    assert answer.effect is Effect.ALLOW
    assert answer.decision_id == "id-1"
    assert answer.restrictions == ()
    assert [o.type for o in answer.obligations] == [t for t in types if t == "add_header"]


async def test_shadow_records_the_real_decision_and_answers_allow(
    clock: FakeClock, sink: CaptureSink
) -> None:
    enforce = make_pdp(clock=clock, sink=CaptureSink())
    held = await enforce.decide(act(Operation.DDL))
    assert held.effect is Effect.APPROVE
    pdp = shadow_pdp(clock, sink)
    answer = await pdp.decide(act(Operation.DDL))
    assert answer.effect is Effect.ALLOW
    rec = sink.last
    assert rec.decision.decision_id == answer.decision_id
    assert (rec.decision.effect, rec.decision.reasons) == (held.effect, held.reasons)
    assert rec.enforced is False
    assert rec.to_json()["enforced"] is False
    assert pdp.stats.decisions[("postgres", "approve", False)] == 1


async def test_a_plain_allow_in_shadow_counts_as_enforced(
    clock: FakeClock, sink: CaptureSink
) -> None:
    pdp = shadow_pdp(clock, sink)
    d = await pdp.decide(act())
    assert d.effect is Effect.ALLOW
    assert sink.last.enforced is True


async def test_a_shadowed_restriction_leaves_the_posture_alone(
    clock: FakeClock, sink: CaptureSink
) -> None:
    pdp = shadow_pdp(clock, sink)
    await pdp.store.add_taint(AGENT.id, "prompt_injection_suspected", clock() + 60)
    answer = await pdp.decide(act(Operation.DDL))
    assert answer.effect is Effect.ALLOW
    assert sink.last.decision.effect is Effect.RESTRICT
    assert not sink.last.enforced
    assert not (await pdp.store.posture(AGENT.id, clock())).restrictions
    assert (await pdp.decide(act(Operation.WRITE))).effect is Effect.ALLOW


async def test_context_is_updated_as_if_allowed(clock: FakeClock, sink: CaptureSink) -> None:
    pdp = shadow_pdp(clock, sink)
    details = {"flags": ["copy_program"]}
    await pdp.decide(act(Operation.WRITE, labels=frozenset({"restricted"}), details=details))
    assert sink.last.decision.effect is Effect.DENY
    assert not sink.last.enforced
    await pdp.decide(act(Operation.EGRESS, "example.org", taints=("untrusted_content",)))
    view = await pdp.store.view(AGENT.id, "k", clock(), recent=True)
    assert [r.effect for r in view.recent] == ["allow", "allow"], view.recent
    assert "untrusted_content" in view.taints, "what the allowed action brought in taints"


async def test_the_operators_posture_is_enforced_in_shadow(
    clock: FakeClock, sink: CaptureSink
) -> None:
    pdp = shadow_pdp(clock, sink)
    await pdp.store.restrict(AGENT.id, (), isolate=True)
    d = await pdp.decide(act())
    assert d.effect is Effect.DENY
    assert sink.last.enforced is True
    other = await pdp.decide(act(Operation.DDL, agent=OTHER))
    assert other.effect is Effect.ALLOW


async def test_identity_and_policy_failures_are_never_shadowed(
    tmp_path: Path, clock: FakeClock, sink: CaptureSink
) -> None:
    pdp = shadow_pdp(clock, sink)
    anonymous = Agent("nobody")
    d = await pdp.decide(act(agent=anonymous))
    assert d.effect is Effect.DENY
    assert sink.last.enforced is True
    (tmp_path / "p.rego").write_text(
        "package interlock\nimport rego.v1\ndecision := 10 / count(input.context.taints)\n"
    )
    broken = shadow_pdp(clock, sink, tmp_path)
    d = await broken.decide(act())
    assert d.effect is Effect.DENY
    assert sink.last.enforced is True
    unreadable = act(Operation.READ, details={"flags": ["copy_program", "truncated"]})
    d = await pdp.decide(unreadable)
    assert d.effect is Effect.DENY, "what the PEP could not read is refused in shadow too"
    assert sink.last.enforced is True
    refused = await pdp.refuse(act(), "unreadable")
    assert refused.effect is Effect.DENY
    assert sink.last.enforced is True


async def test_trial_findings_are_recorded_never_enforced(
    tmp_path: Path, clock: FakeClock, sink: CaptureSink
) -> None:
    (tmp_path / "p.rego").write_text(
        "package interlock\nimport rego.v1\n"
        'decision := {"effect": "allow", "shadow": [{"effect": "deny", "reason": "trial"}]}\n'
    )
    pdp = make_pdp(tmp_path, clock=clock, sink=sink)
    d = await pdp.decide(act())
    assert d.effect is Effect.ALLOW
    assert sink.last.enforced is True
    assert sink.last.to_json()["shadow"] == [{"effect": "deny", "reason": "trial"}]
    (tmp_path / "p.rego").write_text(
        'package interlock\nimport rego.v1\ndecision := {"effect": "allow", "shadow": [1]}\n'
    )
    pdp = make_pdp(tmp_path, clock=clock, sink=sink)
    assert (await pdp.decide(act())).effect is Effect.DENY, "a malformed finding fails closed"


async def test_an_unwritable_log_still_denies_in_shadow(
    clock: FakeClock, sink: CaptureSink
) -> None:
    pdp = shadow_pdp(clock, sink)
    sink.unavailable = True
    d = await pdp.decide(act(Operation.DDL))
    assert d.effect is Effect.DENY
    assert "audit log unavailable" in d.reasons


async def test_mode_changes_are_audit_records(clock: FakeClock, sink: CaptureSink) -> None:
    pdp = make_pdp(clock=clock, sink=sink)
    await pdp.set_modes(SHADOW_ALL, "SIGHUP")
    rec = sink.last.to_json()
    assert (rec["action"]["protocol"], rec["action"]["operation"]) == ("interlock", "admin")
    assert rec["action"]["details"] == {
        "setting": "[policy] mode", "from": "enforce", "to": "shadow", "via": "SIGHUP",
    }  # fmt: skip
    await pdp.set_agent_mode("reporter", Mode.ENFORCE, "admin API")
    assert sink.last.to_json()["agent"]["id"] == "reporter"
    assert (await pdp.decide(act(Operation.DDL))).effect is Effect.APPROVE
    assert (await pdp.decide(act(Operation.DDL, agent=OTHER))).effect is Effect.ALLOW
    n = len(sink.records)
    await pdp.set_agent_mode("reporter", Mode.ENFORCE, "admin API")
    assert len(sink.records) == n, "setting the same mode again is no change"
    assert json.loads(json.dumps(sink.last.to_json()))


FLAGS = ["copy_program", "do_block", "obfuscation", "truncated", "unparsed", "dev_tcp"]


@settings(max_examples=40, deadline=None)
@given(
    op=st.sampled_from(list(Operation)),
    labels=st.frozensets(st.sampled_from(["pii", "restricted", "financial", "secret"])),
    flags=st.lists(st.sampled_from(FLAGS), max_size=2, unique=True),
    taints=st.lists(st.sampled_from(["untrusted_content", "prompt_injection_suspected"])),
)
def test_shadow_records_what_enforce_records(
    op: Operation, labels: frozenset[str], flags: list[str], taints: list[str]
) -> None:
    """The mode changes what the PEP is told, never what is recorded; what is not
    readable is answered as enforced."""

    async def both() -> None:
        records = []
        for modes in (Modes(), SHADOW_ALL):
            sink = CaptureSink()
            pdp = make_pdp(clock=FakeClock(), sink=sink)
            pdp.modes = modes
            for t in taints:
                await pdp.store.add_taint(AGENT.id, t, pdp.clock() + 60)
            action = act(op, labels=labels, details={"flags": flags}, protocol="ssh")
            answer = await pdp.decide(action)
            d = sink.last.decision
            records.append((d.effect, d.reasons, d.restrictions, d.obligations, d.risk.score))
            unreadable = {"truncated", "unparsed"} & set(flags)
            if modes is SHADOW_ALL and not unreadable:
                assert answer.effect is Effect.ALLOW
                assert sink.last.enforced is (d.effect is Effect.ALLOW and not d.obligations)
            else:
                assert answer.effect is d.effect
                assert sink.last.enforced
        assert records[0] == records[1]

    asyncio.run(both())


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ('[http]\nmode = "shadow"\n', (Mode.SHADOW, "[http] mode")),
        ('[http]\nmode = "shadow"\n[mcp]\nmode = "enforce"\n', (Mode.ENFORCE, "[mcp] mode")),
        ('[mcp]\nmode = "shadow"\n', (Mode.SHADOW, "[mcp] mode")),
        ("", (Mode.ENFORCE, "[policy] mode")),
    ],
    ids=["follows http", "mcp beats http", "mcp alone", "neither"],
)
def test_mcp_actions_follow_mcp_then_http(section: str, expected: tuple[Mode, str]) -> None:
    """The stdio gateway and MCP over HTTP decide protocol `mcp`: `[mcp] mode` when set,
    else the HTTP proxy's, else the global one; `[mcp] mode` never touches plain HTTP."""
    modes = parse_config(tomllib.loads(section)).modes()
    assert modes.resolve("planner", "mcp") == expected
    http_mode = Mode.SHADOW if "[http]" in section else Mode.ENFORCE
    assert modes.resolve("planner", "http")[0] is http_mode


def test_sighup_carries_every_mode_setting_over() -> None:
    """What SIGHUP re-reads: each proxy's mode and `[mcp] mode`, nothing else."""
    from interlock.runtime import _with_modes

    old = parse_config(tomllib.loads('[http]\nlisten = "127.0.0.1:1"\n'))
    new = parse_config(
        tomllib.loads('[http]\nlisten = "127.0.0.1:2"\nmode = "shadow"\n[mcp]\nmode = "enforce"\n')
    )
    merged = _with_modes(old, new)
    assert merged.http is not None
    assert (merged.http.mode, merged.http.listen, merged.mcp.mode) == (
        "shadow",
        "127.0.0.1:1",
        "enforce",
    )
    assert merged.modes().resolve("a", "mcp") == (Mode.ENFORCE, "[mcp] mode")
