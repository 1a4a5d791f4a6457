"""Helpers for the HTTP proxy tests: start a proxy, speak raw HTTP/1.1 to it."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

from interlock.config import AgentConfig, HttpConfig
from interlock.core.record import DecisionRecord
from interlock.identity.registry import AgentRegistry
from interlock.proxies.http.server import HttpProxy
from interlock.testing import CaptureSink, make_pdp

TOKEN = "coder-token-0123456789"
BASIC = base64.b64encode(f"coder:{TOKEN}".encode()).decode()


async def start_proxy(tmp_path: Path, **config: Any) -> tuple[HttpProxy, CaptureSink]:
    sink = CaptureSink()
    proxy = HttpProxy(
        HttpConfig(listen="127.0.0.1:0", **config),
        tmp_path / "data",
        make_pdp(sink=sink),
        AgentRegistry.from_config({"coder": AgentConfig(token=TOKEN)}),
    )
    await proxy.start()
    return proxy, sink


def proxy_url(proxy: HttpProxy) -> str:
    assert proxy.address is not None
    return f"http://coder:{TOKEN}@{proxy.address[0]}:{proxy.address[1]}"


async def raw_exchange(address: tuple[str, int], request: bytes, limit: float = 15) -> bytes:
    """Send `request` as is and read until the proxy closes or stops talking."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(request)
        await writer.drain()
        out = b""
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), limit)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and out.startswith(b"HTTP/1.1 4"):
                # A refusal is complete once its declared body has arrived.
                head, _, body = out.partition(b"\r\n\r\n")
                length = [
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if length and len(body) >= length[0]:
                    break
        return out
    finally:
        writer.close()


def absolute_form(target: str, path: str = "/x") -> bytes:
    return (
        f"GET http://{target}{path} HTTP/1.1\r\nHost: {target}\r\n"
        f"Proxy-Authorization: Basic {BASIC}\r\nConnection: close\r\n\r\n"
    ).encode()


def connect(target: str) -> bytes:
    return (
        f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic {BASIC}\r\n\r\n"
    ).encode()


async def websocket(
    proxy: HttpProxy, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket opened through the proxy to 127.0.0.1:`port` (absolute form)."""
    assert proxy.address is not None
    reader, writer = await asyncio.open_connection(*proxy.address)
    writer.write(
        (
            f"GET http://127.0.0.1:{port}/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Proxy-Authorization: Basic {BASIC}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    return reader, writer


async def tunnel(
    proxy: HttpProxy, target: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A CONNECT tunnel through the proxy to `target` (`host:port`), accepted."""
    assert proxy.address is not None
    reader, writer = await asyncio.open_connection(*proxy.address)
    writer.write(connect(target))
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    return reader, writer


def decided(sink: CaptureSink) -> list[DecisionRecord]:
    """Records of decisions the policy made: a guard's refusal is audited without one."""
    return [r for r in sink.records if r.engine is not None]


def refusal_record(sink: CaptureSink, answer: bytes) -> DecisionRecord:
    """The one audited guard refusal, checked to be the one `answer`'s body names."""
    [record] = [r for r in sink.records if r.action.details.get("guard")]
    body = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert body["decision_id"] == record.decision.decision_id, (body, record)
    assert record.decision.effect.value == "deny"
    return record
