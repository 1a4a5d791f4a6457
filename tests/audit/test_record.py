"""The audit record: every field the issue lists, redaction, and always-encodable values."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from interlock.audit.record import (
    REDACTED,
    SECRET_KEY,
    _timestamp_fast,
    document,
    encode,
    sanitize,
    timestamp,
)
from interlock.core.canonical import canonical_json
from interlock.core.model import Action, Agent, Operation
from interlock.core.record import DecisionRecord
from interlock.testing import CaptureSink, make_pdp


async def test_record_has_the_documented_fields() -> None:
    sink = CaptureSink()
    pdp = make_pdp(sink=sink)
    agent = Agent("reporter", ("analyst",), "alice@example.com", ("planner",), "jwt")
    await pdp.decide(
        Action(
            agent,
            "http",
            Operation.PROMPT,
            "api.llm.example",
            {"model": "m", "Authorization": "Bearer abc", "nested": {"api_key": "k", "ok": 1}},
            labels=frozenset({"pii"}),
            parents=("p1",),
            prompt_hash="ab" * 32,
            prompt_text="hello",
        )
    )
    rec = document(sink.last)
    assert set(rec) == {
        "v",
        "decision_id",
        "time",
        "agent",
        "action",
        "prompt",
        "parents",
        "context",
        "time_features",
        "policy_version",
        "policy_engine",
        "risk",
        "effect",
        "reasons",
        "restrictions",
        "obligations",
        "approver",
        "enforced",
        "shadow",
    }
    assert rec["enforced"] is True
    assert rec["shadow"] == []
    assert rec["agent"] == {
        "id": "reporter",
        "roles": ["analyst"],
        "owner": "alice@example.com",
        "delegation": ["planner"],
        "authn": "jwt",
    }
    assert rec["action"]["details"] == {
        "model": "m",
        "Authorization": REDACTED,
        "nested": {"api_key": REDACTED, "ok": 1},
    }
    assert rec["prompt"] == {"hash": "ab" * 32, "text": "hello"}
    assert rec["parents"] == ["p1"]
    assert rec["action"]["labels"] == ["pii"]
    assert rec["time"].endswith("Z")
    assert set(rec["risk"]) == {"score", "tier", "signals"}


def test_sanitize_makes_hostile_values_encodable() -> None:
    value = sanitize(
        {
            "big": 2**64,
            "nan": float("nan"),
            "lone": "\ud800x",
            "one": 1.0,
            "set": {"b", "a"},
            "obj": object(),
            "deep": [[[[1]]]],
        }
    )
    assert value["big"] == str(2**64)
    assert value["nan"] == "nan"
    assert value["lone"] == "?x"
    assert value["one"] == 1
    assert isinstance(value["one"], int)
    assert value["set"] == ["a", "b"]
    assert isinstance(value["obj"], str)
    json.dumps(value)


async def test_encoding_is_stable() -> None:
    sink = CaptureSink()
    pdp = make_pdp(sink=sink)
    await pdp.decide(Action(Agent("a", authn="token"), "postgres", Operation.READ, "t"))
    rec = sink.last
    assert encode(rec) == encode(rec)
    assert json.loads(encode(rec))["decision_id"] == rec.decision.decision_id


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(
        st.floats(0, 2**35, allow_nan=False),
        # Times whose microseconds end in exactly half: where rounding rules differ.
        st.builds(lambda s, u: s + (u + 0.5) / 1e6, st.integers(0, 2**33), st.integers(0, 10**6)),
        st.floats(-(2**33), 0, allow_nan=False),
    )
)
@example(1e-7)
@example(0.9999995)
@example(1700000000.9999996)
@example(253402300799.9999995)
def test_the_fast_timestamp_is_the_timestamp(t: float) -> None:
    """The encoder formats each second once and rounds the microseconds itself: for every
    time it must print what datetime prints (time 0 to the year 9999 and beyond)."""
    assert math.isfinite(t)
    try:
        expected = timestamp(t)
    except (ValueError, OverflowError, OSError) as exc:  # past the year 9999
        with pytest.raises(type(exc)):
            _timestamp_fast(t)
        return
    assert _timestamp_fast(t) == expected


def _reference(value: Any, depth: int = 0) -> Any:
    """`sanitize` as docs/audit.md defines it, one call per value: the oracle for the
    in-place fast cases of the real one."""
    if isinstance(value, str) and type(value) is str:
        return value if value.isascii() else value.encode("utf-8", "replace").decode()
    if depth > 32:
        return "[too deep]"
    if type(value) is int:
        return value if abs(value) <= 2**53 - 1 else str(value)
    if value is None or type(value) is bool:
        return value
    if type(value) is float:
        if not math.isfinite(value):
            return str(value)
        return int(value) if value.is_integer() and abs(value) <= 2**53 - 1 else value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            key = k if type(k) is str and k.isascii() else _reference(str(k))
            out[key] = REDACTED if SECRET_KEY.search(key) else _reference(v, depth + 1)
        return out
    if type(value) in (list, tuple):
        return [_reference(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return [_reference(v, depth + 1) for v in sorted(value, key=str)]
    return _reference(str(value), depth) if isinstance(value, str) else str(value)


_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats()
    | st.text(max_size=4)
    | st.sampled_from(["\ud800", "caf\u00e9", "x"])
)
_keys = st.text(max_size=5) | st.sampled_from(["password", "Token", "api_key", "é", "k"])


def _nest(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(children, max_size=3)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(_keys, children, max_size=3)
        | st.dictionaries(_keys, children, max_size=3).map(MappingProxyType)
        | st.frozensets(st.text(max_size=3), max_size=3)
    )


def _deep(value: Any, levels: int) -> Any:
    for i in range(levels):
        value = [value] if i % 2 else {"k": value}
    return value


@settings(max_examples=500, deadline=None)
@given(st.recursive(_leaves, _nest, max_leaves=25), st.integers(0, 36))
def test_sanitize_equals_its_one_call_per_value_definition(value: Any, levels: int) -> None:
    """Wrapped 0 to 36 levels deep, so that every kind of value also meets the depth
    limit (32) at every position."""
    wrapped = _deep(value, levels)
    expected = _reference(wrapped)
    got = sanitize(wrapped)
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)


_documents = st.dictionaries(_keys, st.recursive(_leaves, _nest, max_leaves=8), max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    contexts=st.lists(_documents, min_size=1, max_size=3),
    signals=st.lists(_documents, min_size=1, max_size=3),
    picks=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=8),
)
def test_a_record_sharing_parts_with_earlier_ones_encodes_as_its_full_document(
    contexts: list[dict[str, Any]],
    signals: list[dict[str, Any]],
    picks: list[tuple[int, int]],
) -> None:
    """The encoder remembers the documents of the context and signals objects it has
    seen (cached decisions share them): whatever a record shares with earlier ones, its
    bytes are those of its complete document encoded the slow, checked way."""
    base = _one_record()
    for c, s in picks:
        context, sig = contexts[c % len(contexts)], signals[s % len(signals)]
        decision = dataclasses.replace(
            base.decision, risk=dataclasses.replace(base.decision.risk, signals=sig)
        )
        rec = dataclasses.replace(base, decision=decision, input={"context": context})
        assert encode(rec) == canonical_json(document(rec))


_base: list[DecisionRecord] = []


def _one_record() -> DecisionRecord:
    if not _base:
        sink = CaptureSink()
        asyncio.run(
            make_pdp(sink=sink).decide(
                Action(Agent("a", authn="token"), "postgres", Operation.READ, "t")
            )
        )
        _base.append(sink.last)
    return _base[0]
