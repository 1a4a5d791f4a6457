"""OPA-Envoy result shapes and the input document, as OPA's Envoy plugin defines them."""

from __future__ import annotations

from typing import Any

import pytest

from interlock.extauthz.body import BadBody, read_body
from interlock.extauthz.opa import BadResult, build_input, parse_result
from interlock.extauthz.paths import normalise
from interlock.extauthz.request import from_check_bytes
from tests.extauthz.conftest import check_request


def test_boolean_results() -> None:
    assert parse_result(True).allowed
    denied = parse_result(False)
    assert (denied.allowed, denied.status) == (False, 403)


def test_object_result_fields() -> None:
    r = parse_result(
        {
            "allowed": True,
            "headers": [{"X-A": "1"}, {"x-b": ["2", "3"]}],
            "request_headers_to_remove": ["Authorization"],
            "response_headers_to_add": {"x-c": "4"},
            "query_parameters_to_set": {"Page": "2"},
            "query_parameters_to_remove": ["debug"],
            "dynamic_metadata": {"k": "v"},
        }
    )
    assert r.headers == [("x-a", "1"), ("x-b", "2"), ("x-b", "3")]
    assert r.headers_to_remove == ["authorization"]
    assert r.response_headers_to_add == [("x-c", "4")]
    assert r.query_parameters_to_set == [("Page", "2")]
    assert (r.query_parameters_to_remove, r.metadata) == (["debug"], {"k": "v"})
    denied = parse_result({"allowed": False, "http_status": 401, "body": "no"})
    assert (denied.status, denied.body) == (401, "no")


@pytest.mark.parametrize(
    "value",
    [
        None,
        "yes",
        1,
        {},
        {"allowed": "true"},
        {"allowed": False, "http_status": "401"},
        {"allowed": False, "http_status": 999},
        {"allowed": False, "body": 3},
        {"allowed": True, "headers": {"x": 1}},
        {"allowed": True, "headers": "x"},
        {"allowed": True, "request_headers_to_remove": "x"},
        {"allowed": True, "dynamic_metadata": []},
    ],
)
def test_results_opa_would_reject_are_errors(value: Any) -> None:
    with pytest.raises(BadResult):
        parse_result(value)


def test_the_input_document_has_opas_shape() -> None:
    req = from_check_bytes(
        check_request(
            "POST",
            "/people/../people?a=1&a=2",
            {"content-type": "application/json", "authorization": "Bearer x"},
            '{"firstname": "Ann"}',
        ).SerializeToString()
    )
    path = normalise(req.path)
    doc = build_input(req, path, read_body(req.body, req.headers, 1 << 20))
    http = doc["attributes"]["request"]["http"]
    assert http["method"] == "POST"
    assert http["headers"]["authorization"] == "Bearer x"
    assert http["path"] == "/people?a=1&a=2"  # normalised; the raw one goes to interlock
    assert doc["attributes"]["source"]["address"]["socketAddress"]["address"] == "10.0.0.9"
    assert doc["parsed_path"] == ["people"]
    assert doc["parsed_query"] == {"a": ["1", "2"]}
    assert doc["parsed_body"] == {"firstname": "Ann"}
    assert doc["truncated_body"] is False
    assert doc["version"] == {"ext_authz": "v3", "encoding": "protojson"}


def test_a_truncated_body_is_not_parsed() -> None:
    b = read_body(b'{"a": 1', {"content-type": "application/json", "content-length": "99"}, 100)
    assert (b.truncated, b.parsed) == (True, None)
    with pytest.raises(BadBody, match="malformed JSON"):
        read_body(b'{"a": 1', {"content-type": "application/json"}, 100)
    with pytest.raises(BadBody, match="not UTF-8"):
        read_body(b"\xff\xfe", {"content-type": "text/plain"}, 100)
