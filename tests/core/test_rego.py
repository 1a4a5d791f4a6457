"""Both Rego engines: results, every failure mode, and hostile inputs, alike on each."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interlock.core.bundle import load_bundle
from interlock.core.engine import CompiledPolicy, EngineName
from interlock.core.engines import make_engine
from interlock.errors import (
    BundleError,
    PolicyEvaluationError,
    PolicyTimeout,
    PolicyUndefined,
)

POLICY = """package t
import rego.v1

default allow := false
allow if input.x == 1

ratio := 10 / input.d

echo := input
"""


DEEP: Any = 1
for _ in range(40):
    DEEP = [DEEP]


ENGINES: list[EngineName] = ["regorus", "rego-cpp"]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> EngineName:
    name: EngineName = request.param
    return name


def compile_text(
    tmp_path: Path, text: str, entrypoints: list[str], engine: EngineName, **kw: Any
) -> CompiledPolicy:
    (tmp_path / "p.rego").write_text(text)
    compiler = make_engine(engine, **kw)
    assert compiler.name == engine
    return compiler.compile(load_bundle(tmp_path), entrypoints)


@pytest.fixture
def policy(tmp_path: Path, engine: EngineName) -> CompiledPolicy:
    return compile_text(tmp_path, POLICY, ["t/allow", "t/ratio", "t/echo"], engine)


def test_evaluates_entrypoints(policy: CompiledPolicy) -> None:
    assert policy.evaluate("t/allow", {"x": 1}) is True
    assert policy.evaluate("t/allow", {"x": 2}) is False
    assert policy.evaluate("t/ratio", {"d": 4}) == 2.5


def test_builtin_error_is_an_evaluation_error_not_undefined(policy: CompiledPolicy) -> None:
    with pytest.raises(PolicyEvaluationError, match="divide by zero"):
        policy.evaluate("t/ratio", {"d": 0})


def test_missing_input_is_undefined(policy: CompiledPolicy) -> None:
    with pytest.raises(PolicyUndefined):
        policy.evaluate("t/ratio", {})


def test_entrypoint_not_compiled_is_an_error(policy: CompiledPolicy) -> None:
    with pytest.raises(PolicyEvaluationError, match="not compiled"):
        policy.evaluate("t/nope", {})


def test_input_round_trips_json_types(policy: CompiledPolicy) -> None:
    doc = {
        "s": "héllo ✓",
        "i": -7,
        "f": 1.5,
        "b": True,
        "n": None,
        "l": [1, "a", [2]],
        "o": {"k": {"v": False}},
        "big": 2**70,
    }
    out = policy.evaluate("t/echo", doc)
    assert out["s"] == "héllo ✓"
    assert out["l"] == [1, "a", [2]]
    assert out["o"] == {"k": {"v": False}}
    assert out["n"] is None
    assert out["b"] is True
    assert out["big"] == pytest.approx(2**70)


@pytest.mark.parametrize(
    "doc",
    [
        {"bad": object()},
        {"surrogate": "\ud800"},
        {"deep": DEEP},
    ],
    ids=["non-json value", "lone surrogate", "too deep"],
)
def test_hostile_inputs_are_refused_not_crashed(
    policy: CompiledPolicy, doc: dict[str, Any]
) -> None:
    with pytest.raises(PolicyEvaluationError, match="bad policy input"):
        policy.evaluate("t/echo", doc)
    assert policy.evaluate("t/allow", {"x": 1}) is True


def test_slow_evaluation_is_discarded(tmp_path: Path, engine: EngineName) -> None:
    slow = compile_text(tmp_path, POLICY, ["t/allow"], engine, timeout_ms=0.000001)
    with pytest.raises(PolicyTimeout, match="budget"):
        slow.evaluate("t/allow", {"x": 1})


class _Descheduled(dict[str, Any]):
    """An input whose reading is interrupted for 30 ms, as a thread is by a loaded
    machine's scheduler or a waiting GIL hand-off (rego-cpp reads the input while timed)."""

    def items(self) -> Any:
        time.sleep(0.03)
        return super().items()


def test_time_spent_waiting_is_not_evaluation_time(tmp_path: Path) -> None:
    """The budget counts the evaluating thread's CPU time, not the wall clock. (regorus
    is timed only around its own calls, which hold the GIL, after the input is encoded.)"""
    policy = compile_text(tmp_path, POLICY, ["t/allow"], "rego-cpp", timeout_ms=10)
    started = time.perf_counter()
    assert policy.evaluate("t/allow", _Descheduled(x=1)) is True
    assert time.perf_counter() - started > 0.01


def test_syntax_error_fails_compile_with_location(tmp_path: Path, engine: EngineName) -> None:
    with pytest.raises(BundleError, match=r"p\.rego:\d"):
        compile_text(tmp_path, "package t\nallow := {\n", ["t/allow"], engine)


def test_with_keyword_is_refused_in_policy_modules(tmp_path: Path, engine: EngineName) -> None:
    """On both engines: a policy must stay valid for either, and rego-cpp can crash on it."""
    text = POLICY + 'w if allow with input as {"x": 1}\n'
    with pytest.raises(BundleError, match="`with` keyword"):
        compile_text(tmp_path, text, ["t/allow"], engine)


def test_with_in_a_comment_is_fine(tmp_path: Path, engine: EngineName) -> None:
    text = POLICY + "# with input as {...} is avoided\n"
    compiled = compile_text(tmp_path, text, ["t/allow"], engine)
    assert compiled.evaluate("t/allow", {"x": 1}) is True


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_any_json_input_yields_a_value_or_a_policy_error(
    tmp_path_factory: Any, engine: EngineName, doc: dict[str, Any]
) -> None:
    policy = _shared_policy(tmp_path_factory, engine)
    try:
        result = policy.evaluate("t/allow", doc)
    except PolicyEvaluationError:
        return
    assert isinstance(result, bool)
    x = doc.get("x")
    if type(x) is int and x == 1:
        assert result is True
    if "x" not in doc:
        assert result is False


_SHARED: dict[str, CompiledPolicy] = {}


def _shared_policy(factory: Any, engine: EngineName) -> CompiledPolicy:
    if engine not in _SHARED:
        root = factory.mktemp("shared")
        (root / "p.rego").write_text(POLICY)
        _SHARED[engine] = make_engine(engine).compile(load_bundle(root), ["t/allow"])
    return _SHARED[engine]
