"""Our JCS encoder against the reference `rfc8785` package, on generated values."""

from __future__ import annotations

import math
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.audit.record import build, encode, sanitize
from interlock.core.canonical import CanonicalizationError, canonical_json
from interlock.core.model import Action, Agent, Decision, Effect, Operation, Risk, Tier
from interlock.core.record import DecisionRecord

safe_ints = st.integers(-(2**53) + 1, 2**53 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
keys = st.text(max_size=6) | st.sampled_from(["a", "b", "\u00e9", "\U0001f600", "\ue000", "A"])
values = st.recursive(
    st.none() | st.booleans() | safe_ints | finite | st.text(max_size=12),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(keys, c, max_size=5),
    max_leaves=25,
)


@settings(max_examples=800, deadline=None)
@given(values)
def test_matches_the_reference_implementation(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "x",
    [
        1e21,
        1e-7,
        1.5e-6,
        5e-324,
        1.7976931348623157e308,
        0.1,
        100.0,
        -0.0,
        123456789.125,
        2.5e25,
        1e16,
        9007199254740993.0,
    ],
)
def test_number_formatting_matches_ecmascript(x: float) -> None:
    assert canonical_json(x) == rfc8785.dumps(x)


def test_non_bmp_keys_sort_by_utf16_code_units() -> None:
    value = {"\U0001f600": 1, "\ue000": 2}
    assert canonical_json(value) == rfc8785.dumps(value)
    assert canonical_json(value).index("\U0001f600".encode()) < canonical_json(value).index(
        "\ue000".encode()
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, 2**53, {1: "x"}, object(), "\ud800"])
def test_values_outside_i_json_are_refused(bad: Any) -> None:
    with pytest.raises(CanonicalizationError):
        canonical_json(bad)


def test_without_orjson_the_same_bytes_come_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wheel is a dependency, but a platform without it keeps a pure, equal encoder."""
    from interlock.core import canonical

    samples = [{"b": [1, 0.5, "\u00e9\U0001f600"], "a": None}, {"\U0001f600": 1, "\ue000": 2}, 1e16]
    fast = [canonical_json(v) for v in samples]
    monkeypatch.setattr(canonical, "orjson", None)
    assert [canonical_json(v) for v in samples] == fast == [rfc8785.dumps(v) for v in samples]


detail_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(keys, c, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    details=st.dictionaries(
        keys | st.sampled_from(["password", "token"]), detail_values, max_size=5
    ),
    signals=st.dictionaries(st.sampled_from(["rate", "taint", "x"]), finite, max_size=3),
    agent=st.text(max_size=8),
    labels=st.frozensets(st.text(max_size=5), max_size=3),
    taints=st.lists(st.text(max_size=5), max_size=3),
    when=st.floats(min_value=-1e10, max_value=1e10) | st.sampled_from([5.9999997, 0.0]),
)
def test_records_encode_to_the_reference_bytes_of_their_document(
    details: dict[str, Any],
    signals: dict[str, float],
    agent: str,
    labels: frozenset[str],
    taints: list[str],
    when: float,
) -> None:
    """The one-walk fast path (orjson over a document sanitized once, memoised signals,
    the time formatted once per second) gives exactly the RFC 8785 bytes of the
    documented record, for any details, signals, identities, taints and times."""
    rec = DecisionRecord(
        Decision("d", Effect.ALLOW, Risk(5, Tier.LOW, signals), "v", ("r",), time=when),
        Action(Agent(agent or "a"), "postgres", Operation.READ, "t", details, labels),
        {"context": {"taints": taints}, "time": {"hour": 1}},
        engine="regorus 0",
    )
    try:
        expected = rfc8785.dumps(sanitize(build(rec)))
    except rfc8785.CanonicalizationError:
        return  # the reference refuses it (a lone surrogate in a trusted field)
    assert encode(rec) == expected
