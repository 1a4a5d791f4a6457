"""`envoy.service.auth.v3.Authorization/Check` and `grpc.health.v1.Health` on grpc.aio.

Check takes the request as raw bytes and parses it itself (see `request.py`), so nothing
a client sends can turn into a gRPC error: every answer is an OK or a denial.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import unquote

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from interlock.core.model import Decision
from interlock.core.refusal import UNRECORDED, FloodLimit
from interlock.extauthz.authorizer import Authorizer
from interlock.extauthz.request import from_check_bytes
from interlock.extauthz.verdict import AuthzResponse, denial, unrecorded

log = logging.getLogger(__name__)
_T = TypeVar("_T")

SERVICE = "envoy.service.auth.v3.Authorization"
MAX_MESSAGE = 64 * 1024 * 1024
"""Far above any body limit: an oversized body is denied by the authorizer with a reason
rather than refused by gRPC with RESOURCE_EXHAUSTED."""
OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_ENVOY_STATUSES = frozenset(http_status_pb2.StatusCode.values())
SHED_STATUS = 503
"""What Envoy answers for a Check shed under overload (with `retry-after: 1`)."""
EXPIRED = "deadline passed before the Check was decided: dropped undecided"


def peer_address(peer: str) -> str:
    """The address in a gRPC peer (`ipv4:10.0.0.1:5000`, `ipv6:[::1]:5000`) without its
    port: Envoy opens several connections, the flood limit is per peer. gRPC
    percent-encodes the brackets of an IPv6 peer (`ipv6:%5B::1%5D:5000`)."""
    kind, _, rest = peer.partition(":")
    rest = unquote(rest)
    if kind in ("ipv4", "ipv6"):
        return rest.rpartition(":")[0].strip("[]") or rest
    return peer


def _options(headers: list[tuple[str, str]]) -> list[Any]:
    # Overwrite, not append: a header the policy sets must not sit beside a client's
    # spoofed copy of it.
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=k, value=v), append_action=OVERWRITE
        )
        for k, v in headers
    ]


def to_check_response(r: AuthzResponse) -> external_auth_pb2.CheckResponse:
    out = external_auth_pb2.CheckResponse()
    if r.metadata:
        out.dynamic_metadata.update(r.metadata)  # in place: a Struct and a copy cost a third more
    if r.allowed:
        out.status.CopyFrom(status_pb2.Status(code=code_pb2.OK))
        ok = out.ok_response
        ok.headers.extend(_options(r.headers))
        ok.headers_to_remove.extend(r.headers_to_remove)
        ok.response_headers_to_add.extend(_options(r.response_headers_to_add))
        ok.query_parameters_to_set.extend(
            base_pb2.QueryParameter(key=k, value=v) for k, v in r.query_parameters_to_set
        )
        ok.query_parameters_to_remove.extend(r.query_parameters_to_remove)
        return out
    out.status.CopyFrom(status_pb2.Status(code=code_pb2.PERMISSION_DENIED))
    denied = out.denied_response
    code = r.status if r.status in _ENVOY_STATUSES else 403
    denied.status.CopyFrom(http_status_pb2.HttpStatus(code=code))
    denied.headers.extend(_options(r.headers))
    denied.body = r.body
    return out


class ExtAuthzServer:
    def __init__(
        self, authorizer: Authorizer, listen: str, max_concurrent: int | None = None
    ) -> None:
        self.authorizer = authorizer
        self.listen = listen
        self.max_concurrent = max_concurrent
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None
        self.health = health.aio.HealthServicer()
        self.expired = 0
        """Checks dropped undecided because their caller's deadline had passed."""
        self.shed = 0
        """Checks refused undecided past `max_concurrent`."""
        self._active = 0
        """Checks being decided now."""
        self._running: set[asyncio.Task[Any]] = set()
        self.flood = FloodLimit(authorizer.pdp, "envoy")
        """Checks refused undecided, audited at most once a second per peer."""

    async def _check(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            # Under overload a Check can wait in the loop past its deadline: Envoy has
            # already applied its failure mode and nobody reads the answer. Deciding it
            # anyway is what turned an overload into a collapse (the completed rate fell
            # as the offered rate rose), so it is dropped undecided, and recorded as such.
            self.expired += 1
            if self.expired in (1, 10, 100) or not self.expired % 1000:
                log.warning("ext_authz: %d Checks past their deadline dropped", self.expired)
            told = await self._refused(raw, context.peer(), EXPIRED, {"undecided": True})
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"{EXPIRED} ({told})")
        if self.max_concurrent is not None and self._active >= self.max_concurrent:
            self.shed += 1
            if self.shed in (1, 10, 100) or not self.shed % 1000:
                log.warning("ext_authz: %d Checks shed past max_concurrent_checks", self.shed)
            why = f"interlock is overloaded (max_concurrent_checks {self.max_concurrent})"
            return await self._shed(raw, context.peer(), why)
        request = from_check_bytes(raw)  # before counting: nothing may leak a slot
        self._active += 1
        deciding = self._finished(self.authorizer.check(request))
        deciding.add_done_callback(self._decided)
        response = await asyncio.shield(deciding)
        out: bytes = to_check_response(response).SerializeToString()
        return out

    def _finished(self, work: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        """`work` run to its end even if gRPC cancels the Check (its caller gave up):
        a decision or refusal under way is recorded once, not cut off mid-write. Held
        until done, and awaited by `stop`."""
        task = asyncio.get_running_loop().create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    def _decided(self, _: object) -> None:
        # Counted until the decision ends, not the call: a cancelled call's decision
        # still holds its place under max_concurrent.
        self._active -= 1

    async def _shed(self, raw: bytes, peer: str, why: str) -> bytes:
        """A denial, not a gRPC error: Envoy applies `failure_mode_allow` to errors, and
        with it on a shed Check would pass undecided while its record says denied."""
        decision = await self._record(raw, peer, why, {"shed": True})
        if decision is None:
            response = unrecorded(f"{why}; {UNRECORDED}", SHED_STATUS)
        else:
            response = denial(decision, SHED_STATUS)
        response.headers.append(("retry-after", "1"))
        out: bytes = to_check_response(response).SerializeToString()
        return out

    async def _refused(self, raw: bytes, peer: str, why: str, details: dict[str, Any]) -> str:
        """Records a Check refused undecided; what its caller can be told of the record."""
        decision = await self._record(raw, peer, why, details)
        return UNRECORDED if decision is None else f"decision {decision.decision_id}"

    async def _record(
        self, raw: bytes, peer: str, why: str, details: dict[str, Any]
    ) -> Decision | None:
        """At most one record a second per peer (the rest counted into the next one):
        under overload, writing one per refused Check would feed the overload."""
        client = peer_address(peer)
        suppressed = self.flood.take(client)
        if suppressed is None:
            return None
        noted = {**details, "client": client, "suppressed_since_last": suppressed}
        refusing = self.authorizer.refuse_undecided(from_check_bytes(raw), why, noted)
        return await asyncio.shield(self._finished(refusing))

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
            ],
        )
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {"Check": grpc.unary_unary_rpc_method_handler(self._check)},
        )
        server.add_generic_rpc_handlers((handler,))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        self.port = server.add_insecure_port(self.listen)
        if not self.port:
            raise OSError(f"cannot listen on {self.listen}")
        await server.start()
        self.flood.start()
        for name in ("", SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.server = server

    async def stop(self, grace: float = 5.0) -> None:
        if self.server is not None:
            await self.health.enter_graceful_shutdown()
            await self.server.stop(grace)
            self.server = None
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        await self.flood.stop()
