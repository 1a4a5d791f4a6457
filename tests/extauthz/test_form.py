"""Form bodies parsed as OPA's Envoy plugin parses them, or refused."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from interlock.classify.form import BadForm, parse_multipart, parse_urlencoded
from interlock.extauthz.body import BadBody, read_body

FORM = "application/x-www-form-urlencoded"
# The plugin's own test vectors (envoyauth/request_test.go), bare-LF line endings included.
MULTIPART = (
    b'--foo\nContent-Disposition: form-data; name="foo"\nContent-Type: text/plain\n\nbar\n'
    b"--foo--\n\t\t\t\t"
)
WITH_JSON = (
    b'--foo\nContent-Disposition: form-data; name="foo"\nContent-Type: text/plain\n\nbar\n'
    b'--foo\nContent-Disposition: form-data; name="bar"\nContent-Type: application/json;\n\n'
    b'{"name": "bar"}\n--foo--\n'
)  # fmt: skip


@pytest.mark.parametrize(
    ("ctype", "raw", "parsed"),
    [
        (FORM, b"firstname=foo&lastname=bar", {"firstname": ["foo"], "lastname": ["bar"]}),
        (FORM, b"firstname=foo&lastname=bar&lastname=foobar",
         {"firstname": ["foo"], "lastname": ["bar", "foobar"]}),
        (FORM, b"", None),
        (FORM, b"a+b=c+d&e&&f=%2B", {"a b": ["c d"], "e": [""], "f": ["+"]}),
        ("multipart/form-data; boundary=foo", MULTIPART, {"foo": ["bar"]}),
        ("multipart/form-data; boundary=foo", WITH_JSON,
         {"foo": ["bar"], "bar": [{"name": "bar"}]}),
        ('multipart/form-data; boundary="Foo"', b'--Foo\r\nContent-Disposition: form-data; '
         b'name="a"; filename="x.bin"\r\n\r\n\xff\r\n--Foo--', {"a": ["\ufffd"]}),
        ("multipart/form-data", MULTIPART, None),
        ("text/plain", b"a=1", None),
    ],
)  # fmt: skip
def test_form_bodies_parse_as_the_plugin_parses_them(ctype: str, raw: bytes, parsed: Any) -> None:
    assert read_body(raw, {"content-type": ctype}, 1 << 20).parsed == parsed


def test_a_truncated_form_is_not_parsed() -> None:
    body = read_body(b"a=1", {"content-type": FORM, "content-length": "100"}, 1 << 20)
    assert (body.truncated, body.parsed) == (True, None)


def test_a_body_envoy_says_it_cut_is_truncated_without_a_content_length() -> None:
    """A chunked or HTTP/2 request has no content-length to compare the body with; Envoy
    marks the cut itself (`x-envoy-auth-partial-body`)."""
    headers = {"content-type": FORM, "x-envoy-auth-partial-body": "true"}
    body = read_body(b"a=1&card=4111", headers, 1 << 20)
    assert (body.truncated, body.parsed) == (True, None)
    whole = read_body(b"a=1", {**headers, "x-envoy-auth-partial-body": "false"}, 1 << 20)
    assert (whole.truncated, whole.parsed) == (False, {"a": ["1"]})


def test_multipart_fields_are_scanned() -> None:
    raw = (
        b'--b\r\nContent-Disposition: form-data; name="n"\r\n\r\ncard 4111 1111 1111 1111\r\n--b--'
    )
    body = read_body(raw, {"content-type": "multipart/form-data; boundary=b"}, 1 << 20)
    assert body.text == "card 4111 1111 1111 1111"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n", "closing boundary"),
        (b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--", "form-data name"),
        (b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n x\r\n\r\nx\r\n--b--", "folded"),
        (b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\nContent-Disposition: form-data;"
         b" name=\"b\"\r\n\r\nx\r\n--b--", "repeated"),
        (b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\nContent-Transfer-Encoding: "
         b"base64\r\n\r\neA==\r\n--b--", "content-transfer-encoding"),
        (b"no boundary here", "without its boundary"),
        (b"--b--", "without parts"),
    ],
)  # fmt: skip
def test_ambiguous_multipart_bodies_are_refused(raw: bytes, why: str) -> None:
    with pytest.raises(BadForm, match=why):
        parse_multipart(raw, "b")


@pytest.mark.parametrize(
    ("raw", "why"),
    [("a=%zz", "percent-escape"), ("a=1;b=2", "';'"), ("a=%ff", "not UTF-8")],
)
def test_malformed_urlencoded_bodies_are_refused(raw: str, why: str) -> None:
    with pytest.raises(BadForm, match=why):
        parse_urlencoded(raw)
    with pytest.raises(BadBody, match=why):
        read_body(raw.encode(), {"content-type": FORM}, 1 << 20)


NAMES = st.text(st.characters(codec="utf-8", exclude_characters='"\r\n\\'), min_size=1, max_size=8)
VALUES = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=20),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
FIELDS = st.lists(st.tuples(NAMES, VALUES), min_size=1, max_size=6)


def _multipart(fields: list[tuple[str, Any]], mark: str, nl: str) -> bytes:
    out = ""
    for name, value in fields:
        out += f'--{mark}{nl}Content-Disposition: form-data; name="{name}"{nl}'
        if isinstance(value, dict):
            out += f"Content-Type: application/json{nl}{nl}{json.dumps(value)}{nl}"
        else:
            out += f"{nl}{value}{nl}"
    return f"preamble{nl}{out}--{mark}--{nl}epilogue".encode()


def _grouped(fields: list[tuple[str, Any]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name, value in fields:
        out.setdefault(name, []).append(value)
    return out


@settings(max_examples=200, deadline=None)
@given(FIELDS, st.sampled_from(["\r\n", "\n"]), st.sampled_from(["b", "----x9", "B-o-u"]))
def test_multipart_bodies_are_read_field_for_field(
    fields: list[tuple[str, Any]], nl: str, mark: str
) -> None:
    """Whatever a client encodes (CRLF or bare LF, JSON and text parts, repeated names,
    line breaks in values), the policy gets every field with every value."""
    assume(all(f"--{mark}" not in str(v) for _, v in fields))  # as a client picks it
    assert parse_multipart(_multipart(fields, mark, nl), mark) == _grouped(fields)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1), st.text()), max_size=8))
def test_urlencoded_bodies_are_read_field_for_field(fields: list[tuple[str, str]]) -> None:
    assert parse_urlencoded(urllib.parse.urlencode(fields)) == _grouped(fields)
