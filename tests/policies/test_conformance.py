"""Conformance of the two Rego engines: one policy text, the same decisions on both.

The bundled policy's own Rego tests, the OPA-Envoy-style policies the ext_authz tests
use, and a corpus of inputs (recorded from the bench workload through a real PDP, and
generated over every value data.json names) must give identical results on regorus and
rego-cpp. A policy edit that only one engine understands fails here.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interlock.bench.pdp import workload
from interlock.core.bundle import bundled_policy_dir, load_bundle
from interlock.core.engine import CompiledPolicy, EngineName
from interlock.core.engines import make_engine
from interlock.core.policy import DECISION_ENTRYPOINT
from interlock.core.regotest import run_tests_on
from interlock.errors import PolicyError
from interlock.testing import CaptureSink, make_pdp

ENGINES: tuple[EngineName, ...] = ("regorus", "rego-cpp")
ENVOY_POLICIES = Path(__file__).resolve().parent.parent / "extauthz" / "policies"
SOURCE = load_bundle(bundled_policy_dir())
CFG: dict[str, Any] = SOURCE.data["interlock"]["policy"]


def _compiled(engine: EngineName, root: Path, entrypoints: list[str]) -> CompiledPolicy:
    # A generous time budget: globs against every protected path take rego-cpp tens of
    # milliseconds, and a loaded machine must not turn a result into a timeout here.
    compiler = make_engine(engine, timeout_ms=5_000)
    assert compiler.name == engine, f"{engine} is not installed"
    return compiler.compile(load_bundle(root), entrypoints)


BUNDLED = {e: _compiled(e, bundled_policy_dir(), [DECISION_ENTRYPOINT]) for e in ENGINES}


def _outcome(policy: CompiledPolicy, entrypoint: str, doc: dict[str, Any]) -> Any:
    try:
        return _reasons_as_sets(policy.evaluate(entrypoint, doc))
    except PolicyError as exc:
        return type(exc).__name__


def _reasons_as_sets(value: Any) -> Any:
    """`reasons` compared as sets: rego-cpp's `sort` puts "a" after "a b" (its defect,
    docs/policy-input.md); every other part of a result must be identical."""
    if isinstance(value, dict):
        return {
            k: sorted(v) if k == "reasons" and isinstance(v, list) else _reasons_as_sets(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_reasons_as_sets(v) for v in value]
    return value


@pytest.mark.parametrize("engine", ENGINES)
def test_the_bundled_rego_tests_pass_on_each_engine(engine: EngineName) -> None:
    outcomes = run_tests_on(SOURCE, engine)
    assert len(outcomes) >= 30
    assert [o for o in outcomes if o.status != "pass"] == []


def test_recorded_inputs_decide_alike() -> None:
    """Every input the bench workload produces through a real PDP, several rounds (so
    taints, first-seen and rates change)."""
    sink = CaptureSink()
    pdp = make_pdp(sink=sink)

    async def run() -> None:
        for _ in range(3):
            for action in workload():
                await pdp.decide(action)

    asyncio.run(run())
    docs = [dict(r.input) for r in sink.records if r.input]
    assert len(docs) >= 30
    for doc in docs:
        results = {e: _outcome(BUNDLED[e], DECISION_ENTRYPOINT, doc) for e in ENGINES}
        assert results["regorus"] == results["rego-cpp"], json.dumps(doc)


_OPS = [
    "read", "write", "ddl", "admin", "exec", "egress", "tool_call", "file_read", "file_write",
    "forward", "connect", "delegate", "secret_read", "prompt", "completion",
]  # fmt: skip
_FLAGS = sorted({f for flags in CFG["forbidden_flags"].values() for f in flags} | {"benign"})
_PATHS = sorted(
    {p for paths in CFG["protected_paths"].values() for p in paths}
    | {"/home/u/notes.txt", "/root/.ssh", "/etc/ssh", "/tmp/x"}
)
_RESTRICTIONS = ["read_only", "no_egress", "no_delegation", "tool:shell", "tool:search"]
_TAINTS = ["untrusted_content", "prompt_injection_suspected", "restricted_data_read"]
_LABELS = sorted(set(CFG["mask"]["labels"]) | {"financial", "restricted"})
_TIERS = ["low", "medium", "high", "critical", "extreme"]


@st.composite
def policy_inputs(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(_OPS))
    protocol = draw(st.sampled_from(["postgres", "http", "ssh", "envoy", "mcp"]))
    target = draw(st.sampled_from(["public.orders", "shell", "api.example.com", *_PATHS]))
    details: dict[str, Any] = {}
    if draw(st.booleans()):
        details["flags"] = draw(st.lists(st.sampled_from(_FLAGS), max_size=3, unique=True))
    if draw(st.booleans()):
        details["reads"] = draw(st.lists(st.sampled_from(_PATHS), max_size=2))
        details["writes"] = draw(st.lists(st.sampled_from(_PATHS), max_size=2))
    if draw(st.booleans()):
        details["effects"] = draw(
            st.lists(st.sampled_from(["write", "egress", "read"]), max_size=2)
        )
    for key in ("globs", "trees", "link_targets", "paths"):
        if draw(st.integers(0, 4)) == 0:
            details[key] = draw(
                st.lists(st.sampled_from([*_PATHS, "/etc/*", "/root/.s*"]), max_size=2)
            )
    return {
        "agent": {
            "id": draw(st.sampled_from(["reporter", "coder", "runner"])),
            "roles": draw(st.lists(st.sampled_from(["analyst", "dev", "pii_reader"]), max_size=2)),
            "owner": "alice@example.com",
            "delegation": [],
            "authn": draw(st.sampled_from(["token", "jwt", "none"])),
        },
        "action": {
            "protocol": protocol,
            "operation": op,
            "target": target,
            "details": details,
            "labels": sorted(draw(st.sets(st.sampled_from(_LABELS), max_size=3))),
            "threat_matches": draw(st.lists(st.sampled_from(["feed:bad.example"]), max_size=1)),
        },
        "context": {
            "taints": sorted(draw(st.sets(st.sampled_from(_TAINTS), max_size=3))),
            "first_seen": draw(st.booleans()),
            "posture": {
                "restrictions": sorted(draw(st.sets(st.sampled_from(_RESTRICTIONS), max_size=2))),
                "isolated": draw(st.booleans()),
            },
        },
        "risk": {
            "score": draw(st.integers(0, 100)),
            "tier": draw(st.sampled_from(_TIERS)),
            "signals": {},
        },
        "time": {"hour": draw(st.integers(0, 23)), "weekday": draw(st.integers(0, 6))},
    }


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=policy_inputs())
def test_generated_inputs_decide_alike(doc: dict[str, Any]) -> None:
    results = {e: _outcome(BUNDLED[e], DECISION_ENTRYPOINT, doc) for e in ENGINES}
    assert results["regorus"] == results["rego-cpp"]


GUARD_CHECK = """package guardcheck
import rego.v1
full := data.interlock.all_deny_reasons(input, data.interlock.policy)
guarded := data.interlock.deny_reasons(input, data.interlock.policy)

# The decision as it was before the shortcuts: isolation, then denial, then the tier.
reference := data.interlock.isolation(input, data.interlock.policy) if {
	count(data.interlock.isolate_reasons(input, data.interlock.policy)) > 0
} else := data.interlock.denial(input, data.interlock.policy) if {
	count(data.interlock.all_deny_reasons(input, data.interlock.policy)) > 0
} else := data.interlock.by_tier(input, data.interlock.policy)

shortcut := data.interlock.decide(input, data.interlock.policy)
"""


@pytest.fixture(scope="module")
def guard_check(tmp_path_factory: pytest.TempPathFactory) -> dict[EngineName, CompiledPolicy]:
    root = tmp_path_factory.mktemp("guardcheck")
    shutil.copytree(bundled_policy_dir(), root, dirs_exist_ok=True)
    (root / "guardcheck.rego").write_text(GUARD_CHECK)
    # Rules the default data leaves idle (no forbidden operations, no path roots) armed.
    data = json.loads((root / "data.json").read_text())
    data["interlock"]["policy"]["forbidden_operations"] = {"postgres": ["ddl"], "ssh": ["forward"]}
    data["interlock"]["policy"]["path_roots"] = {"ssh": ["/home/"]}
    (root / "data.json").write_text(json.dumps(data))
    entrypoints = [
        "guardcheck/full",
        "guardcheck/guarded",
        "guardcheck/reference",
        "guardcheck/shortcut",
    ]
    return {e: _compiled(e, root, entrypoints) for e in ENGINES}


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for key in parents:
        doc = doc[key]
    doc[leaf] = value


# One field each that some deny rule reads, with values that can trip it.
_TRIPS = [
    ("context.posture.isolated", st.just(True)),
    ("context.posture.restrictions", st.lists(st.sampled_from(_RESTRICTIONS), min_size=1)),
    ("agent.authn", st.sampled_from(["none", "token"])),
    ("agent", st.just({"id": "x"})),
    ("action.threat_matches", st.just(["feed:bad.example"])),
    # Operations some rule singles out (forbidden ones of the armed data, file ones).
    ("action.operation", st.sampled_from(["ddl", "forward", "file_read", "file_write", "exec"])),
    ("action.operation", st.sampled_from(_OPS)),
    ("action.protocol", st.sampled_from(["postgres", "http", "ssh", "envoy", "mcp", "sftp"])),
    ("action.target", st.sampled_from(_PATHS)),
    *[
        (
            f"action.details.{key}",
            st.lists(st.sampled_from([*_PATHS, "/etc/*", "/root/.s*"]), min_size=1),
        )
        for key in ("globs", "trees", "link_targets", "paths", "reads", "writes")
    ],
    ("action.details.flags", st.lists(st.sampled_from(_FLAGS), min_size=1)),
    ("action.details.effects", st.lists(st.sampled_from(["write", "egress"]), min_size=1)),
]


@st.composite
def nearly_plain_inputs(draw: st.DrawFn) -> dict[str, Any]:
    """A plain action with one to three fields a deny rule reads changed: where a
    shortcut that forgot one condition would answer "nothing to deny"."""
    doc = draw(policy_inputs())
    doc["agent"]["authn"] = "token"
    doc["action"].update(operation="read", details={}, threat_matches=[])
    doc["action"]["protocol"] = draw(st.sampled_from(["ssh", "postgres", "mcp"]))
    doc["action"]["target"] = draw(st.sampled_from(_PATHS))
    doc["context"]["posture"] = {"restrictions": [], "isolated": False}
    for path, values in draw(st.lists(st.sampled_from(_TRIPS), min_size=1, max_size=3)):
        _set(doc, path, draw(values))
    return doc


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(doc=st.one_of(policy_inputs(), nearly_plain_inputs(), nearly_plain_inputs()))
def test_the_deny_shortcut_never_hides_a_denial(
    guard_check: dict[EngineName, CompiledPolicy], doc: dict[str, Any]
) -> None:
    """`deny_reasons` answers "none" from one guard before evaluating the ten rules, and
    `decide` goes straight to the tier table for an untainted action with nothing to
    deny: on every generated input, and on both engines, each equals the rules evaluated
    in full."""
    for engine, policy in guard_check.items():
        full = _outcome(policy, "guardcheck/full", doc)
        assert _outcome(policy, "guardcheck/guarded", doc) == full, (engine, json.dumps(doc))
        reference = _outcome(policy, "guardcheck/reference", doc)
        assert _outcome(policy, "guardcheck/shortcut", doc) == reference, (engine, json.dumps(doc))


ENVOY_CASES = [
    (
        "envoy_forms.rego",
        "envoy/forms/result",
        {
            "attributes": {"request": {"http": {"method": "POST", "path": "/people"}}},
            "parsed_body": {"firstname": ["Bob"]},
        },
    ),
    (
        "envoy_forms.rego",
        "envoy/forms/result",
        {
            "attributes": {"request": {"http": {"method": "POST", "path": "/uploads"}}},
            "parsed_body": {"kind": ["report"], "manifest": [{"pages": 12}]},
        },
    ),
    (
        "interlock_aware.rego",
        "envoy/aware/allow",
        {
            "interlock": {"agent": {"id": "coder"}, "context": {"taints": []}},
            "parsed_path": ["people"],
        },
    ),
    (
        "interlock_aware.rego",
        "envoy/aware/allow",
        {
            "interlock": {
                "agent": {"id": "coder"},
                "context": {"taints": ["prompt_injection_suspected"]},
            },
            "parsed_path": ["people"],
        },
    ),
]


@pytest.mark.parametrize(("module", "entrypoint", "doc"), ENVOY_CASES)
def test_opa_envoy_policies_decide_alike(
    tmp_path: Path, module: str, entrypoint: str, doc: dict[str, Any]
) -> None:
    (tmp_path / module).write_text((ENVOY_POLICIES / module).read_text())
    results = {e: _outcome(_compiled(e, tmp_path, [entrypoint]), entrypoint, doc) for e in ENGINES}
    assert results["regorus"] == results["rego-cpp"]
    assert not isinstance(results["regorus"], str), results


def test_a_policy_needing_a_builtin_regorus_lacks_is_served_by_rego_cpp(tmp_path: Path) -> None:
    """OPA's Envoy example verifies JWTs with io.jwt.decode_verify, which regorus lacks:
    the bundle compiles on rego-cpp instead, and the compiled policy says so (the audit
    record names the engine that decided)."""
    (tmp_path / "envoy_authz.rego").write_text((ENVOY_POLICIES / "envoy_authz.rego").read_text())
    compiled = make_engine("regorus").compile(load_bundle(tmp_path), ["envoy/authz/result"])
    assert compiled.engine_name == "rego-cpp"
    denied = compiled.evaluate("envoy/authz/result", {"attributes": {"request": {"http": {}}}})
    assert denied["allowed"] is False
    assert denied["http_status"] == 401
