"""`envoy.service.auth.v3.Authorization/Check` and `grpc.health.v1.Health` on grpc.aio.

Check takes the request as raw bytes and parses it itself (see `request.py`), so nothing
a client sends can turn into a gRPC error: every answer is an OK or a denial.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from interlock.extauthz.authorizer import Authorizer
from interlock.extauthz.request import from_check_bytes
from interlock.extauthz.verdict import AuthzResponse

log = logging.getLogger(__name__)

SERVICE = "envoy.service.auth.v3.Authorization"
MAX_MESSAGE = 64 * 1024 * 1024
"""Far above any body limit: an oversized body is denied by the authorizer with a reason
rather than refused by gRPC with RESOURCE_EXHAUSTED."""
OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_ENVOY_STATUSES = frozenset(http_status_pb2.StatusCode.values())


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
        meta = struct_pb2.Struct()
        meta.update(r.metadata)
        out.dynamic_metadata.CopyFrom(meta)
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

    async def _check(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            # Under overload a Check can wait in the loop past its deadline: Envoy has
            # already denied the request (failure_mode_allow false) and nobody reads the
            # answer. Deciding it anyway is what turned an overload into a collapse (the
            # completed rate fell as the offered rate rose), so it is dropped, undecided
            # and unaudited, as a call refused at the door would be.
            self.expired += 1
            if self.expired in (1, 10, 100) or not self.expired % 1000:
                log.warning("ext_authz: %d Checks past their deadline dropped", self.expired)
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed in queue")
        response = await self.authorizer.check(from_check_bytes(raw))
        out: bytes = to_check_response(response).SerializeToString()
        return out

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
            ],
            maximum_concurrent_rpcs=self.max_concurrent,
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
        for name in ("", SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.server = server

    async def stop(self, grace: float = 5.0) -> None:
        if self.server is not None:
            await self.health.enter_graceful_shutdown()
            await self.server.stop(grace)
            self.server = None
