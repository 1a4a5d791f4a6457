"""OPA-Envoy parity through a real Envoy: form bodies in `parsed_body` and a top-level
`decision_id` in dynamic metadata, under a policy written as the plugin's docs write them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.rpc import code_pb2

from interlock.core.model import Effect
from tests.extauthz.conftest import App, Authz, check_request
from tests.extauthz.test_opa_envoy import opa_authz
from tests.services import envoy_server

pytestmark = pytest.mark.integration

MANIFEST = "application/json"


@pytest.fixture
async def forms(tmp_path: Path) -> AsyncIterator[Authz]:
    async for a in opa_authz(tmp_path, "envoy/forms/result"):
        yield a


@pytest.fixture
def envoy(forms: Authz, app: App) -> Iterator[str]:
    with envoy_server(app.port, forms.grpc_port) as port:
        yield f"http://127.0.0.1:{port}"


def upload(kind: str, pages: int, extra: bytes = b"") -> dict[str, Any]:
    files: dict[str, Any] = {
        "kind": (None, kind),
        "manifest": ("manifest.json", json.dumps({"pages": pages}), MANIFEST),
    }
    if extra:
        files["scan"] = ("scan.bin", extra, "application/octet-stream")
    return {"files": files}


FORMS: list[tuple[str, dict[str, Any], bool]] = [
        ("/people", {"data": {"firstname": "Charlie"}}, True),
        ("/people", {"data": {"firstname": "Alice"}}, False),
        ("/people", {"data": {"firstname": ["Charlie", "Alice"]}}, False),
        ("/people", {"content": b"firstname=Char%6Cie&x=+", "headers": {"content-type":
         "application/x-www-form-urlencoded"}}, True),
        ("/people", {"files": {"firstname": (None, "Charlie")}}, True),
        ("/people", {"json": {"firstname": ["Charlie"]}}, True),
        ("/uploads", upload("report", 3), True),
        ("/uploads", upload("report", 3, bytes(range(256)) * 4), True),
        ("/uploads", upload("report", 50), False),
        ("/uploads", upload("invoice", 3), False),
        ("/uploads", {"data": {"kind": "report", "manifest": '{"pages": 1}'}}, False),
]  # fmt: skip


async def test_form_bodies_decide_as_the_plugin_parses_them(
    forms: Authz, app: App, envoy: str
) -> None:
    async with httpx.AsyncClient(timeout=15) as client:
        for path, send, allowed in FORMS:
            seen = len(app.seen)
            r = await client.post(envoy + path, **send)
            assert r.status_code == (200 if allowed else 403), (path, send, r.text)
            record = forms.sink.last
            assert record.decision.effect is (Effect.ALLOW if allowed else Effect.DENY)
            assert len(app.seen) - seen == (1 if allowed else 0)
            # The plugin's top-level decision_id (over the policy's own) reached Envoy,
            # which copies it into the response header: the audit record's id.
            assert r.headers["x-interlock-decision-id"] == record.decision.decision_id


UNREADABLE = [
        ("application/x-www-form-urlencoded", b"firstname=%zz", "malformed percent-escape"),
        ("application/x-www-form-urlencoded", b"firstname=Charlie;role=admin", "';' in form"),
        ("application/x-www-form-urlencoded", b"firstname=%ff", "not UTF-8"),
        ("multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: form-data; "
         b'name="firstname"\r\n\r\nCharlie\r\n', "closing boundary"),
        ("multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: attachment\r\n\r\n"
         b"x\r\n--b--\r\n", "without a form-data name"),
        ("multipart/form-data; boundary=b", b'--b\r\nContent-Disposition: form-data; name="f"'
         b"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nx\r\n--b--\r\n",
         "content-transfer-encoding"),
        ("multipart/form-data; boundary=b", b'--b\r\nContent-Disposition: form-data; name="m"'
         b"\r\nContent-Type: application/json\r\n\r\n{nope\r\n--b--\r\n", "malformed JSON"),
        ("application/x-www-form-urlencoded", b"firstname=Charlie&pad=" + b"x" * 70000,
         "larger than the proxy forwards"),
]  # fmt: skip


async def test_unreadable_form_bodies_are_refused(forms: Authz, app: App, envoy: str) -> None:
    async with httpx.AsyncClient(timeout=15) as client:
        for content_type, body, why in UNREADABLE:
            headers = {"content-type": content_type}
            r = await client.post(envoy + "/people", content=body, headers=headers)
            assert r.status_code == 403, why
            assert why in forms.sink.last.decision.reasons[0]
    assert app.seen == []


async def test_every_answer_carries_the_decision_id_at_the_top(tmp_path: Path) -> None:
    async for a in opa_authz(tmp_path, "envoy/authz/allow"):
        for req in (check_request(), check_request(path="/a%2Fb")):
            r = await a.check(req)
            assert r.status.code == code_pb2.PERMISSION_DENIED
            assert r.dynamic_metadata["decision_id"] == a.sink.last.decision.decision_id
            assert (
                r.dynamic_metadata["interlock"]["decision_id"] == a.sink.last.decision.decision_id
            )
