"""Shared set-up: an ext_authz server (gRPC and HTTP) on the real PDP, and an app."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from interlock.approvals.holds import Holds
from interlock.config import AgentConfig, ExtAuthzConfig
from interlock.core.pdp import PDP
from interlock.extauthz.authorizer import Authorizer
from interlock.extauthz.grpc_server import ExtAuthzServer
from interlock.extauthz.http_server import make_app
from interlock.identity.registry import AgentRegistry
from interlock.testing import CaptureSink, make_pdp

POLICIES = Path(__file__).resolve().parents[2] / "interlock" / "policies"
MESH_HEADER = "x-mesh-agent"


@dataclass
class Authz:
    authorizer: Authorizer
    server: ExtAuthzServer
    sink: CaptureSink
    runner: web.AppRunner
    """The HTTP authz endpoint's runner."""

    @property
    def holds(self) -> Holds:
        assert self.authorizer.holds is not None
        return self.authorizer.holds

    @property
    def http_port(self) -> int:
        port: int = self.runner.addresses[0][1]
        return port

    @property
    def pdp(self) -> PDP:
        return self.authorizer.pdp

    @property
    def grpc_port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    async def check(self, req: Any) -> Any:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            return await stub.Check(req, timeout=10)


@dataclass
class App:
    port: int
    seen: list[dict[str, Any]] = field(default_factory=list)


def check_request(
    method: str = "GET",
    path: str = "/people",
    headers: dict[str, str] | None = None,
    body: str = "",
    host: str = "app.mesh",
) -> Any:
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.method, http.path, http.host, http.scheme, http.protocol = (
        method,
        path,
        host,
        "http",
        "HTTP/1.1",
    )
    http.headers.update(headers if headers is not None else {MESH_HEADER: "coder"})
    if body:
        http.body = body
        http.size = len(body.encode())
    req.attributes.source.address.socket_address.address = "10.0.0.9"
    return req


def opa_bundle(tmp_path: Path, *policies: Path) -> Path:
    """The bundled interlock policy plus OPA-Envoy policies, as one bundle directory."""
    bundle = tmp_path / "bundle"
    shutil.copytree(POLICIES, bundle)
    for p in policies:
        shutil.copy(p, bundle / p.name)
    return bundle


async def start_authz(
    config: ExtAuthzConfig, bundle: Path | None = None, entrypoints: tuple[str, ...] = ()
) -> Authz:
    sink = CaptureSink()
    pdp = make_pdp(bundle, sink=sink, entrypoints=("interlock/decision", *entrypoints))
    registry = AgentRegistry.from_config(
        {"coder": AgentConfig(token="coder-token-0123456789"), "admin-bot": AgentConfig()}
    )
    holds = Holds()
    holds.pdp = pdp
    authorizer = Authorizer(config, pdp, registry, holds=holds)
    server = ExtAuthzServer(authorizer, "127.0.0.1:0")
    await server.start()
    runner = web.AppRunner(make_app(authorizer))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return Authz(authorizer, server, sink, runner)


@pytest.fixture
async def authz() -> AsyncIterator[Authz]:
    a = await start_authz(ExtAuthzConfig(grpc_listen="127.0.0.1:0", identity_header=MESH_HEADER))
    yield a
    await a.holds.close()
    await a.server.stop(0)
    await a.runner.cleanup()


@pytest.fixture
async def app() -> AsyncIterator[App]:
    a = App(0)

    async def handler(request: web.Request) -> web.Response:
        a.seen.append(
            {"method": request.method, "path": request.raw_path, "headers": dict(request.headers)}
        )
        return web.json_response({"path": request.raw_path})

    web_app = web.Application()
    web_app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(web_app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    a.port = runner.addresses[0][1]
    yield a
    await runner.cleanup()


@dataclass
class RawUpstream:
    """An HTTP/1.1 upstream that logs each request's target exactly as the bytes arrived
    (no parser between the wire and the log) and answers 200."""

    port: int = 0
    targets: list[str] = field(default_factory=list)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *fields = head.decode("latin-1").split("\r\n")
                self.targets.append(line.split(" ")[1])
                headers = dict(f.lower().split(":", 1) for f in fields if ":" in f)
                if "chunked" in headers.get("transfer-encoding", ""):
                    await reader.readuntil(b"0\r\n\r\n")
                else:
                    await reader.readexactly(int(headers.get("content-length", "0")))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    up = RawUpstream()
    server = await asyncio.start_server(up._serve, "127.0.0.1", 0)
    up.port = server.sockets[0].getsockname()[1]
    yield up
    server.close()


async def send_raw(port: int, target: str, headers: dict[str, str]) -> int:
    """GET `target` sent byte for byte (an HTTP client would normalise it); the status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {target} HTTP/1.1", "host: app.mesh", "connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
    status = await reader.readline()
    writer.close()
    return int(status.split()[1])
