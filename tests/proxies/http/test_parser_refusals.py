"""What mitmproxy's own HTTP/1 parser refuses is audited like any guard's refusal, at most
once a second per client address, and nothing of it reaches the upstream (issue 23)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interlock.config import ReverseRoute
from interlock.core.record import DecisionRecord
from interlock.core.refusal import refusals_counted
from interlock.proxies.http.tunnel import refused_handshake
from interlock.testing import CaptureSink
from tests.proxies.http import test_refusals_audited
from tests.proxies.http.rawh2 import h2_exchange
from tests.proxies.http.rawupstream import RawUpstream
from tests.proxies.http.util import BASIC, raw_exchange, start_proxy, tunnel

pytestmark = pytest.mark.integration

Rig = test_refusals_audited.Rig
rig = test_refusals_audited.rig
"""A proxy (flood limit as configured) and a raw-socket upstream logging what it reads."""
AUTH = f"Proxy-Authorization: Basic {BASIC}\r\n".encode()


def guarded(sink: CaptureSink) -> list[DecisionRecord]:
    return [r for r in sink.records if r.action.details.get("guard")]


async def until(condition: Callable[[], bool], limit: float = 5) -> None:
    """Wait for `condition`: a refusal that closes the connection without an answer is
    recorded by a hook that finishes after the client has seen the close."""
    for _ in range(round(limit / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)


def post(host: bytes, extra: bytes = b"", body: bytes = b"", line: bytes = b"") -> bytes:
    line = line or b"POST http://" + host + b"/x HTTP/1.1"
    return line + b"\r\nHost: " + host + b"\r\n" + AUTH + extra + b"\r\n" + body


MALFORMED: dict[str, Callable[[bytes], bytes]] = {
    # The request line or head, which no flow is made for: interlock's answer instead of
    # mitmproxy's page.
    "not HTTP at all": lambda h: b"NOT HTTP AT ALL\r\n\r\n",
    "request line without a version": lambda h: b"GET http://" + h + b"/x\r\n" + AUTH + b"\r\n",
    "HTTP/0.9 request line": lambda h: b"GET /\r\n\r\n",
    "bad authority": lambda h: b"GET http://[zz/x HTTP/1.1\r\n" + AUTH + b"\r\n",
    "CONNECT without a port": lambda h: b"CONNECT nohostport HTTP/1.1\r\n" + AUTH + b"\r\n",
    "origin form without Host": lambda h: b"GET /x HTTP/1.1\r\n" + AUTH + b"\r\n",
    "HTTP/2 preface on HTTP/1": lambda h: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "NUL in the request line": lambda h: post(h, line=b"GET http://" + h + b"/\x00 HTTP/1.1"),
    # Framing mitmproxy refuses once a flow exists: recorded from the error hook.
    "bad chunk size": lambda h: post(
        h, b"Transfer-Encoding: chunked\r\n", b"zz\r\nab\r\n0\r\n\r\n"
    ),
    "chunk size overflow": lambda h: post(
        h, b"Transfer-Encoding: chunked\r\n", b"f" * 40 + b"\r\nab\r\n0\r\n\r\n"
    ),
    "chunk without its CRLF": lambda h: post(
        h, b"Transfer-Encoding: chunked\r\n", b"2\r\nabXX3\r\nabc\r\n0\r\n\r\n"
    ),
    "non-numeric Content-Length": lambda h: post(h, b"Content-Length: abc\r\n"),
    "negative Content-Length": lambda h: post(h, b"Content-Length: -1\r\n"),
    # Header fields: refused by interlock's hygiene or mitmproxy's validation.
    "space in a header name": lambda h: post(h, b"X-A : b\r\nContent-Length: 0\r\n"),
    "NUL in a header name": lambda h: post(h, b"X-\x00A: b\r\nContent-Length: 0\r\n"),
    "NUL in a header value": lambda h: post(h, b"X-A: a\x00b\r\nContent-Length: 0\r\n"),
    "header line without a colon": lambda h: post(h, b"NoColon\r\nContent-Length: 0\r\n"),
    "header too long": lambda h: post(h, b"X-A: " + b"a" * 100_000 + b"\r\nContent-Length: 0\r\n"),
    "request target too long": lambda h: post(
        h, b"Content-Length: 0\r\n", line=b"GET http://" + h + b"/" + b"a" * 100_000 + b" HTTP/1.1"
    ),
}


@pytest.mark.parametrize("build", MALFORMED.values(), ids=MALFORMED.keys())
async def test_each_malformed_request_is_one_audited_refusal(
    rig: Rig, build: Callable[[bytes], bytes]
) -> None:
    proxy, sink, upstream = rig
    assert proxy.address is not None
    proxy.refusal_budget.interval = 0.0  # every refusal written (the flood limit: below)
    answer = await raw_exchange(proxy.address, build(b"127.0.0.1:%d" % upstream.port))
    await until(lambda: bool(guarded(sink)))
    assert not answer.startswith(b"HTTP/1.1 2"), answer[:200]
    [record] = guarded(sink)
    assert record.decision.effect.value == "deny"
    assert record.engine is None  # refused before the policy ran
    head, _, body = answer.partition(b"\r\n\r\n")
    if answer:  # interlock's answer naming the decision, never mitmproxy's page
        assert b"application/json" in head, answer[:300]
        assert json.loads(body)["decision_id"] == record.decision.decision_id, answer[:300]
    else:  # bad chunked framing, found once the flow is under way: closed, unanswered
        assert "chunk" in record.decision.reasons[0]
    if record.action.agent.id == "anonymous":
        assert record.action.details["client"] == "127.0.0.1"
    assert upstream.requests == []


async def test_a_malformed_request_after_a_served_one_is_audited(rig: Rig) -> None:
    """Pipelined on one keep-alive connection: the first is served, the second refused."""
    proxy, sink, upstream = rig
    host = b"127.0.0.1:%d" % upstream.port
    served = b"GET http://" + host + b"/x HTTP/1.1\r\nHost: " + host + b"\r\n" + AUTH + b"\r\n"
    answer = await raw_exchange(proxy.address, served + b"NOT HTTP\r\n\r\n")
    first, _, second = answer.partition(b"okHTTP/1.1")
    assert first.startswith(b"HTTP/1.1 200"), answer[:300]
    [record] = guarded(sink)
    assert json.loads(second.partition(b"\r\n\r\n")[2])["decision_id"] == (
        record.decision.decision_id
    )
    assert [r.target for r in upstream.requests] == [b"/x"]


async def test_garbage_inside_a_tunnel_is_the_tunnels_agents(rig: Rig) -> None:
    proxy, sink, upstream = rig
    assert proxy.address is not None
    target = f"127.0.0.1:{upstream.port}"
    reader, writer = await asyncio.open_connection(*proxy.address)
    try:
        writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n".encode() + AUTH + b"\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        writer.write(b"GET /\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()
    refused = [r for r in guarded(sink) if r.action.details.get("parser")]
    assert [(r.action.agent.id, r.action.target) for r in refused] == [("coder", "127.0.0.1")]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["decision_id"] == (
        refused[0].decision.decision_id
    )
    assert upstream.requests == []


async def test_an_anonymous_flood_does_not_silence_an_agents_refusals(rig: Rig) -> None:
    """Agents on one host share its address with whatever else runs there: an anonymous
    flood from it uses up the anonymous budget, not the agent's own, and the count it
    leaves is reported under `anonymous`, the agent's under the agent."""
    proxy, sink, upstream = rig
    assert proxy.address is not None
    proxy.refusal_budget.interval = 3600.0
    for _ in range(3):
        await raw_exchange(proxy.address, b"NOT HTTP\r\n\r\n")
    target = f"127.0.0.1:{upstream.port}"
    for _ in range(2):
        reader, writer = await asyncio.open_connection(*proxy.address)
        try:
            connect = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n".encode()
            writer.write(connect + AUTH + b"\r\n")
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            writer.write(b"GET /\r\n\r\n")
            await asyncio.wait_for(reader.read(65536), 10)
        finally:
            writer.close()
    await proxy.flood.stop()  # as at shutdown: the waiting counts are written
    records = guarded(sink)
    written = [(r.action.agent.id, r.action.details.get("summary", False)) for r in records]
    assert sorted(written) == [
        ("anonymous", False), ("anonymous", True), ("coder", False), ("coder", True),
    ]  # fmt: skip
    assert refusals_counted(records) == 5
    assert {r.action.details["client"] for r in records} == {"127.0.0.1"}
    assert upstream.requests == []


async def test_a_clienthello_the_proxy_cannot_parse_is_the_tunnels_agents(rig: Rig) -> None:
    proxy, sink, upstream = rig
    reader, writer = await tunnel(proxy, f"127.0.0.1:{upstream.port}")
    try:
        # A TLS handshake record whose ClientHello claims more bytes than it holds.
        writer.write(b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\xff\xff\xff\xff")
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, nothing answered
    finally:
        writer.close()
    await until(lambda: bool(guarded(sink)))
    [record] = guarded(sink)
    assert (record.action.agent.id, record.action.target) == ("coder", "127.0.0.1")
    assert record.action.details["tls"] is True
    assert record.decision.reasons[0].startswith("TLS handshake refused: Cannot parse")
    assert upstream.requests == []


async def test_a_flood_of_malformed_requests_is_counted_not_written(rig: Rig) -> None:
    proxy, sink, upstream = rig
    assert proxy.address is not None
    proxy.refusal_budget.interval = 3600.0
    answers = [await raw_exchange(proxy.address, b"NOT HTTP\r\n\r\n") for _ in range(6)]
    bodies = [json.loads(a.partition(b"\r\n\r\n")[2]) for a in answers]
    # The first is written; the rest are counted, and say so rather than naming an id.
    assert "decision_id" in bodies[0]
    assert all("decision_id" not in b and "counted" in b["audit"] for b in bodies[1:])
    proxy.refusal_budget.interval = 0.0
    last = await raw_exchange(proxy.address, b"NOT HTTP\r\n\r\n")
    # The 5 counted ones are reported by the next record, or by the flood limit's sweep
    # (a `summary` record) if it ran first.
    records = [r for r in guarded(sink) if not r.action.details.get("summary")]
    assert refusals_counted(guarded(sink)) == 7
    assert records[0].action.details["suppressed_since_last"] == 0
    assert json.loads(last.partition(b"\r\n\r\n")[2])["decision_id"] == (
        records[1].decision.decision_id
    )
    assert upstream.requests == []


JUNK = st.binary(min_size=1, max_size=6)
"""Bytes spliced into an otherwise valid request, each class below made malformed by
construction whatever they are."""
BAD_NAME = st.sampled_from([b" ", b"\x00", b"(", b"\xff", b"@", b"\t", b"\x7f"])
MALFORMATION = st.one_of(
    # A request line that does not end in a version.
    JUNK.map(lambda j: lambda h: b"GET http://" + h + b"/x " + j + b"\r\n\r\n"),
    # A header name with a character no token allows.
    st.tuples(JUNK, BAD_NAME).map(
        lambda t: lambda h: post(h, b"X" + t[0].translate(None, b"\r\n:") + t[1] + b": v\r\n")
    ),
    # A chunk size that is not hex.
    JUNK.map(
        lambda j: lambda h: post(h, b"Transfer-Encoding: chunked\r\n", b"g" + j + b"\r\nab\r\n")
    ),
    # A Content-Length that is not a number.
    JUNK.map(lambda j: lambda h: post(h, b"Content-Length: x" + j.replace(b"\r", b"") + b"\r\n")),
    # A control character in a header value.
    st.sampled_from([b"\x00", b"\x01", b"\x1b", b"\r"]).map(
        lambda c: lambda h: post(h, b"X-A: a" + c + b"b\r\nContent-Length: 0\r\n")
    ),
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(requests=st.lists(MALFORMATION, min_size=1, max_size=4))
async def test_every_malformed_request_is_recorded_or_counted(
    rig: Rig, requests: list[Callable[[bytes], bytes]]
) -> None:
    """A burst of malformed requests under the real flood limit, then one more once the
    limit allows it: records written plus refusals they report as counted add up to every
    request sent, and none reached the upstream."""
    proxy, sink, upstream = rig
    assert proxy.address is not None
    host = b"127.0.0.1:%d" % upstream.port
    before = len(guarded(sink))
    proxy.refusal_budget.interval = 3600.0
    for build in requests:
        await raw_exchange(proxy.address, build(host), limit=5)
    proxy.refusal_budget.interval = 0.0
    await raw_exchange(proxy.address, b"NOT HTTP\r\n\r\n")

    def accounted() -> int:
        new = guarded(sink)[before:]
        alone = sum("suppressed_since_last" not in r.action.details for r in new)
        return alone + refusals_counted(new)

    # An identified agent's refusals have a budget of their own, so the last (anonymous)
    # refusal does not report theirs: the flood limit's sweep does, once their interval
    # has passed. The sweep may be asleep for the long interval set above, so report
    # what is waiting here, as the sweep would, until the refusals recorded by hooks that
    # finish after the close have all come in.
    for _ in range(500):
        proxy.flood.report(time.monotonic(), every=True)
        await proxy.flood.refusals.drain()
        if accounted() >= len(requests) + 1:
            break
        await asyncio.sleep(0.01)
    assert accounted() == len(requests) + 1, [r.decision.reasons for r in guarded(sink)[before:]]
    assert upstream.requests == []


def h2_block(port: int) -> list[tuple[bytes, bytes]]:
    """The pseudo-headers of a GET, but for `:path`."""
    return [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost:%d" % port)]


H2_MALFORMED: dict[str, Callable[[int], list[tuple[bytes, bytes]]]] = {
    "no :path": lambda p: h2_block(p),
    "a pseudo-header after a field": lambda p: [
        *h2_block(p)[:2],
        (b"x-a", b"1"),
        (b":authority", b"localhost:%d" % p),
        (b":path", b"/"),
    ],
    "an upper-case field name": lambda p: [*h2_block(p), (b":path", b"/"), (b"X-Upper", b"1")],
    "a connection-specific field": lambda p: [
        *h2_block(p),
        (b":path", b"/"),
        (b"connection", b"keep-alive"),
    ],
    "an unknown pseudo-header": lambda p: [*h2_block(p), (b":path", b"/"), (b":evil", b"1")],
}


@pytest.mark.parametrize("block", H2_MALFORMED.values(), ids=H2_MALFORMED.keys())
async def test_an_http2_protocol_error_is_one_audited_refusal_named_in_the_goaway(
    rig: Rig, block: Callable[[int], list[tuple[bytes, bytes]]]
) -> None:
    proxy, sink, upstream = rig
    proxy.refusal_budget.interval = 0.0
    target = f"localhost:{upstream.port}"
    status, _, sent = await h2_exchange(proxy, target, block(upstream.port))
    await until(lambda: bool(guarded(sink)))
    assert status is None
    refused = guarded(sink)
    assert [(r.action.agent.id, r.action.target) for r in refused] == [("coder", "localhost")]
    assert sent is not None  # ended by a GOAWAY, whose debug data names the decision
    assert f"(decision {refused[0].decision.decision_id})".encode() in sent
    assert upstream.requests == []


H2_INVALID: dict[str, Callable[[int], list[tuple[bytes, bytes]]]] = {
    "a scheme that is not http(s)": lambda p: [
        (b":method", b"GET"),
        (b":scheme", b"ftp"),
        (b":authority", b"localhost:%d" % p),
        (b":path", b"/"),
    ],
    "Content-Length with Transfer-Encoding": lambda p: [
        *h2_block(p),
        (b":path", b"/"),
        (b"content-length", b"0"),
        (b"transfer-encoding", b"chunked"),
    ],
}


@pytest.mark.parametrize("block", H2_INVALID.values(), ids=H2_INVALID.keys())
async def test_an_http2_request_mitmproxy_refuses_on_its_stream_is_audited(
    rig: Rig, block: Callable[[int], list[tuple[bytes, bytes]]]
) -> None:
    """Requests mitmproxy's own validation refuses per stream (not by ending the
    connection): one record each, and nothing upstream."""
    proxy, sink, upstream = rig
    proxy.refusal_budget.interval = 0.0
    await h2_exchange(proxy, f"localhost:{upstream.port}", block(upstream.port))
    await until(lambda: bool(guarded(sink)))
    [record] = guarded(sink)
    assert record.decision.effect.value == "deny"
    assert upstream.requests == []


async def test_a_malformed_request_to_a_reverse_listener_is_audited(tmp_path: Path) -> None:
    upstream = await RawUpstream().start()
    route = ReverseRoute(listen="127.0.0.1:0", upstream=f"http://127.0.0.1:{upstream.port}")
    proxy, sink = await start_proxy(tmp_path, allow_networks=["127.0.0.0/8"], reverse=[route])
    try:
        answer = await raw_exchange(proxy.reverse_addresses[0], b"GET /x\r\n\r\n")
    finally:
        await proxy.stop()
        await upstream.stop()
    [record] = guarded(sink)
    assert record.action.details["mode"] == "reverse"
    assert record.action.details["parser"] is True
    assert record.action.target == "127.0.0.1"  # the route's upstream
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["decision_id"] == (
        record.decision.decision_id
    )
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        ("Cannot parse ClientHello: 160301000801000004ffffffff", True),
        ("('SSL routines', '', 'no shared cipher')", True),
        ("('SSL routines', '', 'unsupported protocol')", True),
        ("The client does not trust the proxy's certificate for x (tlsv1 alert unknown ca)", False),
        ("('SSL routines', '', 'sslv3 alert certificate unknown')", False),
        ("connection closed early", False),  # the client left, or the SNI check (its own)
    ],
)
def test_a_handshake_is_refused_by_the_proxy_not_ended_by_the_client(
    error: str, refused: bool
) -> None:
    assert refused_handshake(error) is refused
