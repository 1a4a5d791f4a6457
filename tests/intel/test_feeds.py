"""Threat feeds: both formats, matching, reload on change, and a broken feed kept out."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from interlock.core.model import Action, Agent, Effect, Operation
from interlock.intel.feeds import FeedError, ThreatIntel, parse
from interlock.testing import FakeClock, make_pdp

AGENT = Agent("coder", authn="token")


def egress(target: str, protocol: str = "http") -> Action:
    return Action(AGENT, protocol, Operation.EGRESS, target)


def write(path: Path, text: str, mtime: float) -> None:
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def test_plain_and_json_feeds() -> None:
    plain = parse("# bad stuff\nevil.example\n203.0.113.0/24\n2001:db8::/32 # v6\n", "list")
    assert plain.domains == {"evil.example": "list"}
    assert len(plain.networks) == 2
    doc = {"indicators": [{"type": "domain", "value": "c2.example.net", "source": "vendor"}]}
    assert parse(json.dumps(doc), "feed.json").domains == {"c2.example.net": "vendor"}


@pytest.mark.parametrize(
    "text",
    ["has space.example\n", '{"indicators": "no"}', '{"indicators": [{"value": 3}]}', "{bad json"],
)
def test_malformed_feeds_are_refused(text: str) -> None:
    with pytest.raises(FeedError):
        parse(text, "x")


def test_matching_subdomains_addresses_and_only_destinations(tmp_path: Path) -> None:
    feed = tmp_path / "feed.txt"
    write(feed, "evil.example\n198.51.100.0/24\n", 1000)
    intel = ThreatIntel([feed])
    assert intel.match(egress("api.evil.example")) == ("feed.txt: evil.example",)
    assert intel.match(egress("198.51.100.7:443")) == ("feed.txt: 198.51.100.0/24",)
    assert intel.match(egress("notevil.example")) == ()
    # A table named like a domain is not a destination.
    table = Action(AGENT, "postgres", Operation.READ, "evil.example")
    assert intel.match(table) == ()


def test_a_changed_feed_is_reloaded_and_a_broken_one_keeps_the_last_good(tmp_path: Path) -> None:
    clock = FakeClock(0)
    feed = tmp_path / "feed.txt"
    write(feed, "one.example\n", 1000)
    intel = ThreatIntel([feed], clock=clock)
    assert intel.match_host("one.example")
    write(feed, "two.example\n", 2000)
    clock.advance(5)
    assert intel.match_host("two.example")
    assert not intel.match_host("one.example")
    write(feed, "not a domain at all\n", 3000)
    clock.advance(5)
    assert intel.match_host("two.example")  # last good version still serving
    assert "line 1" in intel.status()["errors"][str(feed)]


async def test_a_feed_match_denies_through_the_pdp(tmp_path: Path) -> None:
    feed = tmp_path / "feed.txt"
    write(feed, "evil.example\n", 1000)
    pdp = make_pdp()
    pdp.intel = ThreatIntel([feed])
    d = await pdp.decide(egress("www.evil.example"))
    assert d.effect in (Effect.DENY, Effect.ISOLATE)
    assert any("threat intel" in r for r in d.reasons)
    ok = await pdp.decide(egress("docs.example.com"))
    assert ok.effect is Effect.ALLOW
