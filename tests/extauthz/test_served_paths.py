"""Real Envoy and NGINX in front of an upstream that logs the raw request target: every
request is refused, or the upstream received exactly the path interlock decided on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from interlock.core.model import Effect
from tests.extauthz.conftest import MESH_HEADER, Authz, RawUpstream, send_raw
from tests.extauthz.respell import readings, respellings
from tests.extauthz.test_paths import SECOND_READINGS
from tests.services import envoy_server, nginx_server

pytestmark = pytest.mark.integration

ISSUE_19 = [
    "/public/%252e%252e/admin",
    "/public/..%252fadmin",
    "/public/%ef%bc%8f..%ef%bc%8fadmin",
    "/public/..%2fadmin",
]
TRICKY = [
    "/public/x",
    "//public//..//admin",
    "/public//../admin",
    "/public/../admin",
    "/public/./x/../y",
    "/public/%2e%2e/admin",
    "/public/%2E./admin",
    "/public/.%2e/admin",
    "/public/..;/admin",
    "/public;x/../admin",
    "/public/..%2fadmin",
    "/public/..%5cadmin",
    "/public/..\\admin",
    "/public/%41dmin",
    "/public/a%20b",
    "/public/%7euser",
    "/public/x?next=/../admin",
    "/public/x#/../../admin",
    "/public/%c0%ae%c0%ae/admin",
    "/public/%u002e%u002e/admin",
    "/public/\uff0f..\uff0fadmin",
    *(raw for raw, _ in SECOND_READINGS),
]


async def served_or_refused(authz: Authz, up: RawUpstream, port: int, target: str) -> str:
    """Send `target`; if anything reached the upstream, it is the one request interlock
    allowed, byte for byte what interlock decided on. Returns what happened."""
    records, seen = len(authz.sink.records), len(up.targets)
    status = await send_raw(port, target, {MESH_HEADER: "coder"})
    arrived = up.targets[seen:]
    if not 200 <= status < 300:
        assert arrived == [], (target, status, arrived)
        return f"refused {status}"
    assert len(arrived) == 1, (target, arrived)
    (record,) = authz.sink.records[records:]
    assert record.decision.effect is Effect.ALLOW
    details = record.action.details
    # Interlock saw the bytes the upstream got, and every reading of them is the path
    # the decision was made on.
    assert arrived[0] == details["raw_path"], (target, arrived, details["raw_path"])
    assert readings(arrived[0]) == {details["path"]}, (target, arrived, details["path"])
    return f"served {arrived[0]}"


@pytest.fixture
def envoy(authz: Authz, raw_upstream: RawUpstream) -> Iterator[int]:
    with envoy_server(raw_upstream.port, authz.grpc_port) as port:
        yield port


@pytest.fixture
def nginx(authz: Authz, raw_upstream: RawUpstream) -> Iterator[int]:
    with nginx_server(raw_upstream.port, authz.http_port) as port:
        yield port


async def test_envoy_serves_only_the_path_interlock_decided_on(
    authz: Authz, raw_upstream: RawUpstream, envoy: int
) -> None:
    outcomes = {t: await served_or_refused(authz, raw_upstream, envoy, t) for t in TRICKY}
    # Envoy normalises before ext_authz (normalize_path, merge_slashes), so what
    # interlock sees is what is forwarded; the double readings are refused either way.
    assert outcomes["//public//..//admin"] == "served /public/admin"
    assert outcomes["/public/%2e%2e/admin"] == "served /admin"
    for issue in ISSUE_19:
        assert outcomes[issue].startswith("refused"), (issue, outcomes[issue])


async def test_nginx_serves_only_the_path_interlock_decided_on(
    authz: Authz, raw_upstream: RawUpstream, nginx: int
) -> None:
    outcomes = {t: await served_or_refused(authz, raw_upstream, nginx, t) for t in TRICKY}
    # NGINX forwards the raw target: interlock refuses what upstreams read differently.
    assert outcomes["//public//..//admin"].startswith("refused")
    assert outcomes["/public/../admin"] == "served /public/../admin"
    for raw, _ in SECOND_READINGS:
        assert outcomes[raw].startswith("refused"), (raw, outcomes[raw])


@pytest.fixture(params=["envoy", "nginx"])
def front(request: pytest.FixtureRequest, authz: Authz, raw_upstream: RawUpstream) -> Iterator[int]:
    if request.param == "envoy":
        with envoy_server(raw_upstream.port, authz.grpc_port) as port:
            yield port
    else:
        with nginx_server(raw_upstream.port, authz.http_port) as port:
            yield port


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(target=respellings())
async def test_respellings_are_refused_or_served_as_decided(
    authz: Authz, raw_upstream: RawUpstream, front: int, target: str
) -> None:
    await served_or_refused(authz, raw_upstream, front, target)
