"""OPA-Envoy compatibility: the input document OPA's Envoy plugin builds, and the result
shapes it accepts, so policies written for it run unchanged.

Input: `attributes` (the CheckRequest attributes in protojson form, camelCase names),
`parsed_path`, `parsed_query`, `parsed_body`, `truncated_body`, `version`. One deliberate
difference: `attributes.request.http.path` and `parsed_path` carry the *normalised* path
(see `paths.py`), so a policy written against clean paths cannot be walked around with
`..;`, `%2e%2e` or doubled slashes; the raw path is in `input.interlock.raw_path`.

Result: a boolean, or an object with `allowed` and optionally `headers`,
`response_headers_to_add`, `request_headers_to_remove`, `query_parameters_to_set`,
`query_parameters_to_remove`, `body`, `http_status`, `dynamic_metadata`. Anything else
is an error, and an error is a denial.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from google.protobuf.json_format import MessageToDict

from interlock.extauthz.body import Body
from interlock.extauthz.paths import NormalPath, parse_query
from interlock.extauthz.request import AuthzRequest
from interlock.extauthz.verdict import AuthzResponse

VERSION = {"ext_authz": "v3", "encoding": "protojson"}


class BadResult(ValueError):
    """The policy answered something OPA's plugin would reject."""


def _attributes(req: AuthzRequest) -> dict[str, Any]:
    if req.check is not None:
        attrs: dict[str, Any] = MessageToDict(req.check.attributes)
        return attrs
    # The HTTP endpoint: the same shape, from what an HTTP request carries.
    http: dict[str, Any] = {
        "id": req.request_id,
        "method": req.method,
        "headers": dict(req.headers),
        "path": req.path,
        "host": req.host,
        "scheme": req.scheme,
        "protocol": req.protocol,
    }
    if req.body:
        http["body"] = req.body.decode("utf-8", "replace")
        http["size"] = str(len(req.body))
    source: dict[str, Any] = {}
    if req.source_address:
        source["address"] = {
            "socketAddress": {"address": req.source_address, "portValue": req.source_port}
        }
    return {"source": source, "destination": {}, "request": {"http": http}}


def build_input(req: AuthzRequest, path: NormalPath, body: Body) -> dict[str, Any]:
    attributes = _attributes(req)
    http = attributes.setdefault("request", {}).setdefault("http", {})
    http["path"] = path.with_query
    return {
        "attributes": attributes,
        "parsed_path": path.segments,
        "parsed_query": parse_query(path.query),
        "parsed_body": body.parsed,
        "truncated_body": body.truncated,
        "version": dict(VERSION),
    }


def _strings(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadResult(f"{name} must be a list of strings")
    return list(value)


def _headers(value: Any, name: str, lower: bool = True) -> list[tuple[str, str]]:
    """An object (name -> string or list of strings), or a list of such objects."""
    if value is None:
        return []
    objects = value if isinstance(value, list) else [value]
    out: list[tuple[str, str]] = []
    for obj in objects:
        if not isinstance(obj, dict):
            raise BadResult(f"{name} must be an object or a list of objects")
        for key, v in obj.items():
            for item in v if isinstance(v, list) else [v]:
                if not isinstance(item, str):
                    raise BadResult(f"{name}[{key!r}] must be a string or list of strings")
                out.append((str(key).lower() if lower else str(key), item))
    return out


def parse_result(value: Any) -> AuthzResponse:
    if isinstance(value, bool):
        return AuthzResponse(value, 200 if value else 403)
    if not isinstance(value, dict):
        raise BadResult(f"illegal result type {type(value).__name__}")
    allowed = value.get("allowed")
    if not isinstance(allowed, bool):
        raise BadResult("result object needs a boolean 'allowed'")
    status = value.get("http_status", 403)
    if isinstance(status, bool) or not isinstance(status, int):
        raise BadResult("http_status must be a number")
    try:
        HTTPStatus(status)
    except ValueError as exc:
        raise BadResult(f"invalid HTTP status {status}") from exc
    body = value.get("body", "")
    if not isinstance(body, str):
        raise BadResult("body must be a string")
    meta = value.get("dynamic_metadata", {})
    if not isinstance(meta, dict):
        raise BadResult("dynamic_metadata must be an object")
    to_set = value.get("query_parameters_to_set") or {}
    if not isinstance(to_set, dict):
        raise BadResult("query_parameters_to_set must be an object")
    return AuthzResponse(
        allowed,
        200 if allowed else status,
        _headers(value.get("headers"), "headers"),
        [h.lower() for h in _strings(value.get("request_headers_to_remove"), "headers")],
        _headers(value.get("response_headers_to_add"), "response_headers_to_add"),
        _headers(to_set, "query_parameters_to_set", lower=False),
        _strings(value.get("query_parameters_to_remove"), "query_parameters_to_remove"),
        body,
        dict(meta),
    )
