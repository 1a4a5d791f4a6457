"""Our JCS encoder against the reference `rfc8785` package, on generated values."""

from __future__ import annotations

import math
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.audit.canonical import CanonicalizationError, canonical_json

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
