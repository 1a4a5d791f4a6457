"""The HTTP authz endpoint on its own: NGINX-style subrequests, Envoy-HTTP-service-style
requests (method and path are the original's, behind a prefix), and bad input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from interlock.config import ExtAuthzConfig
from tests.extauthz.conftest import MESH_HEADER, Authz, opa_bundle, start_authz

pytestmark = pytest.mark.integration


@pytest.fixture
async def prefixed() -> AsyncIterator[Authz]:
    a = await start_authz(
        ExtAuthzConfig(
            grpc_listen="127.0.0.1:0", identity_header=MESH_HEADER, http_path_prefix="/authz"
        )
    )
    yield a
    await a.server.stop(0)
    await a.runner.cleanup()


async def test_nginx_style_subrequest(authz: Authz) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.get(
            f"http://127.0.0.1:{authz.http_port}/",
            headers={
                MESH_HEADER: "coder",
                "X-Original-URI": "/reports/q3?format=pdf",
                "X-Original-Method": "DELETE",
                "X-Original-Host": "reports.mesh",
            },
        )
    assert r.status_code == 200
    action = authz.sink.last.action
    assert (action.operation.value, action.target) == ("write", "reports.mesh")
    assert action.details["path"] == "/reports/q3"


@pytest.mark.parametrize(
    ("header", "value", "operation"),
    [
        ("X-HTTP-Method-Override", "DELETE", "write"),
        ("X-HTTP-Method", "put", "write"),
        ("X-Method-Override", "PATCH", "write"),
        ("X-HTTP-Method-Override", "HEAD", "read"),
    ],
)
async def test_a_method_override_is_decided_as_the_method_it_names(
    authz: Authz, header: str, value: str, operation: str
) -> None:
    # (review: a service that honours the header ran DELETE; the decision saw a GET read)
    async with httpx.AsyncClient() as client:
        r = await client.get(
            f"http://127.0.0.1:{authz.http_port}/",
            headers={MESH_HEADER: "coder", "X-Original-URI": "/orders/7", header: value},
        )
    assert r.status_code == 200
    action = authz.sink.last.action
    assert action.operation.value == operation
    assert list(action.details["method_overrides"]) == [value.upper()]


async def test_envoy_http_service_style_request_with_body(prefixed: Authz) -> None:
    await prefixed.pdp.store.restrict("coder", ["tool:shell"])
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "shell"}}
    async with httpx.AsyncClient() as client:
        r = await client.post(
            f"http://127.0.0.1:{prefixed.http_port}/authz/mcp",
            json=call,
            headers={MESH_HEADER: "coder"},
        )
    assert r.status_code == 403
    assert r.json()["decision_id"] == prefixed.sink.last.decision.decision_id
    action = prefixed.sink.last.action
    assert (action.details["path"], action.target) == ("/mcp", "shell")


async def test_a_header_that_is_not_utf8_is_denied(authz: Authz) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", authz.http_port)
    writer.write(
        b"GET / HTTP/1.1\r\nHost: x\r\nx-mesh-agent: coder\r\nX-Original-URI: /a\r\n"
        b"x-bad: \xff\xfe\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403")
    assert "not UTF-8" in json.loads(body)["reason"]


async def test_an_oversized_body_is_denied(authz: Authz) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.post(
            f"http://127.0.0.1:{authz.http_port}/upload",
            content=b"x" * (1024 * 1024 + 10),
            headers={MESH_HEADER: "coder"},
        )
    assert r.status_code == 403
    assert "larger than" in r.json()["reason"]


STRIPPING = """package review.strip

import rego.v1

result := {"allowed": true, "request_headers_to_remove": ["x-secret"]}
"""


async def test_an_allow_the_endpoint_cannot_carry_out_is_a_denial(tmp_path: Path) -> None:
    """NGINX's auth_request forwards the request as it is: an allow on condition that a
    header is removed (OPA-Envoy's `request_headers_to_remove`, interlock's
    `strip_header`) or the query changed is refused, audited, with the reason (review:
    it was a 200, and the upstream received `x-secret`)."""
    (tmp_path / "strip.rego").write_text(STRIPPING)
    bundle = opa_bundle(tmp_path, tmp_path / "strip.rego")
    config = ExtAuthzConfig(
        grpc_listen="127.0.0.1:0", mode="opa-envoy", decision_path="review/strip/result"
    )
    a = await start_authz(config, bundle, (config.decision_path,))
    try:
        async with httpx.AsyncClient() as client:
            r = await client.get(
                f"http://127.0.0.1:{a.http_port}/",
                headers={"X-Original-URI": "/public", "x-secret": "s3cr3t"},
            )
        assert r.status_code == 403
        record = a.sink.last
        assert record.decision.effect.value == "deny"
        assert "remove header x-secret" in record.decision.reasons[0]
    finally:
        await a.holds.close()
        await a.server.stop(0)
        await a.runner.cleanup()
