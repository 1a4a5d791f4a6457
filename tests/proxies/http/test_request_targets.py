"""The policy decides on exactly what the upstream receives: a request whose target, method,
content coding, body, Host or address the decision would read otherwise than the upstream
is refused (audited) or decided on the upstream's reading, proven from a raw upstream's
log of what it received."""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mitmproxy.test import tflow

from interlock.classify.content import MAX_SCAN
from interlock.core.model import Agent, Operation
from interlock.proxies.http.egress import AGENT, action_for
from interlock.proxies.http.server import HttpProxy
from interlock.testing import CaptureSink
from interlock.testing.services import self_signed_cert
from tests.proxies.http.rawh2 import h2_exchange
from tests.proxies.http.rawupstream import RawUpstream
from tests.proxies.http.util import (
    BASIC,
    decided,
    raw_exchange,
    refusal_record,
    start_proxy,
    tunnel,
)

pytestmark = pytest.mark.integration

Rig = tuple[HttpProxy, CaptureSink, RawUpstream, RawUpstream]
"""The proxy, its audit records, a plain HTTP/1.1 upstream and an HTTPS one."""


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    cert, key = self_signed_cert(tmp_path / "up")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    plain = await RawUpstream().start()
    tls = await RawUpstream(ctx).start()
    proxy, sink = await start_proxy(
        tmp_path, allow_networks=["127.0.0.0/8"], upstream_ca=cert, approval_timeout=0.2
    )
    yield proxy, sink, plain, tls
    await proxy.stop()
    await plain.stop()
    await tls.stop()


def absolute(
    port: int,
    path: bytes = b"/x",
    method: bytes = b"GET",
    host: bytes | None = None,
    extra: bytes = b"",
    body: bytes = b"",
    authority: bytes | None = None,
) -> bytes:
    """A forward-proxy request in absolute form to 127.0.0.1:`port`."""
    named = authority or b"127.0.0.1:%d" % port
    return (
        method
        + b" http://"
        + named
        + path
        + b" HTTP/1.1\r\nHost: "
        + (host if host is not None else named)
        + f"\r\nProxy-Authorization: Basic {BASIC}\r\n".encode()
        + extra
        + (b"Content-Length: %d\r\n" % len(body) if body else b"")
        + b"Connection: close\r\n\r\n"
        + body
    )


async def send(proxy: HttpProxy, request: bytes) -> bytes:
    assert proxy.address is not None
    return await raw_exchange(proxy.address, request)


async def in_tunnel(proxy: HttpProxy, port: int, request: bytes) -> bytes:
    """`request` sent in clear inside a CONNECT tunnel to 127.0.0.1:`port`."""
    reader, writer = await tunnel(proxy, f"127.0.0.1:{port}")
    try:
        writer.write(request)
        out = b""
        while b"\r\n\r\n" not in out:
            chunk = await asyncio.wait_for(reader.read(65536), 15)
            if not chunk:
                break
            out += chunk
        return out
    finally:
        writer.close()


def refused(sink: CaptureSink, answer: bytes, status: bytes, reason: str) -> None:
    """`answer` is an audited guard refusal with `status`, its reason mentioning `reason`."""
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:300]
    record = refusal_record(sink, answer)
    assert reason in record.decision.reasons[0], record.decision.reasons
    assert decided(sink) == []


def guard_reasons(sink: CaptureSink) -> list[str]:
    return [r.decision.reasons[0] for r in sink.records if r.action.details.get("guard")]


def h2_fields(port: int, path: bytes, authority: bytes | None = None) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", authority or b"localhost:%d" % port),
        (b":path", path),
    ]


# 1. Request targets that are not origin form


@pytest.mark.parametrize(
    "path",
    [b"http://evil.example/x", b"evil.example:443", b"//evil.example/x", b"https://evil.example"],
)
async def test_an_h2_path_that_is_not_origin_form_reaches_nobody(rig: Rig, path: bytes) -> None:
    proxy, sink, _, upstream = rig
    status, _, _ = await h2_exchange(
        proxy, f"localhost:{upstream.port}", h2_fields(upstream.port, path)
    )
    assert status == 400
    assert upstream.requests == []
    assert decided(sink) == []
    assert any("not origin form" in r for r in guard_reasons(sink)), sink.records


async def test_an_h2_origin_form_path_arrives(rig: Rig) -> None:
    proxy, _, _, upstream = rig
    status, _, _ = await h2_exchange(
        proxy, f"localhost:{upstream.port}", h2_fields(upstream.port, b"/ok?a=1")
    )
    assert status == 200
    assert [g.target for g in upstream.requests] == [b"/ok?a=1"]


async def test_a_second_leading_slash_is_refused_in_http1(rig: Rig) -> None:
    proxy, sink, upstream, _ = rig
    answer = await send(proxy, absolute(upstream.port, path=b"//evil.example/x"))
    refused(sink, answer, b"400", "not origin form")
    assert upstream.requests == []


@pytest.mark.parametrize("target", [b"//evil.example/x", b"evil.example:443", b"evil.example"])
async def test_an_http1_target_in_a_tunnel_that_is_not_origin_form_is_refused(
    rig: Rig, target: bytes
) -> None:
    proxy, sink, upstream, _ = rig
    inside = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (target, upstream.port)
    answer = await in_tunnel(proxy, upstream.port, inside)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert upstream.requests == []
    assert decided(sink) == []


async def test_options_asterisk_arrives_and_other_methods_may_not_use_it(rig: Rig) -> None:
    proxy, _, upstream, _ = rig
    head = b" * HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % upstream.port
    answer = await in_tunnel(proxy, upstream.port, b"OPTIONS" + head)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    answer = await in_tunnel(proxy, upstream.port, b"GET" + head)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert [(g.method, g.target) for g in upstream.requests] == [(b"OPTIONS", b"*")]


# 2. Methods are case-sensitive


@pytest.mark.parametrize("method", [b"get", b"pOsT", b"Delete"])
async def test_a_method_that_is_not_upper_case_is_refused(rig: Rig, method: bytes) -> None:
    proxy, sink, upstream, _ = rig
    answer = await send(proxy, absolute(upstream.port, method=method))
    refused(sink, answer, b"400", "not upper-case")
    assert upstream.requests == []


# 3. Content-Encoding


@pytest.mark.parametrize(
    "coding",
    [
        b"Content-Encoding: base64\r\n",
        b"Content-Encoding: gzip, gzip\r\n",
        b"Content-Encoding: gzip\r\nContent-Encoding: gzip\r\n",
        b"Content-Encoding: rot13\r\n",
        b"Content-Encoding: x-gzip\r\n",
    ],
    ids=["base64", "two codings", "two headers", "rot13", "x-gzip"],
)
async def test_a_content_coding_the_decision_cannot_read_is_refused(
    rig: Rig, coding: bytes
) -> None:
    proxy, sink, upstream, _ = rig
    body = b"eyJqc29ucnBjIjoiMi4wIn0="
    extra = b"Content-Type: application/json\r\n" + coding
    answer = await send(proxy, absolute(upstream.port, b"/mcp", b"POST", extra=extra, body=body))
    refused(sink, answer, b"400", "Content-Encoding")
    assert upstream.requests == []


async def test_one_known_content_coding_is_decided_on_the_decoded_body(rig: Rig) -> None:
    proxy, sink, upstream, _ = rig
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}}
    body = gzip.compress(json.dumps(call).encode())
    extra = b"Content-Type: application/json\r\nContent-Encoding: GZIP\r\n"
    answer = await send(proxy, absolute(upstream.port, b"/mcp", b"POST", extra=extra, body=body))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert [g.body for g in upstream.requests] == [body]
    [record] = decided(sink)
    assert (record.action.operation, record.action.target) == (Operation.TOOL_CALL, "echo")


# 4. Bodies are read whole


async def test_a_textual_body_longer_than_the_scan_limit_is_refused(rig: Rig) -> None:
    proxy, sink, upstream, _ = rig
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "rm"}}
    body = b" " * MAX_SCAN + json.dumps(call).encode()
    extra = b"Content-Type: application/json\r\n"
    answer = await send(proxy, absolute(upstream.port, b"/mcp", b"POST", extra=extra, body=body))
    refused(sink, answer, b"413", "more than the 1048576 that are inspected")
    assert upstream.requests == []


async def test_a_textual_body_within_the_limit_is_read_to_its_end(rig: Rig) -> None:
    proxy, sink, upstream, _ = rig
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "rm"}}
    tail = json.dumps(call).encode()
    body = b" " * (MAX_SCAN - len(tail)) + tail
    extra = b"Content-Type: application/json\r\n"
    answer = await send(proxy, absolute(upstream.port, b"/mcp", b"POST", extra=extra, body=body))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    [record] = decided(sink)
    assert (record.action.operation, record.action.target) == (Operation.TOOL_CALL, "rm")


async def test_a_json_rpc_batch_is_refused(rig: Rig) -> None:
    """An MCP server runs every call of a batch; a decision is for one call."""
    proxy, sink, upstream, _ = rig
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "rm"}}
    body = json.dumps([call]).encode()
    extra = b"Content-Type: application/json\r\n"
    answer = await send(proxy, absolute(upstream.port, b"/mcp", b"POST", extra=extra, body=body))
    refused(sink, answer, b"400", "JSON-RPC batch")
    assert upstream.requests == []


# 5. Percent-encoded paths


@pytest.mark.parametrize(
    "path", [b"/%761/secret/data/prod", b"/v1%2fsecret/data/prod", b"/v1%2Fsecret%2Fdata/prod"]
)
async def test_a_vault_read_is_classified_on_the_decoded_path(rig: Rig, path: bytes) -> None:
    proxy, sink, upstream, _ = rig
    extra = b"X-Vault-Token: hvs.x\r\n"
    answer = await send(proxy, absolute(upstream.port, path, extra=extra))
    # The bundled policy holds a secret read for approval (none comes): it never arrives.
    assert answer.startswith(b"HTTP/1.1 403"), answer[:300]
    assert upstream.requests == []
    [record] = decided(sink)
    assert record.action.operation is Operation.SECRET_READ
    assert record.action.target == "127.0.0.1/v1/secret/data/prod"
    assert record.action.details["path"] == "/v1/secret/data/prod"
    assert record.action.details["raw_path"] == path.decode()


@pytest.mark.parametrize(
    ("method", "path", "auth", "operation"),
    [
        (b"GET", b"/v1/secret/data/prod", b"Authorization: Bearer hvs.x", Operation.SECRET_READ),
        (b"GET", b"/v1/app/creds/ro", b"Authorization: bearer hvs.x", Operation.SECRET_READ),
        (b"LIST", b"/v1/secret/metadata/", b"X-Vault-Token: hvs.x", Operation.SECRET_READ),
        (b"GET", b"/v1/models", b"Authorization: Bearer sk-x", Operation.EGRESS),
        (b"GET", b"/v1/secret/data/prod", b"Authorization: Basic eDp5", Operation.EGRESS),
    ],
)
async def test_a_vault_token_is_recognised_in_either_header(
    rig: Rig, method: bytes, path: bytes, auth: bytes, operation: Operation
) -> None:
    # (review: a Bearer token read a secret from OpenBao as plain egress) Vault takes its
    # token as Authorization: Bearer too; on a path only Vault's API has, that is a
    # secret read. An API's own `/v1/models` is not.
    proxy, sink, upstream, _ = rig
    await send(proxy, absolute(upstream.port, path, method, extra=auth + b"\r\n"))
    [record] = decided(sink)
    assert record.action.operation is operation


async def test_an_llm_path_is_classified_decoded(rig: Rig) -> None:
    proxy, sink, upstream, _ = rig
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    extra = b"Content-Type: application/json\r\n"
    path = b"/v1/chat%2Fcompletions"
    await send(proxy, absolute(upstream.port, path, b"POST", extra=extra, body=body))
    [record] = decided(sink)
    assert record.action.operation is Operation.PROMPT


# 6. Ports


@pytest.mark.parametrize("host", [b"127.0.0.1:1", b"127.0.0.1", b"127.0.0.1:80"])
async def test_a_host_naming_another_port_is_misdirected(rig: Rig, host: bytes) -> None:
    proxy, sink, upstream, _ = rig
    answer = await send(proxy, absolute(upstream.port, host=host))
    refused(sink, answer, b"421", "does not match the destination")
    assert upstream.requests == []


async def test_an_absolute_url_naming_another_port_in_a_tunnel_is_misdirected(rig: Rig) -> None:
    proxy, sink, upstream, _ = rig
    for named in (b"127.0.0.1:1", b"127.0.0.1"):
        request = b"GET http://%s/x HTTP/1.1\r\nHost: %s\r\n\r\n" % (named, named)
        answer = await in_tunnel(proxy, upstream.port, request)
        assert answer.startswith(b"HTTP/1.1 421"), answer[:300]
    assert upstream.requests == []
    assert decided(sink) == []


async def test_an_h2_authority_naming_another_port_is_misdirected(rig: Rig) -> None:
    proxy, sink, _, upstream = rig
    fields = h2_fields(upstream.port, b"/x", b"localhost:1")
    status, _, _ = await h2_exchange(proxy, f"localhost:{upstream.port}", fields)
    assert status == 421
    assert upstream.requests == []
    assert decided(sink) == []


# 7. Non-ASCII Host


@pytest.mark.parametrize(
    "host",
    ["\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54", "local\u00adhost", "localho\u017ft"],
    ids=["fullwidth", "soft hyphen", "long s"],
)
async def test_a_non_ascii_host_is_refused(rig: Rig, host: str) -> None:
    proxy, sink, upstream, _ = rig
    named = b"localhost:%d" % upstream.port
    request = absolute(upstream.port, authority=named, host=f"{host}:{upstream.port}".encode())
    answer = await send(proxy, request)
    refused(sink, answer, b"400", "non-ASCII")
    assert upstream.requests == []


async def test_a_non_ascii_h2_authority_reaches_nobody(rig: Rig) -> None:
    proxy, sink, _, upstream = rig
    fields = h2_fields(upstream.port, b"/x", f"local\u00adhost:{upstream.port}".encode())
    status, _, _ = await h2_exchange(proxy, f"localhost:{upstream.port}", fields)
    assert status in (None, 400)
    assert upstream.requests == []
    assert decided(sink) == []


# 8. IP address spellings


@pytest.mark.parametrize("spelling", ["2130706433", "0x7f.1", "0177.0.0.1", "127.1", "127.0.0.1."])
async def test_the_decision_target_is_the_canonical_address(rig: Rig, spelling: str) -> None:
    proxy, sink, upstream, _ = rig
    named = f"{spelling}:{upstream.port}".encode()
    answer = await send(proxy, absolute(upstream.port, authority=named))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    [record] = decided(sink)
    assert record.action.target == "127.0.0.1"
    assert record.action.details["host_as_sent"] == spelling


async def test_a_host_name_is_decided_in_lower_case(rig: Rig) -> None:
    # (review: `LOCALHOST` was decided as its own target, past a rule naming the host)
    proxy, sink, upstream, _ = rig
    answer = await send(proxy, absolute(upstream.port, authority=b"LocalHost:%d" % upstream.port))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    [record] = decided(sink)
    assert record.action.target == "localhost"
    assert record.action.details["host_as_sent"] == "LocalHost"


async def test_an_ipv4_mapped_address_is_decided_as_its_ipv4(rig: Rig) -> None:
    proxy, sink, upstream, _ = rig
    named = b"[::ffff:127.0.0.1]:%d" % upstream.port
    await send(proxy, absolute(upstream.port, authority=named))
    [record] = decided(sink)
    assert record.action.target == "127.0.0.1"


# 9. Bodies read as the upstream reads them (review: aiohttp read each of these as a
# tools/call the decision took for plain egress)

CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "rm"}}
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


@pytest.mark.parametrize(
    ("extra", "body", "reason"),
    [
        (
            b"Content-Type: application/json; charset=utf-16\r\n",
            json.dumps(CALL).encode("utf-16"),
            "charset 'utf-16'",
        ),
        (
            b"Content-Type: application/json\r\n",
            b"\xef\xbb\xbf" + json.dumps(CALL).encode(),
            "byte order mark",
        ),
        (b"", json.dumps(CALL).encode("utf-16-le"), "untyped body in UTF-16"),
        (
            b"Content-Type: application/json\r\nContent-Encoding: gzip\r\n",
            gzip.compress(json.dumps(CALL).encode()[:17])
            + gzip.compress(json.dumps(CALL).encode()[17:]),
            "not exactly one complete stream",
        ),
        (
            b"Content-Type: application/json\r\nContent-Encoding: gzip\r\n",
            gzip.compress(json.dumps(CALL).encode()) + b"more",
            "not exactly one complete stream",
        ),
        (
            b"Content-Type: application/json\r\nContent-Encoding: deflate\r\n",
            b"not deflate",
            "deflate body",
        ),
    ],
    ids=["utf-16 charset", "utf-8 bom", "untyped utf-16", "gzip members", "gzip tail", "bad"],
)
async def test_a_body_read_otherwise_upstream_is_refused(
    rig: Rig, extra: bytes, body: bytes, reason: str
) -> None:
    proxy, sink, upstream, _ = rig
    answer = await send(proxy, absolute(upstream.port, b"/mcp", b"POST", extra=extra, body=body))
    refused(sink, answer, b"400", reason)
    assert upstream.requests == []


@pytest.mark.parametrize(
    "ctype",
    [
        b"",
        b"Content-Type: application/octet-stream\r\n",
        b"Content-Type: application/vnd.x+json\r\n",
    ],
    ids=["untyped", "octet-stream", "+json"],
)
async def test_text_is_read_whatever_type_it_claims(rig: Rig, ctype: bytes) -> None:
    """The Content-Type is the sender's claim: JSON labelled binary is still a tool call
    carrying a key."""
    proxy, sink, upstream, _ = rig
    call = {**CALL, "params": {"name": "rm", "arguments": {"k": GITHUB_TOKEN}}}
    body = json.dumps(call).encode()
    await send(proxy, absolute(upstream.port, b"/mcp", b"POST", extra=ctype, body=body))
    [record] = decided(sink)
    assert (record.action.operation, record.action.target) == (Operation.TOOL_CALL, "rm")
    assert "credentials" in record.action.labels


async def test_a_key_in_a_multipart_field_is_found(rig: Rig) -> None:
    proxy, sink, upstream, _ = rig
    body = f"--b\r\nContent-Disposition: form-data; name=k\r\n\r\n{GITHUB_TOKEN}\r\n--b--\r\n"
    extra = b"Content-Type: multipart/form-data; boundary=b\r\n"
    await send(proxy, absolute(upstream.port, b"/up", b"POST", extra=extra, body=body.encode()))
    [record] = decided(sink)
    assert "credentials" in record.action.labels


async def test_a_key_in_a_form_field_next_to_a_binary_file_is_found(rig: Rig) -> None:
    # (review: a multipart body with a binary part was not read at all)
    proxy, sink, upstream, _ = rig
    body = (
        b"--b\r\nContent-Disposition: form-data; name=f; filename=x.png\r\n"
        b"Content-Type: image/png\r\n\r\n\x89PNG\xff\xfe\x00\x01\r\n"
        b"--b\r\nContent-Disposition: form-data; name=k\r\n\r\n"
        + GITHUB_TOKEN.encode()
        + b"\r\n--b--\r\n"
    )
    extra = b"Content-Type: multipart/form-data; boundary=b\r\n"
    await send(proxy, absolute(upstream.port, b"/up", b"POST", extra=extra, body=body))
    [record] = decided(sink)
    assert "credentials" in record.action.labels


async def test_a_key_in_a_credential_parameter_to_another_host_is_data(rig: Rig) -> None:
    # (review) `?key=` carries a Google key to Google; to any other host (here
    # 127.0.0.1) it is data leaving like any other parameter.
    proxy, sink, upstream, _ = rig
    google = "AIza" + "b" * 35
    await send(proxy, absolute(upstream.port, f"/maps?key={google}&q=x".encode()))
    await send(proxy, absolute(upstream.port, f"/maps?note={google}".encode()))
    as_key, as_data = decided(sink)
    assert "credentials" in as_key.action.labels
    assert "credentials" in as_data.action.labels


@pytest.mark.parametrize(
    ("host", "path", "header", "labelled"),
    [
        ("maps.googleapis.com", "/maps?key=" + "AIza" + "b" * 35, "", False),
        ("collect.example", "/maps?key=" + "AIza" + "b" * 35, "", True),
        ("api.github.com", "/user", f"Authorization: token {GITHUB_TOKEN}", False),
        ("github.com.evil.example", "/user", f"Authorization: token {GITHUB_TOKEN}", True),
        ("collect.example", "/", f"X-K: {GITHUB_TOKEN}", True),
    ],
)
def test_a_key_in_a_credential_slot_is_the_services_own_only_for_its_issuer(
    host: str, path: str, header: str, labelled: bool
) -> None:
    """In process (no such hosts here): the issuer decides whether a key in a credential
    slot is the service's own or data leaving; elsewhere a key is always data."""
    flow = tflow.tflow()
    flow.request.host, flow.request.port, flow.request.path = host, 443, path
    flow.request.content = b""
    if header:
        name, _, value = header.partition(": ")
        flow.request.headers[name] = value
    flow.metadata[AGENT] = Agent("coder")
    action = action_for(flow, False, None, None)
    assert ("credentials" in action.labels) is labelled, action.details.get("dlp")


@pytest.mark.parametrize("key", [True, False], ids=["key-in-field", "plain"])
async def test_a_large_form_upload_is_forwarded_and_its_fields_read(rig: Rig, key: bool) -> None:
    # Over the scan limit, an uploaded file (text or not) is forwarded as binary is; the
    # form's typed fields are still read.
    proxy, sink, upstream, _ = rig
    field = GITHUB_TOKEN if key else "hello"
    body = (
        b"--b\r\nContent-Disposition: form-data; name=f; filename=big.csv\r\n\r\n"
        + b"a,b,c\n" * (MAX_SCAN // 6 + 10)
        + b"\r\n--b\r\nContent-Disposition: form-data; name=k\r\n\r\n"
        + field.encode()
        + b"\r\n--b--\r\n"
    )
    extra = b"Content-Type: multipart/form-data; boundary=b\r\n"
    answer = await send(proxy, absolute(upstream.port, b"/up", b"POST", extra=extra, body=body))
    [record] = decided(sink)
    assert ("credentials" in record.action.labels) is key
    if not key:
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


async def test_percent_encoded_keys_in_query_and_form_are_found(rig: Rig) -> None:
    proxy, sink, upstream, _ = rig
    encoded = "".join(f"%{ord(c):02X}" for c in GITHUB_TOKEN)
    await send(proxy, absolute(upstream.port, f"/q?k={encoded}".encode()))
    extra = b"Content-Type: application/x-www-form-urlencoded\r\n"
    form = f"k={encoded}".encode()
    await send(proxy, absolute(upstream.port, b"/f", b"POST", extra=extra, body=form))
    in_query, in_form = decided(sink)
    assert "credentials" in in_query.action.labels
    assert "credentials" in in_form.action.labels


async def test_a_key_in_a_header_is_found_and_random_ids_are_not_secrets(rig: Rig) -> None:
    # (review: `X-K: ghp_...` left with no label) Header values are scanned for keys and
    # tokens only: trace ids and ETags are random by design and must not read as secrets.
    proxy, sink, upstream, _ = rig
    await send(proxy, absolute(upstream.port, extra=f"X-K: {GITHUB_TOKEN}\r\n".encode()))
    trace = b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
    etag = b'If-None-Match: "9f62089a7c1e4b5fa3e6d0c2b4a18e7f3c5d9b2a"\r\n'
    auth = b"Authorization: Bearer opaque-session-token\r\n"  # the header's own job
    await send(proxy, absolute(upstream.port, extra=trace + etag + auth))
    keyed, plain = decided(sink)
    assert "credentials" in keyed.action.labels
    assert list(keyed.action.details["dlp"]) == ["github_token"]
    assert plain.action.labels == frozenset()
    assert [r.header(b"traceparent") != [] for r in upstream.requests] == [True]  # not held


async def test_a_method_override_header_is_named_in_the_decision(rig: Rig) -> None:
    # Some services run the method the header names: a policy on methods must see it.
    proxy, sink, upstream, _ = rig
    await send(proxy, absolute(upstream.port, extra=b"X-HTTP-Method-Override: delete\r\n"))
    [record] = decided(sink)
    assert (record.action.details["method"], list(record.action.details["method_overrides"])) == (
        "GET",
        ["DELETE"],
    )


# Review of the body and credential-slot reading (2026-12-08)


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        # Apache HttpClient's UrlEncodedFormEntity default (an OAuth token request)
        (
            b"application/x-www-form-urlencoded; charset=ISO-8859-1",
            b"grant_type=client_credentials&scope=read",
        ),
        (b"text/xml; charset=ISO-8859-1", b"<?xml version='1.0'?><a>plain ascii</a>"),
        (b"text/plain; charset=windows-1252", b"hello"),
    ],
    ids=["java-form", "soap-latin1", "cp1252"],
)
async def test_ascii_body_in_an_ascii_compatible_charset_is_forwarded(
    rig: Rig, ctype: bytes, body: bytes
) -> None:
    proxy, _, upstream, _ = rig
    answer = await send(
        proxy,
        absolute(
            upstream.port, b"/token", b"POST", extra=b"Content-Type: " + ctype + b"\r\n", body=body
        ),
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:400]


async def test_large_text_upload_labelled_octet_stream(rig: Rig) -> None:
    """Over the scan limit, text its sender calls binary is forwarded as binary is
    (review: it was refused with 413 once any UTF-8 body counted as text); JSON that
    large is still refused, whatever its type says."""
    proxy, _, upstream, _ = rig
    body = b"2026-01-01 log line\n" * (MAX_SCAN // 20 + 10)
    answer = await send(
        proxy,
        absolute(
            upstream.port,
            b"/bucket/app.log",
            b"PUT",
            extra=b"Content-Type: application/octet-stream\r\n",
            body=body,
        ),
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:400]
    big_json = b'{"k": "' + b"x" * MAX_SCAN + b'"}'
    refused = await send(
        proxy,
        absolute(
            upstream.port,
            b"/bucket/a.json",
            b"PUT",
            extra=b"Content-Type: application/octet-stream\r\n",
            body=big_json,
        ),
    )
    assert refused.startswith(b"HTTP/1.1 413"), refused[:400]


@pytest.mark.parametrize(
    "how",
    ["cookie", "authorization", "x-api-key", "query-token", "query-key", "query-sig"],
)
async def test_a_key_sent_to_any_host_in_a_credential_slot(rig: Rig, how: str) -> None:
    proxy, sink, upstream, _ = rig
    extra, path = b"", b"/collect"
    if how == "cookie":
        extra = f"Cookie: s={GITHUB_TOKEN}\r\n".encode()
    elif how == "authorization":
        extra = f"Authorization: token {GITHUB_TOKEN}\r\n".encode()
    elif how == "x-api-key":
        extra = f"X-Api-Key: {GITHUB_TOKEN}\r\n".encode()
    elif how == "query-token":
        path = f"/collect?token={GITHUB_TOKEN}".encode()
    elif how == "query-key":
        path = f"/collect?KEY={GITHUB_TOKEN}".encode()
    else:
        path = f"/collect?sig={GITHUB_TOKEN}".encode()
    await send(proxy, absolute(upstream.port, path, extra=extra))
    [record] = decided(sink)
    assert "credentials" in record.action.labels, how


async def test_a_dpop_proof_is_not_data(rig: Rig) -> None:
    # RFC 9449: every DPoP-bound call carries a JWT proof in the DPoP header
    proxy, sink, upstream, _ = rig
    proof = (
        "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2In0.eyJodG0iOiJHRVQiLCJodHUiOiJ4In0"
        ".c2lnbmF0dXJlc2ln"
    )
    extra = f"Authorization: DPoP abc\r\nDPoP: {proof}\r\n".encode()
    await send(proxy, absolute(upstream.port, b"/api", extra=extra))
    [record] = decided(sink)
    assert record.action.labels == frozenset()
