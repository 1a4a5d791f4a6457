"""Names and strings rewritten as PostgreSQL's lexer reads them (issue 18, class 2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.classify.sqlident import (
    LexError,
    decode_unicode,
    fold,
    normalise,
    qualified_name,
    truncate,
)
from interlock.classify.sqlsplit import split


@pytest.mark.parametrize(
    ("sql", "plain"),
    [
        ('SELECT U&"\\0073sn" FROM payroll', 'SELECT "ssn" FROM payroll'),
        ('select u&"\\+000073sn"', 'select "ssn"'),
        ("select U&\"!0073sn\" UESCAPE '!'", 'select "ssn"'),
        ("select U&\"#0073sn\" /* c */ uescape -- c\n '#'", 'select "ssn"'),
        ('select U&"a""b"', 'select "a""b"'),
        ('select U&"\\\\"', 'select "\\"'),
        ("select U&'\\0041'", "select 'A'"),
        ("select U&'x\\0027'", "select 'x'''"),
        ("select U&'\\D83D\\DE00'", "select '\U0001f600'"),
        ("select E'\\x41\\102\\u0043\\n'", "select 'ABC\n'"),
        ("select e'it\\'s'", "select 'it''s'"),
        ("select $$it's$$, $t$x$t$", "select 'it''s', 'x'"),
        ("select 'a'\n'b'", "select 'ab'"),
        ("select 'a' -- c\n  'b'", "select 'ab'"),
        ("select E'\\x41'\n'\\x42'", "select 'AB'"),
        ("select U&'\\00'\n'41'", "select 'A'"),
        ("select N'x'", "select 'x'"),
        ("select B'101', X'ff'", "select B'101', X'ff'"),
        ('select u & "x"', 'select u & "x"'),
        ("select 1", "select 1"),
    ],
)
def test_spellings_become_plain(sql: str, plain: str) -> None:
    assert normalise(sql) == plain


@pytest.mark.parametrize(
    "sql",
    [
        'select U&"\\00zz"',
        'select U&"\\D83D"',
        'select U&"\\DE00x"',
        'select U&"\\0000"',
        'select U&"\\+110000"',
        "select U&\"x\" UESCAPE 'ab'",
        "select U&\"x\" UESCAPE '+'",
        "select U&\"x\" UESCAPE 'a'",
        "select U&\"x\" UESCAPE E'!'",
        'select U&"x" UESCAPE',
        'select ""',
        'select U&""',
        "select E'\\u12'",
        "select E'\\v'",
        "select E'\\000'",
        "select E'\\xff'",
    ],
)
def test_what_the_server_would_reject_or_read_differently_is_refused(sql: str) -> None:
    with pytest.raises(LexError):
        normalise(sql)


def test_long_identifiers_are_truncated_like_the_server() -> None:
    name = "s" * 70
    assert normalise(f'select "{name}"') == f'select "{"s" * 63}"'
    assert fold("A" * 70) == "a" * 63
    # Truncation never splits a character: 31 two-byte letters and one more byte left.
    assert truncate("é" * 40) == "é" * 31


def test_folding_is_ascii_only() -> None:
    assert fold("SSN") == "ssn"
    assert fold("ÉTÉ") == "ÉtÉ"


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("payroll", ("payroll",)),
        ("PUBLIC.Payroll", ("public", "payroll")),
        (' "Pay Roll" ', ("Pay Roll",)),
        ('s."a""b"', ("s", 'a"b')),
        ("db . s . t", ("db", "s", "t")),
    ],
)
def test_qualified_names_in_strings(text: str, parts: tuple[str, ...]) -> None:
    assert qualified_name(text) == parts


@pytest.mark.parametrize("text", ["", "a b", 'a."b', "a..b", "a."])
def test_malformed_names_in_strings_are_refused(text: str) -> None:
    with pytest.raises(LexError):
        qualified_name(text)


def test_e_string_continuation_keeps_escapes_for_the_splitter() -> None:
    """PostgreSQL reads the continued part in E mode: \\' is a quote, so the text after
    it is still string, and the DROP never runs."""
    assert len(split("select E'x'\n'\\''; drop table t; --'")) == 2
    assert split("select E'x'\n'\\'; drop table t; --'") == ["select E'x'\n'\\'; drop table t; --'"]


_NAME_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x2FF, blacklist_characters='"\x7f')


def unicode_escaped(name: str, escape: str, choices: list[int]) -> str:
    """`name` as a U& body, each character escaped in the 4- or 6-digit form or kept."""
    out = []
    for c, how in zip(name, choices, strict=True):
        if c == escape:
            out.append(escape * 2)
        elif how == 1:
            out.append(f"{escape}{ord(c):04X}")
        elif how == 2:
            out.append(f"{escape}+{ord(c):06x}")
        else:
            out.append(c)
    return "".join(out)


@settings(max_examples=200, deadline=None)
@given(
    st.text(_NAME_CHARS, min_size=1, max_size=20),
    st.sampled_from(["\\", "!", "#", "~", "*"]),
    st.data(),
)
def test_any_unicode_escaping_decodes_to_the_name(
    name: str, escape: str, data: st.DataObject
) -> None:
    choices = data.draw(st.lists(st.integers(0, 2), min_size=len(name), max_size=len(name)))
    body = unicode_escaped(name, escape, choices).replace('"', '""')
    clause = "" if escape == "\\" else f" UESCAPE '{escape}'"
    assert normalise(f'select U&"{body}"{clause}') == f'select "{truncate(name)}"'
    assert decode_unicode(unicode_escaped(name, escape, choices), escape) == name
