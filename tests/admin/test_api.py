"""The admin API: bearer token, agents and their posture, decisions, metrics, audit."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from interlock.admin.server import Admin, make_app
from interlock.approvals.holds import Holds
from interlock.audit.log import AuditLog
from interlock.config import AgentConfig, AuditConfig, Config
from interlock.core.model import Action, Agent, Operation
from interlock.core.modes import Mode
from interlock.core.pdp import PDP
from interlock.identity.registry import AgentRegistry
from interlock.runtime import build

TOKEN = "admin-token-0123456789abcdef"


@dataclass
class Api:
    url: str
    pdp: PDP
    audit: AuditLog

    def client(self, token: str | None = TOKEN) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    config = Config(
        data_dir=tmp_path,
        agents={"coder": AgentConfig(token="coder-token-0123456789")},
        audit=AuditConfig(),
    )
    rt = build(config)
    await rt.audit.start()
    admin = Admin(
        pdp=rt.pdp,
        registry=AgentRegistry.from_config(config.agents),
        holds=Holds(),
        token_digest=hashlib.sha256(TOKEN.encode()).digest(),
        sessions=lambda: {"ssh": 2},
    )
    runner = web.AppRunner(make_app(rt.policy, rt.audit, admin))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield Api(f"http://127.0.0.1:{runner.addresses[0][1]}", rt.pdp, rt.audit)
    await runner.cleanup()
    await rt.audit.close()


async def test_everything_but_healthz_needs_the_token(api: Api) -> None:
    async with api.client(None) as c:
        assert (await c.get("/healthz")).status_code == 200
        for path in ("/metrics", "/v1/agents", "/v1/decisions"):
            r = await c.get(path)
            assert r.status_code == 401
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
    async with api.client("not-the-token") as c:
        assert (await c.get("/v1/agents")).status_code == 401


async def test_restrict_isolate_and_restore_an_agent(api: Api) -> None:
    async with api.client() as c:
        r = await c.post("/v1/agents/coder/restrict", json={"restrictions": ["no_egress"]})
        assert r.json()["posture"]["restrictions"] == ["no_egress"]
        decided = await api.pdp.decide(
            Action(Agent("coder", authn="token"), "http", Operation.EGRESS, "a.example")
        )
        assert decided.effect.value == "deny"
        assert (await c.post("/v1/agents/coder/isolate", json={})).json()["posture"]["isolated"]
        shown = (await c.get("/v1/agents/coder")).json()
        assert shown["posture"]["isolated"] is True
        assert shown["decisions"][0]["decision_id"] == decided.decision_id
        restored = (await c.post("/v1/agents/coder/restore")).json()["posture"]
        assert restored == {
            "restrictions": [],
            "isolated": False,
            "until": None,
            "reason": "restored via admin API",
        }
        listed = (await c.get("/v1/agents")).json()["agents"]
        assert [a["id"] for a in listed] == ["coder"]


async def test_unknown_agents_and_bad_requests(api: Api) -> None:
    async with api.client() as c:
        assert (await c.get("/v1/agents/nobody")).status_code == 404
        assert (await c.post("/v1/agents/nobody/isolate")).status_code == 404
        bad = await c.post("/v1/agents/coder/restrict", json={"restrictions": ["root"]})
        assert bad.status_code == 400
        assert (await c.post("/v1/agents/coder/restrict", content=b"{nope")).status_code == 400
        assert (await c.get("/v1/decisions?limit=x")).status_code == 400


async def test_metrics_decisions_and_audit(api: Api) -> None:
    agent = Agent("coder", authn="token")
    for target in ("a.example", "b.example"):
        await api.pdp.decide(Action(agent, "http", Operation.EGRESS, target))
    await api.audit.flush()
    async with api.client() as c:
        text = (await c.get("/metrics")).text
        assert 'interlock_decisions_total{protocol="http",effect="allow",enforced="true"} 2' in text
        assert "interlock_decision_seconds_count 2" in text
        assert 'interlock_open_sessions{proxy="ssh"} 2' in text
        rows = (await c.get("/v1/decisions", params={"agent": "coder", "limit": 1})).json()
        assert [r["target"] for r in rows["decisions"]] == ["b.example"]
        cp = (await c.get("/v1/audit/checkpoint")).json()
        assert cp["size"] == 2
        assert "interlock" in cp["checkpoint"]
        proof = (await c.get("/v1/audit/proof", params={"index": 0})).json()
        assert (proof["size"], len(proof["proof"])) == (2, 1)
        assert (await c.get("/v1/audit/proof", params={"index": 5})).status_code == 400


async def test_an_agents_mode_is_shown_set_and_audited(api: Api) -> None:
    ddl = Action(Agent("coder", authn="token"), "postgres", Operation.DDL, "public.t")
    async with api.client() as c:
        shown = (await c.get("/v1/agents/coder")).json()["modes"]
        assert shown["postgres"] == {"mode": "enforce", "why": "[policy] mode"}
        assert (await api.pdp.decide(ddl)).effect.value == "approve"
        r = await c.post("/v1/agents/coder/mode", json={"mode": "shadow"})
        assert r.json()["modes"]["ssh"] == {"mode": "shadow", "why": "admin API, agent coder"}
        assert (await api.pdp.decide(ddl)).effect.value == "allow"
        assert (await c.post("/v1/agents/coder/mode", json={"mode": "off"})).status_code == 400
        assert (await c.post("/v1/agents/nobody/mode", json={"mode": "shadow"})).status_code == 404
        report = (await c.get("/v1/shadow-report", params={"agent": "coder"})).json()
        assert (report["not_enforced"], report["by_effect"]) == (1, {"approve": 1})
        assert [m["to"] for m in report["mode_changes"]] == ["shadow"]
        page = await c.get("/v1/shadow-report", params={"format": "html"})
        assert page.headers["content-type"].startswith("text/html")
        assert "1 not enforced" in page.text
        assert (await c.get("/v1/shadow-report", params={"since": "x"})).status_code == 400
        back = await c.post("/v1/agents/coder/mode", json={"mode": None})
        assert back.json()["modes"]["postgres"]["why"] == "[policy] mode"
        text = (await c.get("/metrics")).text
        assert 'effect="approve",enforced="false"} 1' in text
        assert 'effect="approve",enforced="true"} 1' in text


async def test_sighup_rereads_the_modes_and_records_the_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from interlock.config import PostgresConfig
    from interlock.runtime import reload

    agents = {"coder": AgentConfig(token="coder-token-0123456789")}
    before = Config(data_dir=tmp_path, agents=agents, postgres=PostgresConfig())
    after = Config(
        data_dir=tmp_path,
        agents={"coder": AgentConfig(token="coder-token-0123456789", mode="enforce")},
        postgres=PostgresConfig(mode="shadow"),
    )
    rt = build(before)
    await rt.audit.start()
    rt.reread = lambda: after
    await reload(rt)
    await rt.audit.close()
    assert rt.pdp.modes.resolve("other", "postgres") == (Mode.SHADOW, "[postgres] mode")
    assert rt.pdp.modes.resolve("coder", "postgres") == (Mode.ENFORCE, "[agents.coder] mode")
    store = rt.audit.store
    await store.open()
    records = [json.loads(r.data) for r in await store.records(0, await store.size())]
    await store.close()
    assert [
        (r["action"]["details"]["setting"], r["action"]["details"]["via"]) for r in records
    ] == [
        ("[postgres] mode", "SIGHUP"),
        ("[agents.coder] mode", "SIGHUP"),
    ]
    assert "restart for the other changes" not in caplog.text
