"""The rego-cpp engine: results, every failure mode, the cache, and hostile inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.core.bundle import load_bundle
from interlock.core.rego import RegoEngine, RegoPolicy
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


def compile_text(tmp_path: Path, text: str, entrypoints: list[str], **kw: Any) -> RegoPolicy:
    (tmp_path / "p.rego").write_text(text)
    return RegoEngine(**kw).compile(load_bundle(tmp_path), entrypoints)


@pytest.fixture
def policy(tmp_path: Path) -> RegoPolicy:
    return compile_text(tmp_path, POLICY, ["t/allow", "t/ratio", "t/echo"], cache_size=0)


def test_evaluates_entrypoints(policy: RegoPolicy) -> None:
    assert policy.evaluate("t/allow", {"x": 1}) is True
    assert policy.evaluate("t/allow", {"x": 2}) is False
    assert policy.evaluate("t/ratio", {"d": 4}) == 2.5


def test_builtin_error_is_an_evaluation_error_not_undefined(policy: RegoPolicy) -> None:
    with pytest.raises(PolicyEvaluationError, match="divide by zero"):
        policy.evaluate("t/ratio", {"d": 0})


def test_missing_input_is_undefined(policy: RegoPolicy) -> None:
    with pytest.raises(PolicyUndefined):
        policy.evaluate("t/ratio", {})


def test_entrypoint_not_compiled_is_an_error(policy: RegoPolicy) -> None:
    with pytest.raises(PolicyEvaluationError, match="not compiled"):
        policy.evaluate("t/nope", {})


def test_input_round_trips_json_types(policy: RegoPolicy) -> None:
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
def test_hostile_inputs_are_refused_not_crashed(policy: RegoPolicy, doc: dict[str, Any]) -> None:
    with pytest.raises(PolicyEvaluationError, match="bad policy input"):
        policy.evaluate("t/echo", doc)
    assert policy.evaluate("t/allow", {"x": 1}) is True


def test_slow_evaluation_is_discarded(tmp_path: Path) -> None:
    slow = compile_text(tmp_path, POLICY, ["t/allow"], cache_size=0, timeout_ms=0.000001)
    with pytest.raises(PolicyTimeout, match="budget"):
        slow.evaluate("t/allow", {"x": 1})


def test_cache_answers_identical_inputs_and_misses_different_ones(tmp_path: Path) -> None:
    cached = compile_text(tmp_path, POLICY, ["t/allow"], cache_size=2)
    assert cached.evaluate("t/allow", {"x": 1}) is True
    assert cached.evaluate("t/allow", {"x": 1}) is True
    assert (cached.cache_hits, cached.cache_misses) == (1, 1)
    assert cached.evaluate("t/allow", {"x": True}) is False
    assert cached.cache_misses == 2


def test_cache_is_bounded(tmp_path: Path) -> None:
    cached = compile_text(tmp_path, POLICY, ["t/allow"], cache_size=2)
    for x in range(5):
        cached.evaluate("t/allow", {"x": x})
    cached.evaluate("t/allow", {"x": 0})
    assert cached.cache_hits == 0
    cached.evaluate("t/allow", {"x": 4})
    assert cached.cache_hits == 1


def test_errors_are_not_cached(tmp_path: Path) -> None:
    cached = compile_text(tmp_path, POLICY, ["t/ratio"], cache_size=8)
    for _ in range(2):
        with pytest.raises(PolicyEvaluationError):
            cached.evaluate("t/ratio", {"d": 0})
    assert cached.cache_hits == 0


def test_syntax_error_fails_compile_with_location(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"p.rego:2"):
        compile_text(tmp_path, "package t\nallow := {\n", ["t/allow"])


def test_with_keyword_is_refused_in_policy_modules(tmp_path: Path) -> None:
    text = POLICY + 'w if allow with input as {"x": 1}\n'
    with pytest.raises(BundleError, match="`with` keyword"):
        compile_text(tmp_path, text, ["t/allow"])


def test_with_in_a_comment_is_fine(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, POLICY + "# with input as {...} is avoided\n", ["t/allow"])
    assert compiled.evaluate("t/allow", {"x": 1}) is True


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None)
@given(doc=st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_any_json_input_yields_a_value_or_a_policy_error(
    tmp_path_factory: Any, doc: dict[str, Any]
) -> None:
    policy = _shared_policy(tmp_path_factory)
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


_SHARED: list[RegoPolicy] = []


def _shared_policy(factory: Any) -> RegoPolicy:
    if not _SHARED:
        root = factory.mktemp("shared")
        (root / "p.rego").write_text(POLICY)
        _SHARED.append(RegoEngine(cache_size=0).compile(load_bundle(root), ["t/allow"]))
    return _SHARED[0]
