"""Source checks and rewrites that keep one policy valid on both engines."""

from __future__ import annotations

import pytest

from interlock.core.rego_text import calls, lacking, spell_out_imports

MODULE = """package t
import rego.v1
import data.interlock
import data.lib.strings as s

a := interlock.decide(input, data.interlock.policy)
b := s.pad("x")  # interlock.decide( in a comment stays
c := "interlock.decide(x)"
d := data.interlock.decide(input, {})
e := input.interlock.decide
f := x.interlock.decide(1)
"""


def test_calls_through_an_import_alias_are_spelled_out() -> None:
    out = spell_out_imports(MODULE)
    assert "a := data.interlock.decide(input, data.interlock.policy)" in out
    assert 'b := data.lib.strings.pad("x")' in out


@pytest.mark.parametrize(
    "line",
    [
        "# interlock.decide( in a comment stays",
        'c := "interlock.decide(x)"',
        "d := data.interlock.decide(input, {})",
        "e := input.interlock.decide",
        "f := x.interlock.decide(1)",
    ],
)
def test_strings_comments_and_other_paths_are_left_alone(line: str) -> None:
    assert line in spell_out_imports(MODULE)


def test_a_module_without_data_imports_is_unchanged() -> None:
    text = "package t\nimport rego.v1\nx := count([1])\n"
    assert spell_out_imports(text) is text


def test_builtins_regorus_lacks_are_found_in_code_only() -> None:
    assert calls('x := io.jwt.decode(t) # crypto.md5("a")\ny := "net.cidr_merge(z)"') == {
        "io.jwt.decode"
    }
    assert lacking({"a.rego": "x := io.jwt.decode_verify(t, {})"}) == "a.rego: io.jwt.decode_verify"
    assert lacking({"a.rego": 'x := glob.match("a", [], "a") # io.jwt.decode(t)'}) is None
