"""NGINX `auth_request` (compose/nginx-auth-request.conf) against the HTTP authz endpoint."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.extauthz.conftest import MESH_HEADER, App, Authz
from tests.services import nginx_server

pytestmark = pytest.mark.integration


@pytest.fixture
def nginx(authz: Authz, app: App) -> Iterator[str]:
    with nginx_server(app.port, authz.http_port) as port:
        yield f"http://127.0.0.1:{port}"


async def test_allowed_requests_pass_with_the_verified_agent(
    authz: Authz, app: App, nginx: str
) -> None:
    async with httpx.AsyncClient(timeout=15) as client:
        r = await client.get(
            nginx + "/people?page=2", headers={MESH_HEADER: "coder", "X-Interlock-Agent": "root"}
        )
    assert r.status_code == 200
    record = authz.sink.last
    assert r.headers["x-interlock-decision-id"] == record.decision.decision_id
    assert app.seen[-1]["headers"]["X-Interlock-Agent"] == "coder"
    assert record.action.details["path"] == "/people"
    assert record.action.details["query_keys"] == ("page",)


async def test_denied_requests_are_refused_by_nginx(authz: Authz, app: App, nginx: str) -> None:
    await authz.pdp.store.restrict("coder", ["read_only"])
    async with httpx.AsyncClient(timeout=15) as client:
        write = await client.post(nginx + "/people", json={}, headers={MESH_HEADER: "coder"})
        anonymous = await client.get(nginx + "/people")
        bad = await client.get(nginx + "/files/a%2Fb", headers={MESH_HEADER: "coder"})
    assert write.status_code == 403
    assert authz.sink.records[-3].action.details["method"] == "POST"
    assert anonymous.status_code == 401
    assert bad.status_code == 403
    assert "encoded slash" in authz.sink.last.decision.reasons[0]
    assert app.seen == []


async def test_with_interlock_unreachable_nginx_fails_closed(
    authz: Authz, app: App, nginx: str
) -> None:
    await authz.runner.cleanup()
    async with httpx.AsyncClient(timeout=15) as client:
        r = await client.get(nginx + "/people", headers={MESH_HEADER: "coder"})
    assert r.status_code == 500
    assert app.seen == []
