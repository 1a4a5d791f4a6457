"""Bodies whose Content-Type does not say JSON or text, and a header map of many repeats.

An MCP `tools/call` sent untyped or as `text/plain` is run by servers that read the body
as JSON whatever its type (Starlette's and aiohttp's `request.json()`); a key in an
`application/octet-stream` body leaves as much as one in `text/plain`. The HTTP proxy
reads both (`body_text`); the ext_authz decision must too.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from interlock.extauthz.body import read_body
from interlock.extauthz.request import from_check_bytes
from tests.extauthz.conftest import MESH_HEADER, App, Authz, check_request
from tests.services import envoy_server

CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "drop_database"}}
UNTYPED = [None, "text/plain", "application/octet-stream"]


@pytest.mark.integration
@pytest.mark.parametrize("ctype", UNTYPED)
async def test_a_disabled_tool_stays_disabled_through_envoy_whatever_the_type_says(
    authz: Authz, app: App, ctype: str | None
) -> None:
    """Before: decided as a plain `write` to the host, allowed, and forwarded."""
    await authz.pdp.store.restrict("coder", ["tool:drop_database"])
    headers = {MESH_HEADER: "coder"} | ({"content-type": ctype} if ctype else {})
    with envoy_server(app.port, authz.grpc_port) as port:
        async with httpx.AsyncClient(timeout=15) as client:
            r = await client.post(
                f"http://127.0.0.1:{port}/mcp", content=json.dumps(CALL), headers=headers
            )
    action = authz.sink.last.action
    assert (action.operation.value, action.target) == ("tool_call", "drop_database")
    assert r.status_code == 403
    assert app.seen == []


@pytest.mark.parametrize("ctype", UNTYPED)
def test_untyped_text_is_scanned_and_its_json_classified(ctype: str | None) -> None:
    headers = {"content-type": ctype} if ctype else {}
    body = read_body(json.dumps(CALL).encode(), headers, 1 << 20)
    assert body.document == CALL
    assert body.parsed is None  # what OPA-Envoy gives as parsed_body for these types
    assert read_body(b"card 4111 1111 1111 1111", headers, 1 << 20).text is not None
    if ctype != "text/plain":  # binary declared as text is refused, as before
        assert read_body(b"\x89PNG\r\n\x1a\n\xff\xfe", headers, 1 << 20).text is None


async def test_a_cut_untyped_json_body_is_refused(authz: Authz) -> None:
    """A `tools/call` padded past Envoy's `max_request_bytes` with no type must not pass
    as a plain write (a typed one already is refused)."""
    await authz.pdp.store.restrict("coder", ["tool:drop_database"])
    raw = json.dumps(CALL)[:-1]
    req = check_request(
        "POST", "/mcp", {MESH_HEADER: "coder", "content-length": str(len(raw) + 70000)}, raw
    )
    r = await authz.check(req)
    assert not r.HasField("ok_response")
    assert "larger than the proxy forwards" in json.loads(r.denied_response.body)["reason"]


def test_many_repeats_of_one_header_are_joined_in_linear_time() -> None:
    """Joined one by one, 40,000 repeats of a name (8 MB) took 12 s with the event loop
    held: every other Check waited (Envoy denied them all on its 1 s timeout)."""
    req = check_request()
    for _ in range(40_000):
        req.attributes.request.http.header_map.headers.add(key="X-A", raw_value=b"v" * 200)
    req.attributes.request.http.header_map.headers.add(key="x-a", raw_value=b"last")
    raw = req.SerializeToString()
    start = time.monotonic()
    parsed = from_check_bytes(raw)
    assert time.monotonic() - start < 1.0
    assert parsed.headers["x-a"].endswith(",last")
    assert parsed.headers["x-a"].count(",") == 40_000
    assert parsed.headers[MESH_HEADER] == "coder"
