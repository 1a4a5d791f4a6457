"""Signed one-time approve/deny links, as sent in webhooks.

A link is its own credential: whoever holds it may give that one answer, for that one
request, as the person it was issued to, until it expires, once. So the token names all
of that (request id, verb, approver, expiry, a nonce) and is MACed with HMAC-SHA256 under
a key only this server holds. Verification is constant-time; a used nonce is remembered
until the link would have expired anyway, so a replay is refused even after the request
itself is gone.

Tokens are `<base64url(JSON)>.<base64url(MAC)>`; nothing in them is secret but the MAC.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_TOKEN = 2048
VERBS = frozenset({"approve", "deny"})


class LinkError(Exception):
    """A link that cannot be used; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Link:
    decision_id: str
    verb: str
    approver: str
    expires: float
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    def __init__(self, key: bytes, ttl: float, clock: Callable[[], float] = time.time) -> None:
        if len(key) < 32:
            raise ValueError("link key must be at least 32 bytes")
        self._key = key
        self.ttl = ttl
        self._clock = clock
        self._used: dict[str, float] = {}

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, b"interlock-approval-link\0" + body, hashlib.sha256).digest()

    def issue(self, decision_id: str, verb: str, approver: str, not_after: float) -> str:
        """A token for one answer; it expires at the earlier of `ttl` and `not_after`."""
        assert verb in VERBS
        expires = min(self._clock() + self.ttl, not_after)
        doc = {"i": decision_id, "v": verb, "a": approver, "e": round(expires, 3)}
        doc["n"] = secrets.token_urlsafe(12)
        body = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
        return f"{_b64(body)}.{_b64(self._mac(body))}"

    def verify(self, token: str) -> Link:
        """The link a token stands for, or LinkError: malformed or forged (403), expired
        (410), already used (410). Does not mark it used: see `consume`."""
        if len(token) > MAX_TOKEN or token.count(".") != 1:
            raise LinkError(403, "malformed link")
        body_text, mac_text = token.split(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (binascii.Error, ValueError):
            raise LinkError(403, "malformed link") from None
        if not hmac.compare_digest(mac, self._mac(body)):
            raise LinkError(403, "link signature does not match (tampered or not ours)")
        try:
            doc = json.loads(body)
            link = Link(str(doc["i"]), str(doc["v"]), str(doc["a"]), float(doc["e"]), str(doc["n"]))
        except (ValueError, KeyError, TypeError):
            raise LinkError(403, "malformed link") from None
        if link.verb not in VERBS:
            raise LinkError(403, "malformed link")
        if link.expires <= self._clock():
            raise LinkError(410, "link expired")
        if link.nonce in self._used:
            raise LinkError(410, "link already used")
        return link

    def consume(self, link: Link) -> None:
        """Mark a link used (kept until it would have expired)."""
        now = self._clock()
        for nonce in [n for n, until in self._used.items() if until <= now]:
            del self._used[nonce]
        self._used[link.nonce] = link.expires
