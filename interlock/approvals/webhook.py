"""Webhook channel: POST each approval request as JSON, with signed approve/deny links.

The receiver (a chat bot, a ticketing hook) shows the summary and the two links to the
agent's owner. Each link is a one-time credential for one answer (`links.py`); opening it
shows a confirmation page and the answer is given by the POST from that page, so link
previews and mail scanners that fetch URLs do not answer for anyone.

The POST is signed so the receiver can tell it came from interlock:
`X-Interlock-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the
configured secret>`. Delivery is retried (`attempts`); when it still fails, the hold is
denied with the reason (nobody would hear of it otherwise).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import TYPE_CHECKING

import aiohttp

from interlock.approvals.holds import ChannelError
from interlock.approvals.links import LinkSigner
from interlock.approvals.request import ApprovalRequest
from interlock.config import WebhookConfig

if TYPE_CHECKING:
    from interlock.approvals.holds import Holds

SIGNATURE_HEADER = "X-Interlock-Signature"
LINK_PATH = "/ui/approvals/link/"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class Webhook:
    name = "webhook"

    def __init__(self, config: WebhookConfig, links: LinkSigner, public_url: str) -> None:
        self.config = config
        self.links = links
        self.public_url = public_url.rstrip("/")

    def payload(self, request: ApprovalRequest) -> dict[str, object]:
        approver = request.owner or "webhook-recipient"
        urls = {
            f"{verb}_url": self.public_url
            + LINK_PATH
            + self.links.issue(request.decision_id, verb, approver, request.expires)
            for verb in ("approve", "deny")
        }
        return {
            "type": "interlock.approval_request",
            **request.to_json(),
            **urls,
            "page_url": f"{self.public_url}/ui/approvals",
        }

    async def ask(self, request: ApprovalRequest, holds: Holds) -> None:
        body = json.dumps(self.payload(request)).encode()
        last = ""
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        for attempt in range(self.config.attempts):
            if attempt:
                await asyncio.sleep(min(0.25 * 2**attempt, 2.0))
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: signature(self.config.secret, int(time.time()), body),
            }
            try:
                async with (
                    aiohttp.ClientSession(timeout=timeout) as session,
                    session.post(self.config.url, data=body, headers=headers) as resp,
                ):
                    if 200 <= resp.status < 300:
                        return
                    last = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                last = str(exc) or type(exc).__name__
        raise ChannelError(f"webhook not delivered after {self.config.attempts} attempts: {last}")
