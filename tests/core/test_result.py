"""The decision result must have exactly the documented shape."""

from __future__ import annotations

from typing import Any

import pytest

from interlock.core.model import Effect, Risk, Tier
from interlock.core.result import parse_result
from interlock.errors import MalformedResult

RISK = Risk(10, Tier.LOW)


def parse(value: Any) -> Any:
    return parse_result(value, decision_id="d", risk=RISK, policy_version="v", now=1.0)


def test_full_result_parses() -> None:
    d = parse(
        {
            "effect": "restrict",
            "reasons": ["r"],
            "restrictions": ["no_egress"],
            "obligations": [{"type": "mask", "columns": ["a.b.c"]}],
        }
    )
    assert d.effect is Effect.RESTRICT
    assert d.restrictions == ("no_egress",)
    assert d.obligations[0].type == "mask"
    assert list(d.obligations[0].params["columns"]) == ["a.b.c"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "must be an object"),
        ("allow", "must be an object"),
        ({}, "effect must be one of"),
        ({"effect": "permit"}, "effect must be one of"),
        ({"effect": "allow", "reason": ["typo"]}, "unknown keys: reason"),
        ({"effect": "allow", "reasons": "not a list"}, "reasons must be a list"),
        ({"effect": "allow", "reasons": [1]}, "reasons must be a list of strings"),
        ({"effect": "restrict"}, "needs at least one restriction"),
        ({"effect": "restrict", "restrictions": ["sudo"]}, "unknown restriction"),
        ({"effect": "allow", "obligations": {}}, "obligations must be a list"),
        ({"effect": "allow", "obligations": [{"columns": []}]}, "with a type"),
        ({"effect": "allow", "reasons": ["r"] * 65}, "more than 64"),
    ],
)
def test_malformed_results_are_rejected(value: Any, message: str) -> None:
    with pytest.raises(MalformedResult, match=message):
        parse(value)
