"""Overload is answered, not queued: Checks past the concurrency limit are refused at
once, and a Check whose caller already gave up is dropped without a decision."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from google.rpc import code_pb2

from interlock.extauthz.authorizer import Authorizer
from interlock.extauthz.grpc_server import ExtAuthzServer
from interlock.extauthz.request import AuthzRequest
from interlock.extauthz.verdict import AuthzResponse
from tests.extauthz.conftest import Authz, check_request

pytestmark = pytest.mark.integration


class Blocking(Authorizer):
    """Holds every Check until released, so the test controls how many are in flight."""

    def __init__(self, inner: Authorizer) -> None:
        self.inner = inner
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def check(self, req: AuthzRequest) -> AuthzResponse:
        self.entered.set()
        await self.release.wait()
        return await self.inner.check(req)


async def test_checks_beyond_the_limit_are_refused_at_once(authz: Authz) -> None:
    blocking = Blocking(authz.authorizer)
    server = ExtAuthzServer(blocking, "127.0.0.1:0", max_concurrent=1)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            first = asyncio.ensure_future(stub.Check(check_request(), timeout=10))
            await asyncio.wait_for(blocking.entered.wait(), 10)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Check(check_request(), timeout=10)
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            blocking.release.set()
            assert (await first).status.code == code_pb2.OK
    finally:
        await server.stop(0)
    assert len(authz.sink.records) == 1, "the refused Check was never decided"


class Expired:
    """The part of a ServicerContext `_check` reads, for a caller whose deadline passed."""

    def time_remaining(self) -> float:
        return -0.2

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise grpc.aio.AbortError(f"{code}: {details}")


async def test_a_check_past_its_deadline_is_dropped_undecided(authz: Authz) -> None:
    server = ExtAuthzServer(authz.authorizer, "127.0.0.1:0")
    raw = check_request().SerializeToString()
    context: Any = Expired()
    with pytest.raises(grpc.aio.AbortError, match="DEADLINE_EXCEEDED"):
        await server._check(raw, context)
    assert server.expired == 1
    assert authz.sink.records == []
