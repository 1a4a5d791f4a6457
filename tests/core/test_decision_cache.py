"""The decision cache is exact: with it and without it, every decision is the same."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interlock.core.bundle import bundled_policy_dir
from interlock.core.context import ContextView, MemoryStore, Posture
from interlock.core.decision_cache import fact_key, risk_key, value_key
from interlock.core.model import Action, Agent, Decision, Operation, Risk, Tier
from interlock.core.pdp import PDP
from interlock.core.policy import PolicyManager
from interlock.testing import CaptureSink, FakeClock

AGENTS = [
    Agent("reporter", ("analyst",), "alice@example.com", authn="token"),
    Agent("coder", ("dev", "pii_reader"), "bob@example.com", ("planner",), authn="jwt"),
    Agent("anon"),
]
ECHO = """package interlock
import rego.v1

said := concat("", ["x is ", json.marshal(input.action.details.x)])

decision := {"effect": "allow", "reasons": [said]} if {
	input.action.details.x
} else := {"effect": "deny", "reasons": ["no x"]}
"""
"""A bundle whose answer shows the type of a detail: `true` and `1` must not share an entry."""


def _bundles(root: Path) -> list[Path]:
    """The bundled policy, a variant with different data, and a type-echoing policy."""
    plain = root / "plain"
    shutil.copytree(bundled_policy_dir(), plain, ignore=shutil.ignore_patterns("*.py"))
    variant = root / "variant"
    shutil.copytree(plain, variant)
    data = json.loads((variant / "data.json").read_text())
    data["interlock"]["policy"]["forbidden_operations"] = {"postgres": ["write"]}
    data["interlock"]["policy"]["mask"]["exempt_roles"] = []
    (variant / "data.json").write_text(json.dumps(data))
    echo = root / "echo"
    echo.mkdir()
    (echo / "p.rego").write_text(ECHO)
    return [plain, variant, echo]


actions = st.builds(
    Action,
    agent=st.sampled_from(AGENTS),
    protocol=st.sampled_from(["postgres", "ssh", "envoy"]),
    operation=st.sampled_from([Operation.READ, Operation.WRITE, Operation.EGRESS, Operation.EXEC]),
    target=st.sampled_from(["public.orders", "api.example.com", "/etc/shadow"]),
    details=st.fixed_dictionaries(
        {},
        optional={
            "flags": st.lists(st.sampled_from(["unparsed", "pipe_to_shell", "ok"]), max_size=2)
        },
    ),
    labels=st.frozensets(st.sampled_from(["pii", "restricted", "financial"]), max_size=2),
)
XS = [True, 1, 1.0, "1", False, 0, (1,), {"a": 1}]
"""Values of one detail that Python finds equal (True == 1 == 1.0) and Rego does not."""

decide = st.tuples(st.just("decide"), st.tuples(st.integers(0, 1), st.sampled_from(XS)))
reload = st.tuples(st.just("reload"), st.integers(0, 2))
steps = st.lists(
    st.one_of(
        decide,
        decide,
        decide,
        st.tuples(st.just("restrict"), st.sampled_from(["read_only", "no_egress"])),
        st.tuples(st.just("restore"), st.none()),
        st.tuples(st.just("taint"), st.sampled_from(["untrusted_content", "restricted_data_read"])),
        st.tuples(st.just("wait"), st.sampled_from([1.0, 120.0, 4000.0])),
        reload,
        reload,
    ),
    min_size=10,
    max_size=30,
)
"""A script over a pool of two actions, so the same action comes back (and hits)."""


def _shape(d: Decision) -> tuple[Any, ...]:
    return (d.effect, d.reasons, d.restrictions, d.obligations, d.risk, d.policy_version, d.time)


async def _replay(
    bundles: list[Path], start: int, pool: list[Action], script: list[tuple[str, Any]], cache: int
) -> list[Any]:
    clock = FakeClock()
    manager = PolicyManager(bundles[start])
    manager.load()
    pdp = PDP(manager, MemoryStore(clock), CaptureSink(), clock=clock, cache_size=cache)
    agent = AGENTS[0].id
    seen: list[Any] = []
    for kind, arg in script:
        if kind == "decide":
            base = pool[arg[0] % len(pool)]
            action = replace(base, details={**base.details, "x": arg[1]})
            seen.append(_shape(await pdp.decide(action)))
        elif kind == "restrict":
            await pdp.store.restrict(agent, (arg,), reason="test")
        elif kind == "restore":
            await pdp.store.restore(agent)
        elif kind == "taint":
            await pdp.store.add_taint(agent, arg, clock() + 600)
        elif kind == "wait":
            clock.advance(arg)
        else:
            manager.load_from(bundles[arg])
    return seen


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.integers(0, 2), pool=st.lists(actions, min_size=1, max_size=2), script=steps)
def test_cached_and_uncached_decisions_are_identical(
    tmp_path_factory: Any, start: int, pool: list[Action], script: list[tuple[str, Any]]
) -> None:
    bundles = _bundles(tmp_path_factory.mktemp("bundles"))
    cached = asyncio.run(_replay(bundles, start, pool, script, 4096))
    uncached = asyncio.run(_replay(bundles, start, pool, script, 0))
    assert cached == uncached


def test_python_equal_values_of_other_types_get_other_keys() -> None:
    assert len({value_key(v) for v in (True, 1, 1.0, "1", None, False, 0, (1,))}) == 8
    assert value_key({"a": (1, True)}) == value_key({"a": (1, True)})


def test_a_repeated_action_hits_and_a_posture_change_misses() -> None:
    clock = FakeClock()
    manager = PolicyManager()
    manager.load()
    pdp = PDP(manager, MemoryStore(clock), CaptureSink(), clock=clock)
    action = Action(AGENTS[0], "postgres", Operation.READ, "public.orders")

    async def run() -> None:
        for _ in range(3):  # the first one is also the first time this target is seen
            await pdp.decide(action)
        assert (pdp.cache.hits, pdp.cache.misses) == (1, 2)
        await pdp.store.restrict(AGENTS[0].id, ("no_egress",), reason="test")
        await pdp.decide(action)
        assert pdp.cache.misses == 3

    asyncio.run(run())


def test_the_key_holds_every_fact_the_input_is_built_from() -> None:
    """Changing any one fact the policy input holds changes the key."""
    act: dict[str, Any] = {
        "agent": AGENTS[1], "protocol": "postgres", "operation": Operation.READ, "target": "t",
        "details": {"a": 1}, "labels": frozenset({"pii"}),
    }  # fmt: skip
    facts: dict[str, Any] = {
        "posture": Posture(), "view": ContextView(), "risk": Risk(5, Tier.LOW, {"rate": 0.1}),
        "now": 0.0,
    }  # fmt: skip

    def key(**changes: Any) -> Any:
        a = {k: changes.get(k, v) for k, v in act.items()}
        extra = {"threat_matches": changes["threat_matches"]} if "threat_matches" in changes else {}
        f = {k: changes.get(k, v) for k, v in facts.items()}
        risk = risk_key(f["risk"])
        return fact_key(Action(**a, **extra), f["posture"], f["view"], risk, f["now"])

    variants = [
        key(agent=AGENTS[0]), key(protocol="ssh"), key(operation=Operation.WRITE),
        key(target="u"), key(details={"a": True}), key(labels=frozenset()),
        key(threat_matches=("feed",)), key(posture=Posture(frozenset({"read_only"}))),
        key(posture=Posture(isolated=True)),
        key(view=ContextView(taints=frozenset({"untrusted_content"}))),
        key(view=ContextView(first_seen=False)), key(risk=Risk(6, Tier.LOW, {"rate": 0.1})),
        key(risk=Risk(5, Tier.MEDIUM, {"rate": 0.1})), key(risk=Risk(5, Tier.LOW, {"rate": 0.2})),
        key(now=3600.0), key(now=86400.0 * 3),
    ]  # fmt: skip
    assert len({key(), *variants}) == len(variants) + 1
