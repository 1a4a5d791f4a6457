"""OpenID CIBA in poll mode against a real provider (npm oidc-provider, tests/oidc): the
owner approves or denies on their "device" (the provider's test control server), and an
unreachable or refusing provider denies the hold with the reason."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from interlock.approvals.ciba import binding_message
from interlock.config import ApprovalsConfig, CibaConfig
from interlock.testing.services import OidcProvider
from tests.approvals.conftest import OWNER, RigFactory
from tests.services import free_port, oidc_provider

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def op() -> Iterator[OidcProvider]:
    with oidc_provider((OWNER, "bob@example.com")) as provider:
        yield provider


def ciba(op: OidcProvider, issuer: str | None = None) -> ApprovalsConfig:
    return ApprovalsConfig(
        ciba=CibaConfig(
            issuer=issuer or op.issuer, client_id=op.client_id, client_secret=op.client_secret
        )
    )


async def on_device(op: OidcProvider, decision_hash: str) -> dict[str, Any]:
    """The provider's pending request for our hold, as the owner's device shows it."""
    async with httpx.AsyncClient(timeout=5) as c:
        for _ in range(200):
            for item in (await c.get(op.control + "/pending")).json():
                if decision_hash[:16] in (item["binding_message"] or ""):
                    return dict(item)
            await asyncio.sleep(0.05)
    pytest.fail("the provider never received the backchannel request")


async def device(op: OidcProvider, verb: str, request_id: str) -> None:
    async with httpx.AsyncClient(timeout=5) as c:
        assert (await c.post(f"{op.control}/{verb}/{request_id}")).status_code == 200


async def test_the_owner_approves_on_their_device(make_rig: RigFactory, op: OidcProvider) -> None:
    rig = await make_rig(ciba(op))
    task = rig.held()
    held = await rig.pending()
    item = await on_device(op, held.action_hash)
    assert item["account"] == OWNER
    assert item["binding_message"] == binding_message(held, 160)
    assert "/report" in item["binding_message"]
    await device(op, "approve", item["id"])
    assert (await task).text == "done"
    details, reason = rig.outcome(held.decision_id)
    assert (details["approver"], details["channel"]) == (OWNER, "ciba")
    assert reason == f"approved by {OWNER} via ciba"


async def test_the_owner_denies_on_their_device(make_rig: RigFactory, op: OidcProvider) -> None:
    rig = await make_rig(ciba(op))
    task = rig.held()
    held = await rig.pending()
    item = await on_device(op, held.action_hash)
    await device(op, "deny", item["id"])
    response = await task
    assert response.status_code == 403
    assert "held for approval" in response.json()["reason"]
    assert rig.outcome(held.decision_id)[1] == f"denied by {OWNER} via ciba"


async def test_another_channel_may_answer_first(make_rig: RigFactory, op: OidcProvider) -> None:
    rig = await make_rig(ciba(op))
    task = rig.held()
    held = await rig.pending()
    await on_device(op, held.action_hash)
    rig.rt.holds.answer(held.decision_id, True, OWNER, "cli")
    assert (await task).text == "done"


async def test_an_unreachable_provider_denies_with_the_reason(
    make_rig: RigFactory, op: OidcProvider
) -> None:
    rig = await make_rig(ciba(op, issuer=f"http://127.0.0.1:{free_port()}"))
    response = await rig.held()
    assert response.status_code == 403
    assert "ciba: approval provider unreachable" in response.json()["reason"]


async def test_an_owner_the_provider_does_not_know_is_refused(
    make_rig: RigFactory, op: OidcProvider
) -> None:
    rig = await make_rig(ciba(op), owner="mallory@example.com")
    response = await rig.held()
    assert response.status_code == 403
    assert "approval provider refused the request: unknown_user_id" in response.json()["reason"]


async def test_an_agent_without_an_owner_cannot_be_asked(
    make_rig: RigFactory, op: OidcProvider
) -> None:
    rig = await make_rig(ciba(op), owner=None)
    response = await rig.held()
    assert response.status_code == 403
    assert "CIBA asks the agent's owner; coder has none" in response.json()["reason"]


async def test_wrong_client_credentials_are_reported(
    make_rig: RigFactory, op: OidcProvider
) -> None:
    config = ApprovalsConfig(
        ciba=CibaConfig(issuer=op.issuer, client_id=op.client_id, client_secret="wrong-secret")
    )
    rig = await make_rig(config)
    response = await rig.held()
    assert response.status_code == 403
    assert "invalid_client" in response.json()["reason"]


async def test_no_answer_before_expiry_is_a_denial(make_rig: RigFactory, op: OidcProvider) -> None:
    rig = await make_rig(ciba(op), hold_s=2)
    response = await rig.held()
    assert response.status_code == 403
    reason = response.json()["reason"]
    # Whichever notices first: interlock's deadline or the provider's expired_token.
    assert "approval not given within 2 s" in reason or "request expired" in reason


OK = (200, '{"auth_req_id": "a", "interval": 0}')


def _jwt(claims: dict[str, str]) -> str:
    """An unsigned token with these claims."""
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"e30.{body}.sig"


@pytest.mark.parametrize(
    ("backchannel", "token", "reason"),
    [
        ((200, "<html>not json</html>"), (200, "{}"), "refused the request: HTTP 200"),
        ((400, '{"error": "x"}'), (200, "{}"), "refused the request: x"),
        (OK, (500, "oops"), "provider: HTTP 500"),
        (OK, (400, '{"error": "invalid_grant"}'), "approval provider: invalid_grant"),
        ((200, '{"auth_req_id": "a", "interval": "NaN"}'), (200, "[]"), "provider: HTTP 200"),
        (OK, (200, '{"access_token": "t"}'), "approved without an ID token"),
        (OK, {"sub": OWNER, "iss": "https://elsewhere"}, "the ID token is from another issuer"),
        (OK, {"sub": OWNER, "aud": "other"}, "the ID token is for another client"),
        (OK, {"sub": "mallory"}, f"approved as mallory, not as the owner {OWNER}"),
    ],
)
async def test_a_broken_provider_denies_the_hold(
    make_rig: RigFactory,
    backchannel: tuple[int, str],
    token: tuple[int, str] | dict[str, str],
    reason: str,
) -> None:
    """Not a real provider: a deliberately broken or lying server, for answers
    oidc-provider never gives (the real one is tested above). A dict `token` is the
    claims of an ID token issued with an access token."""

    async def discovery(request: web.Request) -> web.Response:
        base = f"http://{request.host}"
        return web.json_response(
            {"backchannel_authentication_endpoint": base + "/bc", "token_endpoint": base + "/t"}
        )

    def fixed(answer: tuple[int, str]) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(status=answer[0], text=answer[1])

        return handler

    async def tokens(request: web.Request) -> web.Response:
        assert isinstance(token, dict)
        claims = {"iss": f"http://{request.host}", "aud": "c", **token}
        return web.json_response({"access_token": "t", "id_token": _jwt(claims)})

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_post("/bc", fixed(backchannel))
    app.router.add_post("/t", tokens if isinstance(token, dict) else fixed(token))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        issuer = f"http://127.0.0.1:{runner.addresses[0][1]}"
        config = CibaConfig(issuer=issuer, client_id="c", client_secret="s")
        rig = await make_rig(ApprovalsConfig(ciba=config))
        response = await rig.held()
        assert response.status_code == 403
        assert reason in response.json()["reason"]
    finally:
        await runner.cleanup()
