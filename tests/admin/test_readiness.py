"""Readiness without services: the answer follows the listeners and the required probes,
probes that hang or raise count as down, and the metric names each dependency."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.admin.metrics import render
from interlock.admin.readiness import Check, Readiness
from interlock.config import AdminConfig, AgentConfig, Config, HttpConfig, SshConfig
from interlock.core.stats import DecisionStats
from interlock.runtime import build, start
from tests.services import free_port


def probe(outcome: str) -> Check:
    async def check() -> None:
        if outcome == "raise":
            raise ConnectionError("refused")
        if outcome == "hang":
            await asyncio.sleep(60)

    return check


@settings(max_examples=15, deadline=None)
@given(
    listening=st.booleans(),
    probes=st.lists(st.tuples(st.sampled_from(["ok", "raise", "hang"]), st.booleans()), max_size=4),
)
def test_ready_only_when_listening_and_every_required_dependency_answers(
    listening: bool, probes: list[tuple[str, bool]]
) -> None:
    ready = Readiness(listening=listening)
    for i, (outcome, required) in enumerate(probes):
        ready.add(f"dep{i}", probe(outcome), required=required)
    status, body = asyncio.run(ready.report())
    required_down = any(o != "ok" and r for o, r in probes)
    assert (status == 200) == (listening and not required_down), body
    for i, (outcome, _) in enumerate(probes):
        assert body["dependencies"][f"dep{i}"]["up"] == (outcome == "ok")
    if status == 200:
        any_down = any(o != "ok" for o, _ in probes)
        assert body["status"] == ("degraded" if any_down else "ok")


def test_a_probe_that_hangs_is_down_within_its_timeout() -> None:
    ready = Readiness(listening=True)
    ready.add("frozen", probe("hang"))
    status, body = asyncio.run(ready.report())
    assert status == 503
    assert body["down"] == ["frozen"]
    assert "timeout" in body["dependencies"]["frozen"]["error"]


def test_the_metric_names_each_dependency() -> None:
    text = render(DecisionStats(), {}, 0, {}, {"redis": False, "audit_store": True})
    assert 'interlock_dependency_up{name="redis"} 0' in text
    assert 'interlock_dependency_up{name="audit_store"} 1' in text


async def test_readyz_waits_for_the_last_listener(tmp_path: Path) -> None:
    """The admin API answers first and SSH binds last: no 200 before the SSH port
    accepts (what /healthz could not promise)."""
    admin_port, ssh_port = free_port(), free_port()
    config = Config(
        data_dir=tmp_path / "data",
        agents={"coder": AgentConfig(token="coder-token-0123456789")},
        http=HttpConfig(listen="127.0.0.1:0"),  # mitmproxy's start widens the window
        ssh=SshConfig(listen=f"127.0.0.1:{ssh_port}"),
        admin=AdminConfig(listen=f"127.0.0.1:{admin_port}", token="a" * 32),
    )
    rt = build(config)
    starting = asyncio.create_task(start(rt))
    answers: list[tuple[int, bool]] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{admin_port}") as api:
            while not answers or answers[-1][0] != 200:
                try:
                    status = (await api.get("/readyz")).status_code
                except httpx.TransportError:
                    await asyncio.sleep(0.01)
                    continue
                answers.append((status, _accepts(ssh_port)))
        await starting
    finally:
        await rt.stop()
    assert all(accepts for status, accepts in answers if status == 200), answers
    assert answers[-1] == (200, True)


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
