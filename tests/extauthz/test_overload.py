"""Overload is answered, not queued: Checks past the concurrency limit are denied at once
and a Check whose caller already gave up is dropped without a decision; each is recorded
as refused undecided, or counted in a later record (the flood limit)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from google.rpc import code_pb2

from interlock.core.refusal import UNRECORDED, refusals_counted
from interlock.extauthz.authorizer import Authorizer
from interlock.extauthz.grpc_server import EXPIRED, ExtAuthzServer, peer_address
from interlock.extauthz.request import AuthzRequest
from interlock.extauthz.verdict import DECISION_HEADER, AuthzResponse
from tests.extauthz.conftest import MESH_HEADER, App, Authz, check_request
from tests.services import envoy_server

pytestmark = pytest.mark.integration


class Blocking(Authorizer):
    """Holds every Check until released, so the test controls how many are in flight."""

    def __init__(self, inner: Authorizer) -> None:
        super().__init__(inner.config, inner.pdp, inner.registry, inner.jwt, inner.holds)
        self.inner = inner
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def check(self, req: AuthzRequest) -> AuthzResponse:
        self.entered.set()
        await self.release.wait()
        return await self.inner.check(req)


@contextlib.asynccontextmanager
async def one_at_a_time(authz: Authz) -> AsyncIterator[tuple[Blocking, ExtAuthzServer]]:
    """A server deciding one Check at a time, over an authorizer that holds each one."""
    blocking = Blocking(authz.authorizer)
    server = ExtAuthzServer(blocking, "127.0.0.1:0", max_concurrent=1)
    await server.start()
    try:
        yield blocking, server
    finally:
        await server.stop(0)  # also writes what the flood limit still counted


async def test_checks_beyond_the_limit_are_denied_at_once_and_accounted(authz: Authz) -> None:
    async with (
        one_at_a_time(authz) as (blocking, server),
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        first = asyncio.ensure_future(stub.Check(check_request(), timeout=10))
        await asyncio.wait_for(blocking.entered.wait(), 10)
        shed = await asyncio.gather(*(stub.Check(check_request(), timeout=10) for _ in range(4)))
        blocking.release.set()
        assert (await first).status.code == code_pb2.OK
    assert server.shed == 4
    assert {(r.status.code, r.denied_response.status.code) for r in shed} == {
        (code_pb2.PERMISSION_DENIED, 503)
    }
    bodies = [json.loads(r.denied_response.body) for r in shed]
    [written] = [r for r in authz.sink.records if r.action.details.get("shed")]
    assert written.decision.reasons == ("interlock is overloaded (max_concurrent_checks 1)",)
    assert (written.action.agent.id, written.action.details["client"]) == ("anonymous", "127.0.0.1")
    assert written.action.details["raw_path"] == "/people", "the record names the request"
    told = [b.get("decision_id") for b in bodies]
    assert told.count(written.decision.decision_id) == 1, "its client is told the id"
    assert told.count(None) == 3
    assert all(UNRECORDED in b["reason"] for b in bodies if "decision_id" not in b)
    [summary] = [r for r in authz.sink.records if r.action.details.get("summary")]
    assert summary.action.details["suppressed_since_last"] == 3
    assert refusals_counted(authz.sink.records) == 4, "every shed Check is accounted for"
    decided = [r for r in authz.sink.records if not r.action.details.get("guard")]
    assert len(decided) == 1, "no shed Check was decided"


async def test_envoy_denies_a_shed_check_even_with_failure_mode_allow(
    authz: Authz, app: App
) -> None:
    """Shedding answers a denial, not a gRPC error: with `failure_mode_allow: true` an
    error would let the request through while its record says it was refused."""
    async with one_at_a_time(authz) as (blocking, server):
        assert server.port is not None
        with envoy_server(app.port, server.port, failure_mode_allow=True) as port:
            async with httpx.AsyncClient(timeout=15) as client:
                url = f"http://127.0.0.1:{port}"
                held = asyncio.ensure_future(
                    client.get(url + "/held", headers={MESH_HEADER: "coder"})
                )
                await asyncio.wait_for(blocking.entered.wait(), 10)
                r = await client.get(url + "/shed", headers={MESH_HEADER: "coder"})
                blocking.release.set()
                await held
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    [written] = [x for x in authz.sink.records if x.action.details.get("shed")]
    assert r.headers[DECISION_HEADER] == written.decision.decision_id == r.json()["decision_id"]
    assert written.action.details["raw_path"] == "/shed"
    assert "/shed" not in [s["path"] for s in app.seen], "the shed request never arrived"


class Expired:
    """The part of a ServicerContext `_check` reads, for a caller whose deadline passed."""

    def time_remaining(self) -> float:
        return -0.2

    def peer(self) -> str:
        return "ipv6:[2001:db8::5]:41000"

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise grpc.aio.AbortError(f"{code}: {details}")


async def test_a_check_past_its_deadline_is_recorded_as_refused_undecided(authz: Authz) -> None:
    server = ExtAuthzServer(authz.authorizer, "127.0.0.1:0")
    raw = check_request().SerializeToString()
    context: Any = Expired()
    with pytest.raises(grpc.aio.AbortError, match="DEADLINE_EXCEEDED") as first:
        await server._check(raw, context)
    with pytest.raises(grpc.aio.AbortError, match=UNRECORDED.split(":")[0]):
        await server._check(raw, context)
    await server.flood.stop()
    assert server.expired == 2
    written, summary = authz.sink.records
    assert written.decision.reasons == (EXPIRED,)
    assert written.action.details["undecided"] is True
    assert written.action.details["client"] == "2001:db8::5"
    assert written.decision.decision_id in str(first.value), "the abort names the record"
    assert summary.action.details["suppressed_since_last"] == 1
    assert refusals_counted(authz.sink.records) == 2


async def test_a_check_whose_caller_gives_up_mid_decision_is_still_recorded_once(
    authz: Authz,
) -> None:
    """gRPC cancels the handler of a call whose deadline passes; the decision under way
    runs to its end, so it is in the log (once) and keeps its place under the limit."""
    async with (
        one_at_a_time(authz) as (blocking, server),
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as gave_up:
            await stub.Check(check_request(path="/late"), timeout=0.5)
        assert gave_up.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert blocking.entered.is_set()
        assert server._active == 1
        shed = await stub.Check(check_request(), timeout=10)
        assert shed.denied_response.status.code == 503, "the place is still taken"
        blocking.release.set()
    assert server._active == 0
    decided = [r for r in authz.sink.records if not r.action.details.get("guard")]
    assert [r.action.details["raw_path"] for r in decided] == ["/late"]


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.0.0.1:5000", "10.0.0.1"),
        ("ipv6:[::1]:5000", "::1"),
        ("ipv6:%5B::1%5D:56794", "::1"),  # as grpc.aio reports it
        ("unix:/run/envoy.sock", "unix:/run/envoy.sock"),
    ],
)
def test_the_flood_limit_is_per_peer_address(peer: str, address: str) -> None:
    assert peer_address(peer) == address
