"""OpenID CIBA (Client-Initiated Backchannel Authentication) channel, poll mode.

For each request: a backchannel authentication request to the provider with
`login_hint` = the agent's owner and a binding message carrying the summary and the
action hash (the provider shows it on the owner's device, so the person approves that
action), then polling the token endpoint at the interval the provider asks for. Tokens
issued = approved (by the ID token's subject), `access_denied` = denied, `expired_token`
= not approved. The provider unreachable or refusing the request denies the hold with
the reason: if the owner cannot be asked, nobody answers.

The ID token comes straight from the token endpoint over the client-authenticated
channel, so (OpenID Connect Core 3.1.3.7) its subject is read without re-verifying the
signature; it is recorded as the approver.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp

from interlock.approvals.holds import ChannelError
from interlock.approvals.request import ApprovalError, ApprovalRequest
from interlock.config import CibaConfig, tls_unless_loopback

if TYPE_CHECKING:
    from interlock.approvals.holds import Holds

GRANT_TYPE = "urn:openid:params:grant-type:ciba"
MIN_INTERVAL = 0.2
"""Never poll faster than this, whatever the provider says."""
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


def binding_message(request: ApprovalRequest, limit: int) -> str:
    """The summary and hash, printable ASCII, at most `limit` characters (the hash
    prefix is kept whole; the summary is cut to fit)."""
    tail = f" sha256:{request.action_hash[:16]}"
    if limit <= len(tail):
        return tail.strip()[:limit]
    text = _UNPRINTABLE.sub(" ", request.summary).strip()
    return text[: limit - len(tail)] + tail


def id_token_claims(token: object) -> dict[str, Any]:
    """The ID token's claims (empty when there is none or it is malformed)."""
    if not isinstance(token, str) or token.count(".") != 2:
        return {}
    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except ValueError:
        return {}
    return claims if isinstance(claims, dict) else {}


class Ciba:
    name = "ciba"

    def __init__(self, config: CibaConfig) -> None:
        self.config = config
        self._endpoints: tuple[str, str] | None = None

    async def _discover(self, session: aiohttp.ClientSession) -> tuple[str, str]:
        if self.config.backchannel_endpoint and self.config.token_endpoint:
            return self.config.backchannel_endpoint, self.config.token_endpoint
        if self._endpoints is None:
            url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            async with session.get(url) as resp:
                if resp.status != 200:
                    raise ChannelError(f"approval provider discovery failed: HTTP {resp.status}")
                doc = await resp.json(content_type=None)
            bc = self.config.backchannel_endpoint or doc.get("backchannel_authentication_endpoint")
            token = self.config.token_endpoint or doc.get("token_endpoint")
            if not isinstance(bc, str) or not isinstance(token, str):
                raise ChannelError("approval provider offers no backchannel endpoint (CIBA)")
            try:
                tls_unless_loopback(bc)
                tls_unless_loopback(token)
            except ValueError as exc:
                raise ChannelError(f"approval provider discovery: {exc}") from None
            self._endpoints = (bc, token)
        return self._endpoints

    async def _post(
        self, session: aiohttp.ClientSession, url: str, form: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        # RFC 6749 2.3.1: id and secret are form-encoded before Basic encoding.
        pair = (
            f"{quote(self.config.client_id, safe='')}:{quote(self.config.client_secret, safe='')}"
        )
        auth = "Basic " + base64.b64encode(pair.encode()).decode()
        async with session.post(url, data=form, headers={"Authorization": auth}) as resp:
            try:
                doc = await resp.json(content_type=None)
            except ValueError:
                doc = None
            return resp.status, doc if isinstance(doc, dict) else {}

    async def ask(self, request: ApprovalRequest, holds: Holds) -> None:
        if not request.owner:
            raise ChannelError(f"CIBA asks the agent's owner; {request.agent} has none")
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                await self._run(session, request, holds)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            why = str(exc) or type(exc).__name__
            raise ChannelError(f"approval provider unreachable: {why}") from None

    async def _run(
        self, session: aiohttp.ClientSession, request: ApprovalRequest, holds: Holds
    ) -> None:
        assert request.owner is not None
        backchannel, token_url = await self._discover(session)
        form = {"scope": self.config.scope, "login_hint": request.owner}
        message = binding_message(request, self.config.binding_message_max)
        if message:
            form["binding_message"] = message
        expiry = int(request.expires - time.time())
        if expiry > 0:
            form["requested_expiry"] = str(expiry)
        status, doc = await self._post(session, backchannel, form)
        auth_req_id = doc.get("auth_req_id")
        if status != 200 or not isinstance(auth_req_id, str):
            raise ChannelError(f"approval provider refused the request: {_error(status, doc)}")
        interval = _interval(doc.get("interval"))
        while True:
            await asyncio.sleep(interval)
            status, doc = await self._post(
                session, token_url, {"grant_type": GRANT_TYPE, "auth_req_id": auth_req_id}
            )
            error = doc.get("error")
            if status == 200 and "access_token" in doc:
                who = self._approver(doc.get("id_token"), request.owner)
                self._answer(holds, request, True, who, "approved at the provider")
                return
            if error == "authorization_pending":
                continue
            if error == "slow_down":
                interval += 5
                continue
            if error == "access_denied":
                self._answer(holds, request, False, request.owner, "denied at the provider")
                return
            if error == "expired_token":
                holds.expire(request.decision_id, "the provider's request expired", self.name)
                return
            raise ChannelError(f"approval provider: {_error(status, doc)}")

    def _approver(self, id_token: object, owner: str) -> str:
        """Who approved, from the ID token, which must be for this client from this
        issuer and name the owner; anything else is not the owner's approval."""
        claims = id_token_claims(id_token)
        if not claims:
            raise ChannelError("the provider approved without an ID token")
        if str(claims.get("iss", "")).rstrip("/") != self.config.issuer.rstrip("/"):
            raise ChannelError("the ID token is from another issuer")
        aud = claims.get("aud")
        if self.config.client_id not in (aud if isinstance(aud, list) else [aud]):
            raise ChannelError("the ID token is for another client")
        who = str(claims.get(self.config.subject_claim, ""))[:256]
        if who != owner:
            raise ChannelError(f"approved as {who or 'nobody'}, not as the owner {owner}")
        return who

    def _answer(
        self, holds: Holds, request: ApprovalRequest, approved: bool, who: str, reason: str
    ) -> None:
        # ApprovalError: answered on another channel meanwhile, or expired.
        with contextlib.suppress(ApprovalError):
            holds.answer(request.decision_id, approved, who, self.name, reason, check_owner=False)


def _interval(value: object) -> float:
    """The provider's polling interval, kept sane (default 5 s, RFC 8628 / CIBA 7.3)."""
    try:
        seconds = float(value) if isinstance(value, int | float | str) and value != "" else 5.0
    except ValueError:
        seconds = 5.0
    return min(max(MIN_INTERVAL, seconds), 60.0) if seconds == seconds else 5.0


def _error(status: int, doc: dict[str, Any]) -> str:
    error = str(doc.get("error") or f"HTTP {status}")[:100]
    text = str(doc.get("error_description") or "")[:300]
    return f"{error} ({text})" if text else error
