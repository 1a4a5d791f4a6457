"""Signed approve/deny links: valid once, until they expire; anything else is refused."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from interlock.approvals.links import LinkError, LinkSigner
from interlock.testing import FakeClock

KEY = b"k" * 32


def signer(clock: FakeClock | None = None) -> LinkSigner:
    return LinkSigner(KEY, ttl=600, clock=clock or FakeClock())


def test_a_link_names_one_answer_and_works_once() -> None:
    links = signer()
    token = links.issue("d-1", "approve", "alice", not_after=1e12)
    link = links.verify(token)
    assert (link.decision_id, link.verb, link.approver) == ("d-1", "approve", "alice")
    links.consume(link)
    with pytest.raises(LinkError, match="already used") as replay:
        links.verify(token)
    assert replay.value.status == 410
    other = links.verify(links.issue("d-1", "deny", "alice", not_after=1e12))
    assert other.nonce != link.nonce, "each link is its own credential"


def test_a_link_expires_with_its_request_or_its_ttl() -> None:
    clock = FakeClock()
    links = signer(clock)
    short = links.issue("d-1", "approve", "alice", not_after=clock() + 30)
    long = links.issue("d-2", "approve", "alice", not_after=clock() + 10_000)
    clock.advance(31)
    with pytest.raises(LinkError, match="expired"):
        links.verify(short)
    assert links.verify(long).decision_id == "d-2"
    clock.advance(600)
    with pytest.raises(LinkError, match="expired"):
        links.verify(long)


def _tamper(token: str, **changes: object) -> str:
    body, mac = token.split(".")
    doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    doc.update(changes)
    raw = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + mac


@pytest.mark.parametrize(
    "changes", [{"v": "approve"}, {"i": "d-2"}, {"a": "mallory"}, {"e": 1e15}, {"n": "x"}]
)
def test_a_tampered_link_is_refused(changes: dict[str, object]) -> None:
    links = signer()
    token = links.issue("d-1", "deny", "alice", not_after=1e12)
    with pytest.raises(LinkError, match="signature") as refused:
        links.verify(_tamper(token, **changes))
    assert refused.value.status == 403


def test_a_link_signed_with_another_key_is_refused() -> None:
    theirs = LinkSigner(b"x" * 32, ttl=600, clock=FakeClock())
    with pytest.raises(LinkError, match="signature"):
        signer().verify(theirs.issue("d-1", "approve", "alice", not_after=1e12))


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        LinkSigner(b"short", ttl=60)


@given(st.text(max_size=3000))
def test_arbitrary_tokens_are_refused_never_crash(token: str) -> None:
    with pytest.raises(LinkError) as refused:
        signer().verify(token)
    assert refused.value.status in (403, 410)
