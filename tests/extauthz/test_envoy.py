"""A real Envoy (compose/envoy.yaml) in front of an app, asking interlock on every request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from interlock.config import ExtAuthzConfig
from tests.extauthz.conftest import MESH_HEADER, App, Authz, start_authz
from tests.services import envoy_server

pytestmark = pytest.mark.integration


@pytest.fixture
def envoy(authz: Authz, app: App) -> Iterator[str]:
    with envoy_server(app.port, authz.grpc_port) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=15) as c:
        yield c


async def test_allowed_requests_reach_the_app_with_the_verified_agent(
    authz: Authz, app: App, envoy: str, client: httpx.AsyncClient
) -> None:
    r = await client.get(
        envoy + "/people?x=1", headers={MESH_HEADER: "coder", "x-interlock-agent": "root"}
    )
    assert r.status_code == 200
    record = authz.sink.last
    # The dynamic metadata made it back through Envoy into the response header.
    assert r.headers["x-interlock-decision-id"] == record.decision.decision_id
    seen = app.seen[-1]["headers"]
    assert seen["x-interlock-agent"] == "coder"  # the client's spoofed value was replaced
    assert record.action.details["path"] == "/people"


async def test_denied_requests_never_reach_the_app(
    authz: Authz, app: App, envoy: str, client: httpx.AsyncClient
) -> None:
    await authz.pdp.store.restrict("coder", ["read_only"])
    r = await client.post(envoy + "/people", json={"name": "x"}, headers={MESH_HEADER: "coder"})
    assert r.status_code == 403
    body = r.json()
    assert body["decision_id"] == authz.sink.last.decision.decision_id
    assert r.headers["x-interlock-decision-id"] == body["decision_id"]
    anonymous = await client.get(envoy + "/people")
    assert anonymous.status_code == 401
    assert app.seen == []


async def test_the_body_reaches_the_decision(
    authz: Authz, app: App, envoy: str, client: httpx.AsyncClient
) -> None:
    await authz.pdp.store.restrict("coder", ["tool:drop_database"])
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "drop_database"}}
    denied = await client.post(envoy + "/mcp", json=call, headers={MESH_HEADER: "coder"})
    assert denied.status_code == 403
    call["params"] = {"name": "search", "arguments": {"q": "weather"}}
    allowed = await client.post(envoy + "/mcp", json=call, headers={MESH_HEADER: "coder"})
    assert allowed.status_code == 200, allowed.text
    assert (authz.sink.last.action.operation.value, authz.sink.last.action.target) == (
        "tool_call",
        "search",
    )
    # A card number in the arguments of a tool this agent has not used before labels the
    # action and raises its risk to medium: held (an Envoy request cannot wait, so 403).
    call["params"] = {"name": "lookup", "arguments": {"q": "card 4111 1111 1111 1111"}}
    held = await client.post(envoy + "/mcp", json=call, headers={MESH_HEADER: "coder"})
    assert held.status_code == 403
    assert held.headers["x-interlock-approval-required"] == held.json()["decision_id"]
    assert "financial" in authz.sink.last.action.labels
    assert [s["path"] for s in app.seen] == ["/mcp"]


@pytest.fixture
async def strict(bundle_copy: Path, app: App) -> AsyncIterator[tuple[Authz, str]]:
    """Every unsure tool call stays medium risk however often it is approved (history
    weight 0, medium from 30), so what lets the retry through is the approval itself."""
    data = json.loads((bundle_copy / "data.json").read_text())
    data["interlock"]["risk"]["weights"]["approval_history"] = 0
    data["interlock"]["risk"]["tiers"]["medium"] = 30
    (bundle_copy / "data.json").write_text(json.dumps(data))
    a = await start_authz(
        ExtAuthzConfig(grpc_listen="127.0.0.1:0", identity_header=MESH_HEADER), bundle_copy
    )
    with envoy_server(app.port, a.grpc_port) as port:
        yield a, f"http://127.0.0.1:{port}"
    await a.holds.close()
    await a.server.stop(0)
    await a.runner.cleanup()


async def test_a_retry_after_approval_passes_envoy(
    strict: tuple[Authz, str], app: App, client: httpx.AsyncClient
) -> None:
    """Envoy cannot wait for a person: refused with the approval id; the same request
    retried after approval passes, as often as the grant allows (once by default)."""
    authz, envoy = strict
    unsure = {"name": "lookup", "arguments": {"q": "weather"}, "_meta": {"confidence": 0.1}}
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": unsure}
    headers = {MESH_HEADER: "coder"}
    first = await client.post(envoy + "/mcp", json=call, headers=headers)
    assert first.status_code == 403
    approval_id = first.headers["x-interlock-approval-required"]
    assert first.json()["approval_id"] == approval_id
    again = await client.post(envoy + "/mcp", json=call, headers=headers)
    assert again.status_code == 403
    assert again.headers["x-interlock-approval-required"] == approval_id, "one request"
    (pending,) = authz.holds.pending()
    assert pending.decision_id == approval_id
    authz.holds.answer(approval_id, True, "alice@example.com", "test")
    await asyncio.sleep(0.05)
    other = {**call, "params": {**unsure, "arguments": {"q": "rain"}}}
    changed = await client.post(envoy + "/mcp", json=other, headers=headers)
    assert changed.status_code == 403, "the approval covers that exact request only"
    assert changed.headers["x-interlock-approval-required"] != approval_id
    retried = await client.post(envoy + "/mcp", json=call, headers=headers)
    assert retried.status_code == 200, retried.text
    assert [s["path"] for s in app.seen] == ["/mcp"]
    assert authz.sink.last.decision.reasons[0].startswith(f"released by approval {approval_id}")
    spent = await client.post(envoy + "/mcp", json=call, headers=headers)
    assert spent.status_code == 403, "one approval, one use"
    assert spent.headers["x-interlock-approval-required"] != approval_id


async def test_bad_paths_are_denied_through_envoy(
    authz: Authz, app: App, envoy: str, client: httpx.AsyncClient
) -> None:
    r = await client.get(envoy + "/files/a%2Fb", headers={MESH_HEADER: "coder"})
    assert r.status_code == 403
    assert "encoded slash" in json.loads(r.text)["reason"]
    assert app.seen == []


async def test_with_interlock_stopped_envoy_denies(
    authz: Authz, app: App, envoy: str, client: httpx.AsyncClient
) -> None:
    assert (await client.get(envoy + "/people", headers={MESH_HEADER: "coder"})).status_code == 200
    await authz.server.stop(0)
    r = await client.get(envoy + "/people", headers={MESH_HEADER: "coder"})
    assert r.status_code == 403
    assert len(app.seen) == 1
