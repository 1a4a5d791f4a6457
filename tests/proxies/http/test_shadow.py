"""Shadow mode through the real HTTP proxy: httpx clients, a raw upstream that logs what
it received, the PDP's records compared between shadow and enforce."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from interlock.audit.record import document
from interlock.audit.shadow import summarize
from interlock.config import AgentConfig, Config, HttpConfig
from interlock.core.context import MemoryStore
from interlock.core.modes import Mode
from interlock.identity.registry import AgentRegistry
from interlock.proxies.http.server import HttpProxy
from interlock.testing import CaptureSink, make_pdp
from tests.proxies.http.rawupstream import RawUpstream

pytestmark = pytest.mark.integration
TOKENS = {"coder": "coder-token-0123456789", "other": "other-token-0123456789"}
POLICY = """
decision := {"effect": "deny", "reasons": ["no forbidden paths"]} if {
	startswith(input.action.details.path, "/forbidden")
} else := {"effect": "approve", "reasons": ["held path"]} if {
	startswith(input.action.details.path, "/held")
} else := {
	"effect": "allow", "reasons": ["ok"],
	"shadow": [{"effect": "deny", "reason": "trial: no /trial"}],
} if {
	startswith(input.action.details.path, "/trial")
} else := {"effect": "allow", "reasons": ["ok"]}
"""
PATHS = ["/ok", "/forbidden/a", "/held", "/trial", "/forbidden/b"]


@pytest.fixture
async def upstream() -> AsyncIterator[RawUpstream]:
    up = await RawUpstream().start()
    yield up
    await up.stop()


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[tuple[HttpProxy, CaptureSink]]:
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "p.rego").write_text("package interlock\nimport rego.v1\n" + POLICY)
    sink = CaptureSink()
    pdp = make_pdp(tmp_path / "policy", sink=sink)
    config = Config(
        http=HttpConfig(
            listen="127.0.0.1:0",
            allow_networks=["127.0.0.0/8"],
            approval_timeout=0.2,
            mode="shadow",
        ),
        agents={name: AgentConfig(token=token) for name, token in TOKENS.items()},
    )
    pdp.modes = config.modes()
    assert config.http is not None
    p = HttpProxy(config.http, tmp_path / "data", pdp, AgentRegistry.from_config(config.agents))
    await p.start()
    yield p, sink
    await p.stop()


def client(p: HttpProxy, agent: str = "coder") -> httpx.AsyncClient:
    assert p.address is not None
    return httpx.AsyncClient(
        proxy=f"http://{agent}:{TOKENS[agent]}@{p.address[0]}:{p.address[1]}", timeout=10
    )


def arrived(up: RawUpstream) -> list[str]:
    return [r.target.decode().lstrip("/") for r in up.requests]


def decided(sink: CaptureSink, start: int = 0) -> list[tuple[str, str, tuple[str, ...]]]:
    return [
        (r.action.details["path"], r.decision.effect.value, r.decision.reasons)
        for r in sink.records[start:]
    ]


async def test_same_traffic_same_decisions_different_outcomes(
    proxy: tuple[HttpProxy, CaptureSink], upstream: RawUpstream
) -> None:
    p, sink = proxy
    base = f"http://127.0.0.1:{upstream.port}"
    async with client(p) as c:
        shadow = [(await c.get(base + path)).status_code for path in PATHS]
    assert shadow == [200] * len(PATHS)
    assert arrived(upstream) == [path.lstrip("/") for path in PATHS], "everything arrived"
    shadow_records = decided(sink)
    assert [r.enforced for r in sink.records] == [True, False, False, True, False]

    p.pdp.modes = Config(http=HttpConfig(mode="enforce")).modes()
    p.pdp.store = MemoryStore(p.pdp.clock)
    upstream.requests.clear()
    start = len(sink.records)
    async with client(p) as c:
        enforce = [(await c.get(base + path)).status_code for path in PATHS]
    assert enforce == [200, 403, 403, 200, 403]
    assert arrived(upstream) == ["ok", "trial"], "nothing denied or held reached the upstream"
    held = [r for r in sink.records[start:] if r.action.protocol == "approval"]
    enforced_records = [r for r in sink.records[start:] if r not in held]
    assert [
        (r.action.details["path"], r.decision.effect.value, r.decision.reasons)
        for r in enforced_records
    ] == shadow_records
    assert all(r.enforced for r in enforced_records)
    trial = [
        r.to_json()["shadow"] for r in sink.records if r.action.details.get("path") == "/trial"
    ]
    assert trial == [[{"effect": "deny", "reason": "trial: no /trial"}]] * 2


async def test_switching_one_agent_changes_its_next_request_only(
    proxy: tuple[HttpProxy, CaptureSink], upstream: RawUpstream
) -> None:
    p, sink = proxy
    async with client(p) as coder, client(p, "other") as other:
        base = f"http://127.0.0.1:{upstream.port}"
        assert (await coder.get(base + "/forbidden/1")).status_code == 200
        assert (await other.get(base + "/forbidden/1")).status_code == 200
        await p.pdp.set_agent_mode("coder", Mode.ENFORCE, "test")
        # The same open connections (keep-alive through the proxy).
        assert (await coder.get(base + "/forbidden/2")).status_code == 403
        assert (await other.get(base + "/forbidden/2")).status_code == 200
    assert arrived(upstream) == ["forbidden/1", "forbidden/1", "forbidden/2"]
    change = [r for r in sink.records if r.action.protocol == "interlock"]
    assert [r.action.details["to"] for r in change] == ["enforce"]


async def test_the_report_counts_what_the_log_holds(
    proxy: tuple[HttpProxy, CaptureSink], upstream: RawUpstream
) -> None:
    p, sink = proxy
    async with client(p) as coder, client(p, "other") as other:
        for path in PATHS:
            await coder.get(f"http://127.0.0.1:{upstream.port}{path}")
        await other.get(f"http://127.0.0.1:{upstream.port}/forbidden/x")
    docs = [document(r) for r in sink.records]
    report = summarize(docs).to_json()
    assert report["not_enforced"] == sum(not d["enforced"] for d in docs) == 4
    assert report["by_effect"] == {"deny": 3, "approve": 1}
    assert report["by_reason"][0] == {"effect": "deny", "reason": "no forbidden paths", "count": 3}
    assert report["trial_rules"] == [{"effect": "deny", "reason": "trial: no /trial", "count": 1}]
    assert report["agents"] == {
        "coder": {"deny": 2, "approve": 1, "trial": 1},
        "other": {"deny": 1},
    }
    assert summarize(docs, agent="other").to_json()["not_enforced"] == 1
    assert summarize(docs, protocol="postgres").to_json()["decisions"] == 0
