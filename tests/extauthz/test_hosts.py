"""The target a request is decided on is the host the upstream serves, in one spelling."""

from __future__ import annotations

import asyncio

import pytest

from tests.extauthz.conftest import MESH_HEADER, Authz
from tests.services import envoy_server

pytestmark = pytest.mark.integration


async def test_every_spelling_of_a_host_is_decided_as_one_target(authz: Authz) -> None:
    """Envoy forwards the authority as sent: `Payments.Internal.:80` reaches the upstream
    (which serves it as `payments.internal`), and is decided as that target."""
    hosts: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        fields = head.split("\r\n")[1:]
        hosts.extend(f.split(":", 1)[1].strip() for f in fields if f.lower().startswith("host:"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    targets = []
    try:
        with envoy_server(port, authz.grpc_port) as front:
            for host in ("payments.internal", "Payments.Internal.", "payments.internal.:80"):
                reader, writer = await asyncio.open_connection("127.0.0.1", front)
                head = f"GET /x HTTP/1.1\r\nhost: {host}\r\n{MESH_HEADER}: coder\r\n"
                writer.write(f"{head}connection: close\r\n\r\n".encode())
                assert b" 200 " in await reader.readline()
                writer.close()
                targets.append(authz.sink.records[-1].action.target)
    finally:
        server.close()
    assert hosts == ["payments.internal", "Payments.Internal.", "payments.internal.:80"]
    assert targets == ["payments.internal"] * 3
