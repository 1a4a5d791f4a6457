"""What RFC 9110/9112 forbid, and what exceeds the limits, is refused before any decision;
what is accepted reaches a raw upstream exactly as it was read (issue 19)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interlock.proxies.http.server import HttpProxy
from interlock.testing import CaptureSink
from tests.proxies.http.rawupstream import RawUpstream
from tests.proxies.http.util import BASIC, decided, raw_exchange, refusal_record, start_proxy

pytestmark = pytest.mark.integration

Rig = tuple[HttpProxy, CaptureSink, RawUpstream]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    upstream = await RawUpstream().start()
    proxy, sink = await start_proxy(tmp_path, allow_networks=["127.0.0.0/8"], max_headers=40)
    yield proxy, sink, upstream
    await proxy.stop()
    await upstream.stop()


def request(
    port: int,
    extra: bytes = b"",
    method: bytes = b"GET",
    path: bytes = b"/x",
    body: bytes = b"",
    version: bytes = b"HTTP/1.1",
) -> bytes:
    return (
        method
        + f" http://127.0.0.1:{port}".encode()
        + path
        + b" "
        + version
        + f"\r\nHost: 127.0.0.1:{port}\r\nProxy-Authorization: Basic {BASIC}\r\n".encode()
        + extra
        + b"Connection: close\r\n\r\n"
        + body
    )


async def send(rig: Rig, **parts: bytes) -> bytes:
    proxy, _, upstream = rig
    assert proxy.address is not None
    return await raw_exchange(proxy.address, request(upstream.port, **parts))


@pytest.mark.parametrize(
    "parts",
    [
        {"extra": b"X-A: foo\rX-B: 1\r\n"},
        {"extra": b"X-A: foo\x00bar\r\n"},
        {"extra": b"X-A: foo\x1bbar\r\n"},
        {"extra": b"X-A: foo\r\n folded\r\n"},
        {"extra": b"X-A: " + b"a" * (1024 * 1024) + b"\r\n"},
        {"extra": b"X-A: " + b"a" * (61 * 1024) + b"\r\n"},
        {"extra": b"".join(b"X-%d: 1\r\n" % i for i in range(20000))},
        {"extra": b"".join(b"X-%d: 1\r\n" % i for i in range(40))},
        {"extra": b"Host: other\r\n"},
        {"extra": b"Transfer-Encoding: gzip, chunked\r\n", "body": b"0\r\n\r\n"},
        {"method": b"G@T"},
        {"method": b"G\x00T"},
        {"method": b"G" * (64 * 1024)},
        {"path": b"/a\x01b"},
        {"path": b"/caf\xc3\xa9"},
        {"version": b"HTTP/1.2"},
        {"version": b"HTTP/2.0"},
        {"version": b"HTTP/0.9"},
    ],
    ids=[
        "bare CR in a value",
        "NUL in a value",
        "ESC in a value",
        "obs-fold",
        "1 MiB header",
        "head over 60 KiB",
        "20000 headers",
        "over the configured header count",
        "two Host headers",
        "gzip transfer coding",
        "method with @",
        "method with NUL",
        "64 KiB method",
        "control in the path",
        "non-ASCII path",
        "HTTP/1.2",
        "HTTP/2.0 in a request line",
        "HTTP/0.9",
    ],
)
async def test_refused_before_any_decision(rig: Rig, parts: dict[str, bytes]) -> None:
    _, sink, upstream = rig
    answer = await send(rig, **parts)
    assert answer.split(b" ", 2)[1] in (b"400", b"414", b"431"), answer[:200]
    assert upstream.requests == []
    assert decided(sink) == []
    if b"application/json" in answer.partition(b"\r\n\r\n")[0]:
        # Audited under the agent, unless mitmproxy's parser could not read the head
        # (its credentials included).
        record = refusal_record(sink, answer)
        parser = record.action.details.get("parser")
        assert record.action.agent.id == ("anonymous" if parser else "coder")
    else:  # mitmproxy's own fixed answer: audited all the same
        assert [r for r in sink.records if r.action.details.get("guard")], answer[:200]


async def test_http_1_0_is_accepted(rig: Rig) -> None:
    _, _, upstream = rig
    answer = await send(rig, version=b"HTTP/1.0")
    assert answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200"), answer[:100]
    assert len(upstream.requests) == 1


async def test_a_request_within_the_limits_arrives_as_read(rig: Rig) -> None:
    _, sink, upstream = rig
    extra = b"".join(b"X-%d: v\t%d\r\n" % (i, i) for i in range(30))
    answer = await send(rig, extra=extra, method=b"PROPFIND")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    [got] = upstream.requests
    assert got.method == b"PROPFIND"
    assert [got.header(b"X-%d" % i) for i in range(30)] == [[b"v\t%d" % i] for i in range(30)]
    assert len(decided(sink)) == 1


VALUE_BYTES = st.binary(max_size=12).map(lambda b: b.replace(b"\n", b""))
"""Any byte but LF (which ends the line, as RFC 9112 lets a recipient read it)."""


def forbidden(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return any((b < 0x20 and b != 0x09) or b == 0x7F for b in value)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=VALUE_BYTES)
async def test_a_header_value_is_refused_or_arrives_exactly(rig: Rig, value: bytes) -> None:
    _, sink, upstream = rig
    before, n = len(upstream.requests), len(decided(sink))
    answer = await send(rig, extra=b"X-T: " + value + b"\r\n")
    read = value.strip()  # what any HTTP/1.1 parser keeps of the value
    got = upstream.requests[before:]
    if forbidden(read):
        assert answer.startswith(b"HTTP/1.1 400"), (value, answer[:200])
        assert (got, len(decided(sink))) == ([], n)
    else:
        assert answer.startswith(b"HTTP/1.1 200"), (value, answer[:200])
        assert [g.header(b"x-t") for g in got] == [[read]]
        assert len(decided(sink)) == n + 1


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(method=st.binary(min_size=1, max_size=40).filter(lambda m: not m.isspace()))
async def test_a_method_is_refused_unless_it_is_a_token(rig: Rig, method: bytes) -> None:
    _, sink, upstream = rig
    method = b"".join(method.split())  # whitespace would split the request line
    before, n = len(upstream.requests), len(decided(sink))
    answer = await send(rig, method=method)
    got = upstream.requests[before:]
    token = all((chr(b).isalnum() and b < 0x80) or chr(b) in "!#$%&'*+-.^_`|~" for b in method)
    if token and len(method) <= 32 and method != b"CONNECT" and method == method.upper():
        assert [g.method for g in got] == [method], answer[:200]
        assert len(decided(sink)) == n + 1
    else:
        assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert (got, len(decided(sink))) == ([], n)


@pytest.mark.parametrize(
    "path", [b"/a\\..\\admin", b"/a%zz", b"/a%2", b"/a%", b"/a#frag", b"/a?x=1#f"]
)
async def test_a_path_servers_read_differently_is_refused(rig: Rig, path: bytes) -> None:
    _, sink, upstream = rig
    answer = await send(rig, path=path)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert upstream.requests == []
    assert decided(sink) == []


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(count=st.integers(0, 60), size=st.sampled_from([1, 100, 1500, 4000]))
async def test_a_head_is_refused_exactly_when_over_a_limit(rig: Rig, count: int, size: int) -> None:
    _, _, upstream = rig
    before = len(upstream.requests)
    extra = b"".join(b"X-%d: " % i + b"v" * size + b"\r\n" for i in range(count))
    answer = await send(rig, extra=extra)
    fields = count + 3  # Host, Proxy-Authorization, Connection
    head = len(extra) + 200
    got = upstream.requests[before:]
    if fields > 40 or head > 60 * 1024 + 512:
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert got == []
    elif head < 60 * 1024 - 512:
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert len(got) == 1
        assert len(got[0].headers) == fields - 1  # Proxy-Authorization is not forwarded
