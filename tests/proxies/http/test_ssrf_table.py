"""The SSRF table: every way of naming an internal address, as an absolute-form request and
as a CONNECT, against the listening proxy. Names are answered by a real DNS server
(dnsmasq on loopback) that the proxy is configured to use."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from interlock.proxies.http.server import HttpProxy
from interlock.testing import CaptureSink
from tests.proxies.http.util import absolute_form, connect, proxy_url, raw_exchange, start_proxy
from tests.services import dns_server

pytestmark = pytest.mark.integration

RECORDS = {
    "private.test": ["10.1.2.3"],
    "mixed.test": ["93.184.216.34", "10.0.0.7"],
    "v6.test": ["2606:4700::1", "fd00::7"],
    "metadata.test": ["169.254.169.254"],
    "loop.test": ["127.0.0.1"],
}

TABLE = [
    ("169.254.169.254", "link-local"),
    ("2130706433", "loopback"),
    ("0177.0.0.1", "loopback"),
    ("0x7f000001", "loopback"),
    ("0x7f.1", "loopback"),
    ("127.1", "loopback"),
    ("[::1]", "loopback"),
    ("[::ffff:127.0.0.1]", "loopback"),
    ("[::ffff:a9fe:a9fe]", "link-local"),
    ("[64:ff9b::a9fe:a9fe]", "link-local"),
    ("[64:ff9b::7f00:1]", "loopback"),
    ("[::ffff:0:127.0.0.1]", "loopback (IPv4 127.0.0.1 inside the IPv4-translated"),
    ("[::ffff:0:a9fe:a9fe]", "link-local"),
    ("[64:ff9b:1::a9fe:a9fe]", "inside the NAT64 local-use address"),
    ("[2002:a9fe:a9fe::1]", "link-local (cloud metadata) (IPv4 169.254.169.254 inside the 6to4"),
    ("[2001:0:4136:e378:8000:63bf:80ff:fffe]", "loopback (IPv4 127.0.0.1 inside the Teredo"),
    (
        "[2606:4700::5efe:a9fe:a9fe]",
        "link-local (cloud metadata) (IPv4 169.254.169.254 inside the ISATAP",
    ),
    ("[64:ff9b::808:808]", "allow_tunnelled_ipv6 is off"),
    ("[2002:808:808::1]", "allow_tunnelled_ipv6 is off"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("[fd00::1]", "unique-local"),
    ("10.0.0.1", "private"),
    ("192.168.1.1", "private"),
    ("private.test", "private"),
    ("mixed.test", "private"),
    ("v6.test", "unique-local"),
    ("metadata.test", "link-local"),
    ("loop.test", "loopback"),
]


@pytest.fixture(scope="module")
def dns_port() -> Iterator[int]:
    with dns_server(RECORDS) as port:
        yield port


@pytest.fixture
async def guarded(tmp_path: Path, dns_port: int) -> AsyncIterator[tuple[HttpProxy, CaptureSink]]:
    proxy, sink = await start_proxy(tmp_path, dns_servers=[f"127.0.0.1:{dns_port}"])
    yield proxy, sink
    await proxy.stop()


def refusal(raw: bytes) -> dict[str, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403"), raw[:300]
    doc: dict[str, str] = json.loads(body)
    return doc


@pytest.mark.parametrize(("host", "why"), TABLE)
async def test_absolute_form_to_an_internal_address_is_refused(
    guarded: tuple[HttpProxy, CaptureSink], host: str, why: str
) -> None:
    proxy, sink = guarded
    assert proxy.address is not None
    doc = refusal(await raw_exchange(proxy.address, absolute_form(f"{host}:80")))
    assert doc["error"] == "forbidden destination"
    assert why in doc["reason"]
    # Refused before the policy is asked, and audited: one denial, the one the body names.
    (record,) = sink.records
    assert record.decision.effect.value == "deny"
    assert record.decision.decision_id == doc["decision_id"]
    assert record.engine is None, "no policy was evaluated"
    assert why in record.decision.reasons[0]


@pytest.mark.parametrize(("host", "why"), TABLE)
async def test_connect_to_an_internal_address_is_refused(
    guarded: tuple[HttpProxy, CaptureSink], host: str, why: str
) -> None:
    proxy, sink = guarded
    assert proxy.address is not None
    doc = refusal(await raw_exchange(proxy.address, connect(f"{host}:443")))
    assert why in doc["reason"]
    (record,) = sink.records
    assert (record.action.operation.value, record.decision.effect.value) == ("connect", "deny")
    assert record.decision.decision_id == doc["decision_id"]


async def test_an_allowed_network_is_reached_through_the_configured_resolver(
    tmp_path: Path, dns_port: int
) -> None:
    """The control: the same resolver path reaches a name once its network is allowed."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"host": request.host})

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    proxy, sink = await start_proxy(
        tmp_path, dns_servers=[f"127.0.0.1:{dns_port}"], allow_networks=["127.0.0.0/8"]
    )
    try:
        async with httpx.AsyncClient(proxy=proxy_url(proxy)) as client:
            r = await client.get(f"http://loop.test:{port}/")
        assert r.json() == {"host": f"loop.test:{port}"}
        assert sink.last.action.target == "loop.test"
        async with httpx.AsyncClient(proxy=proxy_url(proxy)) as client:
            r = await client.get(f"http://nosuch.test:{port}/")
        assert r.status_code == 403
        assert "nosuch.test has no addresses" in r.json()["reason"]
    finally:
        await proxy.stop()
        await runner.cleanup()


@pytest.mark.parametrize("spelling", ["loop.test.", "LOOP.test"])
async def test_no_spelling_of_a_passthrough_host_skips_its_decision(
    tmp_path: Path, dns_port: int, spelling: str
) -> None:
    proxy, sink = await start_proxy(
        tmp_path,
        dns_servers=[f"127.0.0.1:{dns_port}"],
        allow_networks=["127.0.0.0/8"],
        passthrough=["loop.test"],
    )
    try:
        assert proxy.address is not None
        await proxy.pdp.store.restrict("coder", ["no_egress"])
        raw = await raw_exchange(proxy.address, connect(f"{spelling}:443"))
        assert raw.startswith(b"HTTP/1.1 403"), raw[:200]
        assert sink.last.action.operation.value == "connect"
        assert "no_egress" in refusal_reason(raw)
    finally:
        await proxy.stop()


def refusal_reason(raw: bytes) -> str:
    reason: str = json.loads(raw.partition(b"\r\n\r\n")[2])["reason"]
    return reason
