"""The PDP end to end on the bundled policy: tiers, hard rules, posture, failures, audit."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from interlock.core.context import MemoryStore
from interlock.core.engine import MAX_INPUT_DEPTH
from interlock.core.model import Action, Agent, Effect, Operation, Tier
from interlock.core.pdp import PDP
from interlock.core.policy import DECISION_ENTRYPOINT, PolicyManager
from interlock.errors import PolicyEvaluationError
from interlock.testing import CaptureSink, FakeClock, make_pdp

UUID = re.compile(r"^[0-9a-f-]{36}$")
AGENT = Agent("reporter", ("analyst",), "alice@example.com", authn="token")


def act(op: Operation = Operation.READ, target: str = "public.orders", **kw: Any) -> Action:
    protocol = kw.pop("protocol", "postgres")
    return Action(kw.pop("agent", AGENT), protocol, op, target, **kw)


@pytest.fixture
def pdp(clock: FakeClock, sink: CaptureSink) -> PDP:
    return make_pdp(clock=clock, sink=sink)


async def test_low_risk_read_is_allowed_and_audited(pdp: PDP, sink: CaptureSink) -> None:
    d = await pdp.decide(act())
    assert d.effect is Effect.ALLOW
    assert d.risk.tier is Tier.LOW
    assert UUID.match(d.decision_id)
    assert d.policy_version == pdp.policy.current.version
    assert sink.last.decision == d
    assert sink.last.input["action"]["target"] == "public.orders"


async def test_medium_risk_is_held_for_approval(pdp: PDP) -> None:
    d = await pdp.decide(act(Operation.DDL))
    assert (d.risk.tier, d.effect) == (Tier.MEDIUM, Effect.APPROVE)


async def test_high_risk_restricts_and_the_posture_sticks(pdp: PDP, clock: FakeClock) -> None:
    await pdp.store.add_taint(AGENT.id, "prompt_injection_suspected", clock() + 60)
    d = await pdp.decide(act(Operation.DDL))
    assert (d.risk.tier, d.effect, d.restrictions) == (Tier.HIGH, Effect.RESTRICT, ("read_only",))
    assert (await pdp.store.posture(AGENT.id, clock())).restrictions == {"read_only"}
    write = await pdp.decide(act(Operation.WRITE))
    assert write.effect is Effect.DENY
    read = await pdp.decide(act(Operation.READ))
    assert read.effect is Effect.ALLOW, "a read-only agent keeps reading"


async def test_critical_risk_isolates_the_agent(pdp: PDP, clock: FakeClock) -> None:
    await pdp.store.add_taint(AGENT.id, "prompt_injection_suspected", clock() + 60)
    d = await pdp.decide(act(Operation.ADMIN, confidence=0.0))
    assert (d.risk.tier, d.effect) == (Tier.CRITICAL, Effect.ISOLATE)
    assert (await pdp.store.posture(AGENT.id, clock())).isolated
    assert (await pdp.decide(act())).effect is Effect.DENY


async def test_hard_rule_beats_a_low_score(pdp: PDP) -> None:
    d = await pdp.decide(act(threat_matches=("feed:bad.example",)))
    assert d.effect is Effect.DENY
    assert d.reasons == ("threat intel: feed:bad.example",)


async def test_payroll_then_injection_then_new_host_isolates(pdp: PDP) -> None:
    """The sequence DESIGN.md is built around, decided across protocols: a legitimate
    payroll read, then untrusted content, then egress to a new host."""
    payroll = await pdp.decide(
        act(target="public.payroll", labels=frozenset({"financial", "restricted"}))
    )
    assert payroll.effect is Effect.ALLOW
    page = await pdp.decide(
        act(
            Operation.EGRESS,
            "docs.example.com",
            protocol="http",
            taints=frozenset({"untrusted_content"}),
        )
    )
    assert page.effect is Effect.ALLOW
    exfil = await pdp.decide(act(Operation.EGRESS, "paste.example.net", protocol="http"))
    assert exfil.effect is Effect.ISOLATE
    assert "exfiltration pattern" in exfil.reasons[0]


async def test_taint_expires_with_the_configured_ttl(pdp: PDP, clock: FakeClock) -> None:
    await pdp.decide(act(target="public.payroll", labels=frozenset({"restricted"})))
    assert "restricted_data_read" in (await pdp.store.view(AGENT.id, "k", clock())).taints
    clock.advance(901)
    assert not (await pdp.store.view(AGENT.id, "k", clock())).taints


async def test_denied_actions_do_not_taint(pdp: PDP, clock: FakeClock) -> None:
    await pdp.store.restrict(AGENT.id, [], isolate=True)
    await pdp.decide(act(target="public.payroll", labels=frozenset({"restricted"})))
    assert not (await pdp.store.view(AGENT.id, "k", clock())).taints


def _bundle(tmp_path: Path, rego: str, data: dict[str, Any] | None = None) -> Path:
    (tmp_path / "p.rego").write_text("package interlock\nimport rego.v1\n" + rego)
    if data is not None:
        (tmp_path / "data.json").write_text(json.dumps(data))
    return tmp_path


@pytest.mark.parametrize(
    ("rego", "reason"),
    [
        ("decision := 10 / count(input.context.taints)\n", "policy: divide by zero"),
        ("decision := x if { x := input.nothing }\n", "policy: interlock/decision is undefined"),
        ('decision := {"effect": "permit"}\n', "policy: decision.effect must be one of"),
        ("decision := true\n", "policy: decision must be an object"),
        ('decision := {"effect": "allow"}\ndecision := {"effect": "deny"}\n', "policy:"),
    ],
    ids=["error", "undefined", "bad effect", "boolean", "conflict"],
)
async def test_policy_failures_deny_with_the_reason(
    tmp_path: Path, clock: FakeClock, sink: CaptureSink, rego: str, reason: str
) -> None:
    pdp = make_pdp(_bundle(tmp_path, rego), clock=clock, sink=sink)
    d = await pdp.decide(act())
    assert d.effect is Effect.DENY
    assert d.reasons[0].startswith(reason), d.reasons
    assert UUID.match(d.decision_id)
    assert sink.last.decision.decision_id == d.decision_id, "errors are audited too"


async def test_posture_is_enforced_even_if_the_policy_allows(
    tmp_path: Path, clock: FakeClock
) -> None:
    pdp = make_pdp(_bundle(tmp_path, 'decision := {"effect": "allow"}\n'), clock=clock)
    await pdp.store.restrict(AGENT.id, ["read_only", "tool:shell"])
    assert (await pdp.decide(act(Operation.WRITE))).effect is Effect.DENY
    assert (await pdp.decide(act(Operation.TOOL_CALL, "shell"))).effect is Effect.DENY
    assert (await pdp.decide(act(Operation.TOOL_CALL, "search"))).effect is Effect.ALLOW
    await pdp.store.restrict(AGENT.id, [], isolate=True)
    assert (await pdp.decide(act())).effect is Effect.DENY


async def test_malformed_risk_data_denies(tmp_path: Path, clock: FakeClock) -> None:
    bundle = _bundle(
        tmp_path,
        'decision := {"effect": "allow"}\n',
        {"interlock": {"risk": {"weights": {"taint": "lots"}}}},
    )
    d = await make_pdp(bundle, clock=clock).decide(act())
    assert d.effect is Effect.DENY
    assert "risk.weights" in d.reasons[0]


async def test_oversized_details_are_denied(pdp: PDP) -> None:
    d = await pdp.decide(act(details={"columns": [f"c{i}" for i in range(5000)]}))
    assert d.effect is Effect.DENY
    assert "exceed" in d.reasons[0]


def _nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value]
    return value


async def test_details_nested_deeper_than_the_engines_accept_are_denied(pdp: PDP) -> None:
    """The input builder bounds depth itself (the engines then skip their own walk), at
    the same limit an engine applies to a document handed to it directly."""
    # details sits at depth 2 of the input, so "tree" at 3: its innermost list is at
    # depth 32 (allowed) with 30 levels, at 33 with 31.
    allowed = await pdp.decide(act(details={"tree": _nested(MAX_INPUT_DEPTH - 2)}))
    assert allowed.effect is Effect.ALLOW
    doc = {"action": {"details": {"tree": _nested(MAX_INPUT_DEPTH - 1)}}}
    with pytest.raises(PolicyEvaluationError, match="deeper"):
        pdp.policy.current.evaluate(DECISION_ENTRYPOINT, doc)
    denied = await pdp.decide(act(details={"tree": _nested(MAX_INPUT_DEPTH - 1)}))
    assert denied.effect is Effect.DENY
    assert f"nested deeper than {MAX_INPUT_DEPTH}" in denied.reasons[0]


class BrokenStore(MemoryStore):
    async def posture(self, agent_id: str, now: float) -> Any:
        raise ConnectionError("state store down")


async def test_state_store_failure_denies(clock: FakeClock) -> None:
    manager = PolicyManager()
    manager.load()
    pdp = PDP(manager, BrokenStore(clock), CaptureSink(), clock=clock)
    d = await pdp.decide(act())
    assert d.effect is Effect.DENY
    assert d.reasons == ("internal error: ConnectionError",)


async def test_audit_down_denies_above_low_but_lets_low_through(
    pdp: PDP, sink: CaptureSink, clock: FakeClock
) -> None:
    sink.unavailable = True
    low = await pdp.decide(act())
    assert low.effect is Effect.ALLOW
    await pdp.store.add_taint(AGENT.id, "untrusted_content", clock() + 60)
    medium_allowed = await pdp.decide(
        act(Operation.EGRESS, "a.example", protocol="http", confidence=0.5)
    )
    assert medium_allowed.risk.tier is not Tier.LOW
    assert medium_allowed.effect is not Effect.ALLOW


async def test_audit_down_with_fail_open_none_denies_everything(
    clock: FakeClock, sink: CaptureSink
) -> None:
    pdp = make_pdp(clock=clock, sink=sink, audit_fail_open_max_tier=None)
    sink.unavailable = True
    d = await pdp.decide(act())
    assert d.effect is Effect.DENY
    assert d.reasons[-1] == "audit log unavailable"


async def test_identical_decisions_hit_the_cache(pdp: PDP) -> None:
    for _ in range(3):
        await pdp.decide(act())
    assert pdp.cache.hits >= 1


async def test_untrusted_content_raises_the_risk_of_later_sensitive_reads(pdp: PDP) -> None:
    before = await pdp.decide(act(target="public.payroll", labels=frozenset({"financial"})))
    await pdp.store.add_taint(AGENT.id, "prompt_injection_suspected", pdp.clock() + 60)
    after = await pdp.decide(act(target="public.payroll", labels=frozenset({"financial"})))
    assert after.risk.signals["taint"] == 1.0
    assert after.risk.score > before.risk.score
    plain = await pdp.decide(act(target="public.orders"))
    assert plain.risk.signals["taint"] == 0.0  # unlabelled reads are not affected
