"""OPA-Envoy mode: a policy written for OPA's Envoy plugin runs unchanged, through a real
Envoy, with the interlock context beside OPA's input."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from google.rpc import code_pb2

from interlock.config import Config, ExtAuthzConfig
from interlock.core.model import Effect
from tests.extauthz.conftest import MESH_HEADER, App, Authz, check_request, opa_bundle, start_authz
from tests.services import envoy_server

pytestmark = pytest.mark.integration
POLICIES = Path(__file__).parent / "policies"
SECRET = "opa-envoy-test-secret-0123456789abcdef"


def token(role: str, name: str, **claims: Any) -> str:
    now = int(time.time())
    body = {"role": role, "sub": base64.urlsafe_b64encode(name.encode()).decode(), "nbf": now - 5}
    body["exp"] = now + 300
    body.update(claims)
    return jwt.encode(body, SECRET, algorithm="HS256")


async def opa_authz(tmp_path: Path, path: str) -> AsyncIterator[Authz]:
    bundle = opa_bundle(
        tmp_path,
        POLICIES / "envoy_authz.rego",
        POLICIES / "interlock_aware.rego",
        POLICIES / "envoy_forms.rego",
    )
    config = ExtAuthzConfig(
        grpc_listen="127.0.0.1:0", mode="opa-envoy", decision_path=path, identity_header=MESH_HEADER
    )
    a = await start_authz(config, bundle, (config.decision_path,))
    yield a
    await a.server.stop(0)
    await a.runner.cleanup()


@pytest.fixture
async def allow_authz(tmp_path: Path) -> AsyncIterator[Authz]:
    async for a in opa_authz(tmp_path, "data.envoy.authz.allow"):
        yield a


@pytest.fixture
def envoy(allow_authz: Authz, app: App) -> Iterator[str]:
    with envoy_server(app.port, allow_authz.grpc_port) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("method", "who", "body", "status"),
    [
        ("GET", ("guest", "bob"), None, 200),
        ("GET", ("admin", "alice"), None, 200),
        ("POST", ("admin", "alice"), {"firstname": "Charlie"}, 200),
        ("POST", ("admin", "alice"), {"firstname": "Alice"}, 403),
        ("POST", ("guest", "bob"), {"firstname": "Charlie"}, 403),
        ("GET", None, None, 403),
    ],
)
async def test_the_opa_documentation_policy_decides_through_envoy(
    allow_authz: Authz,
    app: App,
    envoy: str,
    method: str,
    who: tuple[str, str] | None,
    body: dict[str, str] | None,
    status: int,
) -> None:
    headers = {"authorization": f"Bearer {token(*who)}"} if who else {}
    async with httpx.AsyncClient(timeout=15) as client:
        r = await client.request(method, envoy + "/people", json=body, headers=headers)
    assert r.status_code == status
    record = allow_authz.sink.last
    assert record.decision.effect is (Effect.ALLOW if status == 200 else Effect.DENY)
    assert len(app.seen) == (1 if status == 200 else 0)


async def test_an_expired_token_is_refused(allow_authz: Authz, app: App, envoy: str) -> None:
    expired = token("admin", "alice", exp=int(time.time()) - 60)
    async with httpx.AsyncClient(timeout=15) as client:
        r = await client.get(envoy + "/people", headers={"authorization": f"Bearer {expired}"})
    assert r.status_code == 403
    assert app.seen == []


async def test_interlock_posture_still_applies(allow_authz: Authz, app: App, envoy: str) -> None:
    await allow_authz.pdp.store.restrict("coder", (), isolate=True)
    headers = {"authorization": f"Bearer {token('guest', 'bob')}", MESH_HEADER: "coder"}
    async with httpx.AsyncClient(timeout=15) as client:
        r = await client.get(envoy + "/people", headers=headers)
    assert r.status_code == 403
    assert "isolated" in r.json()["reason"]


async def test_the_object_result_shapes_the_response(tmp_path: Path) -> None:
    async for a in opa_authz(tmp_path, "envoy/authz/result"):
        ok = await a.check(
            check_request(headers={"authorization": f"Bearer {token('guest', 'bob')}"})
        )
        assert ok.status.code == code_pb2.OK
        added = {o.header.key: o.header.value for o in ok.ok_response.headers}
        assert added == {"x-user-role": "guest"}
        assert list(ok.ok_response.headers_to_remove) == ["authorization"]
        assert ok.ok_response.response_headers_to_add[0].header.key == "x-policy"
        assert ok.dynamic_metadata["role"] == "guest"
        assert ok.dynamic_metadata["interlock"]["effect"] == "allow"
        anonymous = await a.check(check_request(headers={}))
        assert anonymous.denied_response.status.code == 401
        assert anonymous.denied_response.body == "who are you?"
        denied = await a.check(
            check_request("DELETE", headers={"authorization": f"Bearer {token('guest', 'b')}"})
        )
        assert denied.denied_response.status.code == 403
        assert {o.header.key for o in denied.denied_response.headers} >= {
            "x-why",
            "x-interlock-decision-id",
        }


async def test_policies_can_read_the_interlock_context(tmp_path: Path) -> None:
    async for a in opa_authz(tmp_path, "envoy/aware/allow"):
        assert (await a.check(check_request())).status.code == code_pb2.OK
        await a.pdp.store.add_taint("coder", "prompt_injection_suspected", a.pdp.clock() + 60)
        r = await a.check(check_request())
        assert r.status.code == code_pb2.PERMISSION_DENIED
        # The audit record keeps the interlock input (agent, context, risk) it was made in.
        assert "prompt_injection_suspected" in a.sink.last.input["context"]["taints"]
        assert "envoy/aware/allow = denied" in a.sink.last.decision.reasons[0]


async def test_a_policy_error_is_a_denial(tmp_path: Path) -> None:
    bad = tmp_path / "broken.rego"
    bad.write_text('package envoy.broken\n\nimport rego.v1\n\nallow := "yes"\n')
    bundle = opa_bundle(tmp_path, bad)
    config = ExtAuthzConfig(
        grpc_listen="127.0.0.1:0", mode="opa-envoy", decision_path="envoy/broken/allow"
    )
    a = await start_authz(config, bundle, (config.decision_path,))
    try:
        r = await a.check(check_request())
        assert r.status.code == code_pb2.PERMISSION_DENIED
        assert "illegal result type" in json.loads(r.denied_response.body)["reason"]
    finally:
        await a.server.stop(0)
        await a.runner.cleanup()


async def test_in_shadow_the_opa_denial_is_recorded_and_the_request_allowed(
    tmp_path: Path,
) -> None:
    async for a in opa_authz(tmp_path, "envoy/authz/result"):
        a.pdp.modes = Config(extauthz=ExtAuthzConfig(enforcement="shadow")).modes()
        bearer = {"authorization": f"Bearer {token('guest', 'b')}", MESH_HEADER: "coder"}
        delete = check_request("DELETE", headers=bearer)
        shadowed = await a.check(delete)
        assert shadowed.status.code == code_pb2.OK
        assert (a.sink.last.decision.effect, a.sink.last.enforced) == (Effect.DENY, False)
        assert shadowed.dynamic_metadata["interlock"]["effect"] == "allow"
        anonymous = await a.check(check_request(headers={}))
        assert anonymous.denied_response.status.code == 401, "identity is never shadowed"
        config = a.authorizer.config
        a.authorizer.config = config.model_copy(update={"decision_path": "envoy/authz/none"})
        broken = await a.check(delete)
        assert broken.denied_response.status.code == 403, "a policy error denies in shadow too"
        assert a.sink.last.enforced is True
        a.authorizer.config = config
        a.pdp.modes = Config(extauthz=ExtAuthzConfig()).modes()
        assert (await a.check(delete)).denied_response.status.code == 403
        assert (a.sink.last.decision.effect, a.sink.last.enforced) == (Effect.DENY, True)
