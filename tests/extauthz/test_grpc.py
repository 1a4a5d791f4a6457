"""The ext_authz gRPC server, spoken to with grpc's own client: decisions, headers,
metadata, health, and every bad input answered with a denial (never a gRPC error)."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interlock.core.model import Effect, Operation
from interlock.extauthz.request import from_check_bytes
from tests.extauthz.conftest import MESH_HEADER, Authz, check_request

pytestmark = pytest.mark.integration


def headers_of(options: Any) -> dict[str, str]:
    return {o.header.key: o.header.value for o in options}


async def test_an_allowed_request_carries_the_agent_and_the_decision(authz: Authz) -> None:
    r = await authz.check(check_request())
    assert r.status.code == code_pb2.OK
    added = headers_of(r.ok_response.headers)
    record = authz.sink.last
    assert added["x-interlock-agent"] == "coder"
    assert added["x-interlock-decision-id"] == record.decision.decision_id
    meta = r.dynamic_metadata["interlock"]
    assert meta["decision_id"] == record.decision.decision_id
    assert meta["effect"] == "allow"
    action = record.action
    assert (action.protocol, action.operation, action.target) == (
        "envoy",
        Operation.READ,
        "app.mesh",
    )
    assert action.agent.authn == "header"


async def test_a_request_without_identity_is_denied_with_401(authz: Authz) -> None:
    r = await authz.check(check_request(headers={}))
    assert r.status.code == code_pb2.PERMISSION_DENIED
    assert r.denied_response.status.code == 401
    body = json.loads(r.denied_response.body)
    assert "no agent identity" in body["reason"]
    assert body["decision_id"] == authz.sink.last.decision.decision_id


async def test_an_unknown_agent_in_the_mesh_header_is_denied(authz: Authz) -> None:
    r = await authz.check(check_request(headers={MESH_HEADER: "mallory"}))
    assert r.denied_response.status.code == 401
    assert "unknown agent" in json.loads(r.denied_response.body)["reason"]


async def test_read_only_posture_denies_writes_and_keeps_reads(authz: Authz) -> None:
    await authz.pdp.store.restrict("coder", ["read_only"])
    write = await authz.check(check_request("POST", "/people", body='{"a": 1}'))
    assert write.status.code == code_pb2.PERMISSION_DENIED
    assert write.denied_response.status.code == 403
    assert "read_only" in json.loads(write.denied_response.body)["reason"]
    assert headers_of(write.denied_response.headers)["x-interlock-decision-id"]
    read = await authz.check(check_request("GET", "/people"))
    assert read.status.code == code_pb2.OK


async def test_an_mcp_tool_call_in_the_body_is_decided_as_that_tool(authz: Authz) -> None:
    await authz.pdp.store.restrict("coder", ["tool:drop_database"])
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "drop_database"}}
    headers = {MESH_HEADER: "coder", "content-type": "application/json"}
    r = await authz.check(check_request("POST", "/mcp", headers, json.dumps(call)))
    assert r.status.code == code_pb2.PERMISSION_DENIED
    assert authz.sink.last.action.operation is Operation.TOOL_CALL
    other = dict(call, params={"name": "search"})
    r = await authz.check(check_request("POST", "/mcp", headers, json.dumps(other)))
    assert r.status.code == code_pb2.OK


async def test_a_textual_body_longer_than_the_scan_is_refused(authz: Authz) -> None:
    """With `max_body_bytes` above the DLP scan's limit, the rest would pass unseen."""
    from interlock.classify.content import MAX_SCAN

    config = authz.authorizer.config
    authz.authorizer.config = config.model_copy(update={"max_body_bytes": 4 * MAX_SCAN})
    headers = {MESH_HEADER: "coder", "content-type": "text/plain"}
    body = " " * MAX_SCAN + "AKIAIOSFODNN7EXAMPLE"
    r = await authz.check(check_request("POST", "/upload", headers, body))
    assert r.status.code == code_pb2.PERMISSION_DENIED
    assert "characters inspected" in authz.sink.last.decision.reasons[0]


async def test_a_json_rpc_batch_is_refused(authz: Authz) -> None:
    """An MCP server runs every call of a batch; `tool_call` reads one. Decided as one
    plain write, a batch could carry a restricted tool past its restriction."""
    await authz.pdp.store.restrict("coder", ["tool:drop_database"])
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "drop_database"}}
    headers = {MESH_HEADER: "coder", "content-type": "application/json"}
    r = await authz.check(check_request("POST", "/mcp", headers, json.dumps([call])))
    assert r.status.code == code_pb2.PERMISSION_DENIED
    assert "JSON-RPC batch" in authz.sink.last.decision.reasons[0]


@pytest.mark.parametrize(
    ("raw", "decided_on"),
    [
        ("/public/../admin", "/admin"),
        ("/public//x/./y", "/public/x/y"),
        ("/caf%C3%A9?q=1", "/café"),
    ],
)
async def test_decisions_are_made_on_the_normalised_path(
    authz: Authz, raw: str, decided_on: str
) -> None:
    await authz.check(check_request(path=raw))
    details = authz.sink.last.action.details
    assert (details["path"], details["raw_path"]) == (decided_on, raw)


BAD = [
    (check_request(path="/files/a%2Fb"), "encoded slash"),
    (check_request(path="/files/a%5Cb"), "encoded slash or backslash"),
    (check_request(path="/a/../../etc/passwd"), "climbs above the root"),
    (check_request(path="/public/..;x=y/admin"), "path parameters on a dot segment"),
    (check_request(path="/public/%2e%2e/admin"), "percent-encoded dot segment"),
    (check_request(path="/public/x#/../../admin"), "'#' in request target"),
    (check_request(path="/public;v=1/x"), "';' parameters"),
    (check_request(path="/public/%252e%252e/admin"), "'%' left in path"),
    (check_request(path="/public/%ef%bc%8f..%ef%bc%8fadmin"), "look-alike"),
    (check_request(path="/caf%FF"), "not UTF-8"),
    (check_request(path="no-slash"), "must start with '/'"),
    (
        check_request(
            "POST", "/x", {MESH_HEADER: "coder", "content-type": "application/json"}, "{nope"
        ),
        "malformed JSON body",
    ),
    (check_request("POST", "/x", body="x" * (1024 * 1024 + 1)), "body larger than"),
    (
        check_request("POST", "/x", {MESH_HEADER: "coder", "content-length": "ten"}, "a"),
        "bad content-length",
    ),
]


@pytest.mark.parametrize(("req", "why"), BAD)
async def test_bad_requests_are_denied_with_a_reason(authz: Authz, req: Any, why: str) -> None:
    r = await authz.check(req)
    assert r.status.code == code_pb2.PERMISSION_DENIED
    assert r.denied_response.status.code == 403
    reason = json.loads(r.denied_response.body)["reason"]
    assert why in reason
    record = authz.sink.last
    assert record.decision.effect is Effect.DENY
    assert why in record.decision.reasons[0]


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    n = len(payload)
    length = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        length += bytes([byte | (0x80 if n else 0)])
        if not n:
            break
    return bytes([number << 3 | 2]) + length + payload


async def test_bytes_protobuf_refuses_are_a_denial_not_a_grpc_error(authz: Authz) -> None:
    """A header value that is not UTF-8 in a proto3 string field: CheckRequest.attributes
    (1) .request (4) .http (2) .headers (3) map entry {key: "x", value: b"\\xff"}."""
    entry = _field(1, b"x") + _field(2, b"\xff\xfe")
    raw = _field(1, _field(4, _field(2, _field(3, entry))))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{authz.grpc_port}") as channel:
        call = channel.unary_unary(
            "/envoy.service.auth.v3.Authorization/Check",
            request_serializer=lambda b: b,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )
        for payload in (raw, raw[:-3], b"\xff" * 40):
            r = await call(payload, timeout=10)
            assert r.status.code == code_pb2.PERMISSION_DENIED
            assert "unreadable CheckRequest" in json.loads(r.denied_response.body)["reason"]


async def test_raw_header_values_must_be_utf8(authz: Authz) -> None:
    req = check_request()
    hv = req.attributes.request.http.header_map.headers.add()
    hv.key, hv.raw_value = "x-bin", b"\xc3\x28"
    r = await authz.check(req)
    assert "is not UTF-8" in json.loads(r.denied_response.body)["reason"]


async def test_health_reports_serving(authz: Authz) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{authz.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "envoy.service.auth.v3.Authorization"):
            r = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert r.status == health_pb2.HealthCheckResponse.SERVING


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=300))
async def test_arbitrary_bytes_always_get_an_answer(authz: Authz, raw: bytes) -> None:
    r = await authz.authorizer.check(from_check_bytes(raw))
    assert r.allowed in (True, False)
    if not r.allowed:
        assert r.body


async def test_a_json_body_cut_short_by_envoy_is_refused(authz: Authz) -> None:
    call = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x"}})
    headers = {MESH_HEADER: "coder", "content-type": "application/json", "content-length": "99999"}
    r = await authz.check(check_request("POST", "/mcp", headers, call))
    assert r.status.code == code_pb2.PERMISSION_DENIED
    assert "larger than the proxy forwards" in json.loads(r.denied_response.body)["reason"]


async def test_query_keys_are_decided_decoded(authz: Authz) -> None:
    await authz.check(check_request(path="/x?%64ebug=1&a=2"))
    assert list(authz.sink.last.action.details["query_keys"]) == ["a", "debug"]
