"""Path normalisation: one meaning per path, or a refusal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from interlock.extauthz.paths import BadPath, normalise, parse_query


@pytest.mark.parametrize(
    ("raw", "path", "query"),
    [
        ("/", "/", ""),
        ("/a/b?x=1&y", "/a/b", "x=1&y"),
        ("/a/./b/../c", "/a/c", ""),
        ("//a///b/", "/a/b/", ""),
        ("/a;jsessionid=1/b", "/a/b", ""),
        ("/a/b#frag?no", "/a/b", ""),
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
