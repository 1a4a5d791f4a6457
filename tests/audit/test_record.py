"""The audit record: every field the issue lists, redaction, and always-encodable values."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from interlock.audit.record import (
    REDACTED,
    _timestamp_fast,
    document,
    encode,
    sanitize,
    timestamp,
)
from interlock.core.model import Action, Agent, Operation
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
