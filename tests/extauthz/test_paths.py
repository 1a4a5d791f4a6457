"""Path normalisation: one meaning per path, or a refusal."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.extauthz.paths import BadPath, _decode, _decode_in_full, normalise, parse_query
from tests.extauthz.respell import readings, respellings


@pytest.mark.parametrize(
    ("raw", "path", "query"),
    [
        ("/", "/", ""),
        ("/a/b?x=1&y", "/a/b", "x=1&y"),
        ("/a/./b/../c", "/a/c", ""),
        ("//a///b/", "/a/b/", ""),
        ("/%41%42", "/AB", ""),
        ("/caf%C3%A9", "/café", ""),
        ("*", "*", ""),
    ],
)
def test_paths_are_normalised(raw: str, path: str, query: str) -> None:
    n = normalise(raw)
    assert (n.path, n.query) == (path, query)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("/a%2Fb", "encoded slash"),
        ("/a%2fb", "encoded slash"),
        ("/a%5cb", "backslash"),
        ("/a\\b", "backslash"),
        ("/..", "climbs above the root"),
        ("/a/../..", "climbs above the root"),
        ("/a/..;x=y/b", "parameters on a dot segment"),
        ("/a/.;x/b", "parameters on a dot segment"),
        ("/a/%2e%2e/b", "percent-encoded dot segment"),
        ("/a/.%2E/b", "percent-encoded dot segment"),
        ("/a//../b", "after an empty segment"),
        ("/a/.//../b", "after an empty segment"),
        ("//public//..//admin", "after an empty segment"),
        ("/a/b#frag", "'#' in request target"),
        ("/a;jsessionid=1/b", "';' parameters"),
        ("/a%00b", "control character"),
        ("/a\x01b", "control character"),
        ("/%ff", "not UTF-8"),
        ("relative", "must start with '/'"),
        ("/" + "a" * 9000, "longer than"),
    ],
)
def test_ambiguous_paths_are_refused(raw: str, why: str) -> None:
    with pytest.raises(BadPath, match=why):
        normalise(raw)


def test_not_strict_drops_fragments_and_parameters() -> None:
    assert normalise("/a/b#frag?no", strict=False) == normalise("/a/b")
    assert normalise("/a;jsessionid=1/b", strict=False) == normalise("/a/b")


def test_query_parsing_matches_opa() -> None:
    assert parse_query("a=1&a=2&b&c=%20x") == {"a": ["1", "2"], "b": [""], "c": [" x"]}
    with pytest.raises(BadPath, match="not UTF-8"):
        parse_query("a=%ff")
    with pytest.raises(BadPath, match="query parameters"):
        parse_query("&".join(f"k{i}=1" for i in range(2000)))


@given(st.text(max_size=200))
def test_normalise_gives_a_clean_path_or_refuses(raw: str) -> None:
    try:
        n = normalise(raw)
    except BadPath:
        return
    if n.path == "*":
        return
    assert n.path.startswith("/")
    assert "//" not in n.path
    assert all(seg not in (".", "..") for seg in n.path.split("/"))
    # Idempotent on what it produces (once re-encoded as a path).
    from urllib.parse import quote

    assert normalise(quote(n.path)).path == n.path


SECOND_READINGS = [
    # A second percent-decode.
    ("/public/%252e%252e/admin", "'%' left"),
    ("/public/..%252fadmin", "'%' left"),
    ("/public/%252E%252E%252Fadmin", "'%' left"),
    ("/public/%25%32%65%25%32%65/admin", "'%' left"),
    ("/public/%%32%65%%32%65/admin", "'%' left"),
    ("/public/%25252e%25252e/admin", "'%' left"),
    ("/public/%u002e%u002e/admin", "'%' left"),
    ("/public/100%", "'%' left"),
    # Delimiters a decode-then-reparse upstream would cut at.
    ("/admin%3F/../public", "encoded ';', '?' or '#'"),
    ("/admin%23/../public", "encoded ';', '?' or '#'"),
    ("/public/..%3B/admin", "encoded ';', '?' or '#'"),
    # Unicode folding (NFKC) and look-alikes.
    ("/public/%ef%bc%8f..%ef%bc%8fadmin", "look-alike"),
    ("/public/\uff0f..\uff0fadmin", "look-alike"),
    ("/public/%ef%bc%8e%ef%bc%8e/admin", "look-alike"),
    ("/public/%e2%80%a4%e2%80%a4/admin", "look-alike"),
    ("/public/%ef%b9%92%ef%b9%92/admin", "look-alike"),
    ("/public/%e2%80%a5/admin", "look-alike"),
    ("/public/..%ef%bc%bcadmin", "look-alike"),
    ("/public/%ef%bc%85%32%65", "look-alike"),
    ("/public/..%e2%88%95admin", "look-alike"),
    ("/public/..%e2%81%84admin", "look-alike"),
    ("/public/..%e2%88%96admin", "look-alike"),
    ("/public/%e3%80%82%e3%80%82/admin", "look-alike"),
    ("/%ef%bd%81%ef%bd%84%ef%bd%8d%ef%bd%89%ef%bd%8e", "Unicode folding"),
    ("/\u212aey", "Unicode folding"),
    ("/caf%65%cc%81", "Unicode folding"),
    ("/ad%e2%80%8bmin", "invisible formatting"),
    ("/ad%c2%admin", "invisible formatting"),
    ("/public/%e2%80%ae..", "invisible formatting"),
    # Dot segments Windows reads as `..`.
    ("/public/.../admin", "extra dots or spaces"),
    ("/public/..%20/admin", "extra dots or spaces"),
    ("/public/.%20./admin", "extra dots or spaces"),
]


@pytest.mark.parametrize(("raw", "why"), SECOND_READINGS)
def test_paths_a_second_reading_would_change_are_refused(raw: str, why: str) -> None:
    with pytest.raises(BadPath, match=re.escape(why)):
        normalise(raw)


@pytest.mark.parametrize("raw", [r for r, _ in SECOND_READINGS if "%25" in r or "\\uff0f" in r])
def test_not_strict_decides_once_decoded(raw: str) -> None:
    """`strict_path_encoding = false`: for upstreams that decode exactly once."""
    assert normalise(raw, strict=False).path.startswith("/public/")


@settings(max_examples=300, deadline=None)
@given(respellings())
def test_respellings_are_refused_or_mean_one_path(raw: str) -> None:
    """However a path is respelled (percent-encoded in mixed case, double-encoded,
    `%uXXXX`, overlong UTF-8, full-width, look-alike), it is refused, or every upstream
    reading of it serves the path the decision was made on."""
    try:
        decided = normalise(raw).path
    except BadPath:
        return
    assert readings(raw) == {decided}, raw


def _outcome(fn: Any, *args: Any) -> tuple[str, str]:
    try:
        return ("ok", fn(*args))
    except BadPath as exc:
        return ("refused", str(exc))


SEGMENT_CHARS = st.sampled_from(
    [chr(c) for c in range(0x20, 0x7F)] + ["\x00", "\x1f", "\x7f", "\u00ad", "\uff0e", "é"]
)


@settings(max_examples=600)
@given(segment=st.text(SEGMENT_CHARS, max_size=12), strict=st.booleans())
def test_the_plain_segment_shortcut_decodes_as_the_full_path(segment: str, strict: bool) -> None:
    """`_decode` answers printable ASCII segments without `%` itself; it must give the
    same segment or the same refusal as the full decoding for every segment."""
    assert _outcome(_decode, segment, strict) == _outcome(_decode_in_full, segment, strict)


@pytest.mark.parametrize("segment", ["a", "file.txt", "...", ". .", "..", ".", "a b", "~x-_"])
def test_plain_segments_take_the_shortcut_and_agree(segment: str) -> None:
    for strict in (True, False):
        assert _outcome(_decode, segment, strict) == _outcome(_decode_in_full, segment, strict)
