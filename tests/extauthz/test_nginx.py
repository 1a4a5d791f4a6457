"""NGINX `auth_request` (compose/nginx-auth-request.conf) against the HTTP authz endpoint,
and both deployment files failing closed fast when interlock hangs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager

import httpx
import pytest

from tests.extauthz.conftest import MESH_HEADER, App, Authz, RawUpstream, send_raw
from tests.services import envoy_server, nginx_server

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


@pytest.fixture
async def hung_port() -> AsyncIterator[int]:
    """An authz endpoint that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hang(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for w in held:
        w.close()
    server.close()


@pytest.mark.parametrize(("front", "status"), [(nginx_server, 500), (envoy_server, 403)])
async def test_with_interlock_hung_the_proxy_fails_closed_within_two_seconds(
    raw_upstream: RawUpstream,
    hung_port: int,
    front: Callable[[int, int], AbstractContextManager[int]],
    status: int,
) -> None:
    """compose/nginx-auth-request.conf (1 s subrequest timeouts) and compose/envoy.yaml
    (1 s ext_authz timeout) against an authz endpoint that never answers."""
    with front(raw_upstream.port, hung_port) as port:
        started = time.monotonic()
        answer = await send_raw(port, "/people", {MESH_HEADER: "coder"})
        elapsed = time.monotonic() - started
    assert answer == status
    assert elapsed < 2.0, elapsed
    assert raw_upstream.targets == []
