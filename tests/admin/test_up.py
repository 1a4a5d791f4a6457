"""`interlock up` as a real process: banner, /healthz, hot reload, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.admin.conftest import embedded_ports, get
from tests.services import free_port


def test_up_with_no_config_serves_healthz(tmp_path: Path, up_factory: Any) -> None:
    ports = embedded_ports()
    up = up_factory([], tmp_path, ports)
    admin = up.wait_ready()
    assert admin == "http://" + ports["admin"]["listen"]
    status, body = get(admin + "/healthz")
    assert status == 200
    assert body["status"] == "ok"
    assert len(body["policy_version"]) == 64
    assert body["audit"]["healthy"] is True
    assert any(line.strip().startswith("audit key") for line in up.banner)
    assert up.stop() == 0
    data = tmp_path / ".interlock"
    assert oct(data.stat().st_mode & 0o777) == "0o700"
    assert oct((data / "audit.key").stat().st_mode & 0o777) == "0o600"
    assert oct((data / "audit.db").stat().st_mode & 0o777) == "0o600"
    verify = subprocess.run(
        [sys.executable, "-m", "interlock.cli", "audit", "verify"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout
    assert "1 signed checkpoint(s)" in verify.stdout, "shutdown writes a final checkpoint"


def test_up_reloads_the_bundle_and_reports_a_refused_one(
    tmp_path: Path, bundle_copy: Path, up_factory: Any
) -> None:
    port = free_port()
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[policy]\nbundle = "{bundle_copy}"\n'
        f'watch_interval = 0.1\n[admin]\nlisten = "127.0.0.1:{port}"\n'
    )
    up = up_factory(["-c", str(cfg)], tmp_path)
    admin = up.wait_ready()
    _, first = get(admin + "/healthz")
    data = json.loads((bundle_copy / "data.json").read_text())
    data["interlock"]["risk"]["rate_per_minute"] = 900
    (bundle_copy / "data.json").write_text(json.dumps(data))
    second = _poll(admin, lambda b: b["policy_version"] != first["policy_version"])
    (bundle_copy / "broken.rego").write_text("package interlock\nbroken := {\n")
    third = _poll(admin, lambda b: b["policy_error"] is not None)
    assert third["status"] == "ok"
    assert third["policy_version"] == second["policy_version"], "old bundle keeps serving"
    assert "broken.rego" in third["policy_error"]
    assert up.stop() == 0


def test_sighup_reloads_now_and_keeps_the_old_bundle_when_the_new_one_is_broken(
    tmp_path: Path, bundle_copy: Path, up_factory: Any
) -> None:
    """With file watching slowed to an hour, only SIGHUP can have reloaded."""
    port = free_port()
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[policy]\nbundle = "{bundle_copy}"\n'
        f'watch_interval = 3600\n[admin]\nlisten = "127.0.0.1:{port}"\n'
    )
    up = up_factory(["-c", str(cfg)], tmp_path)
    admin = up.wait_ready()
    _, first = get(admin + "/healthz")
    (bundle_copy / "broken.rego").write_text("package interlock\nbroken := {\n")
    up.proc.send_signal(signal.SIGHUP)
    refused = _poll(admin, lambda b: b["policy_error"] is not None)
    assert refused["policy_version"] == first["policy_version"], "the old bundle serves"
    assert refused["status"] == "ok"
    (bundle_copy / "broken.rego").unlink()
    data = json.loads((bundle_copy / "data.json").read_text())
    data["interlock"]["risk"]["rate_per_minute"] = 901
    (bundle_copy / "data.json").write_text(json.dumps(data))
    up.proc.send_signal(signal.SIGHUP)
    reloaded = _poll(admin, lambda b: b["policy_version"] != first["policy_version"])
    assert reloaded["policy_error"] is None
    assert up.stop() == 0
    assert up.proc.stderr is not None
    log = up.proc.stderr.read()
    assert "SIGHUP: policy reload refused, old bundle keeps serving" in log
    assert "broken.rego" in log


def test_up_refuses_to_start_on_a_broken_bundle(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "p.rego").write_text("package interlock\nx := {\n")
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(f'[policy]\nbundle = "{tmp_path / "b"}"\n[admin]\nlisten = "127.0.0.1:0"\n')
    out = subprocess.run(
        [sys.executable, "-m", "interlock.cli", "up", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ},
    )
    assert out.returncode == 1
    assert "policy error:" in out.stderr
    assert "p.rego" in out.stderr


def _poll(admin: str, cond: Any, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, body = get(admin + "/healthz")
        if cond(body):
            return body
        time.sleep(0.1)
    pytest.fail("condition not reached on /healthz")


@pytest.mark.integration
async def test_up_runs_the_postgres_proxy_and_audits_its_decisions(
    tmp_path: Path, up_factory: Any, postgres: Any
) -> None:
    import asyncpg

    from tests.audit.conftest import fresh_database

    upstream = await fresh_database(postgres)
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[agents.reporter]\ntoken = "reporter-token-0123456789"\n'
        f'[admin]\nlisten = "127.0.0.1:{free_port()}"\n'
        f'[postgres]\nlisten = "127.0.0.1:{free_port()}"\nupstream = "{upstream}"\n'
    )
    up = up_factory(["-c", str(cfg)], tmp_path)
    await asyncio.to_thread(up.wait_ready)
    line = next(x for x in up.banner if x.strip().startswith("postgres"))
    host, port = line.split()[-1].rsplit("/", 1)[-1].split(":")
    conn = await asyncpg.connect(
        host=host,
        port=int(port),
        user="reporter",
        password="reporter-token-0123456789",
        database=upstream.rsplit("/", 1)[1],
    )
    try:
        assert await conn.fetchval("select 6 * 7") == 42
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("copy (select 1) to program 'true'")
    finally:
        await conn.close()
    assert await asyncio.to_thread(up.stop) == 0
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "interlock.cli", "audit", "tail", "-n", "5", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    effects = [json.loads(x)["effect"] for x in out.stdout.splitlines()]
    assert effects == ["allow", "deny"]


async def test_up_runs_the_http_proxy_and_exports_its_ca(tmp_path: Path, up_factory: Any) -> None:
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[agents.coder]\ntoken = "coder-token-0123456789"\n'
        f'[admin]\nlisten = "127.0.0.1:{free_port()}"\n'
        f'[http]\nlisten = "127.0.0.1:{free_port()}"\n'
        f'[[http.reverse]]\nlisten = "127.0.0.1:{free_port()}"\n'
        f'upstream = "http://127.0.0.1:9"\n'
    )
    up = up_factory(["-c", str(cfg)], tmp_path)
    await asyncio.to_thread(up.wait_ready)
    line = next(x for x in up.banner if x.strip().startswith("http "))
    proxy = line.split()[-1]
    gateway = next(x for x in up.banner if "gateway -> http://127.0.0.1:9" in x).split()[-1]
    import httpx

    async with httpx.AsyncClient(proxy=proxy) as client:
        assert (await client.get("http://example.invalid/")).status_code == 407
    async with httpx.AsyncClient() as client:
        assert (await client.get(gateway + "/")).status_code == 401
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "interlock.cli", "ca", "export", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.startswith("-----BEGIN CERTIFICATE-----")
    assert await asyncio.to_thread(up.stop) == 0


async def test_up_runs_the_ext_authz_servers(tmp_path: Path, up_factory: Any) -> None:
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[agents.coder]\ntoken = "coder-token-0123456789"\n'
        f'[admin]\nlisten = "127.0.0.1:{free_port()}"\n'
        f'[extauthz]\ngrpc_listen = "127.0.0.1:{free_port()}"\n'
        f'http_listen = "127.0.0.1:{free_port()}"\nidentity_header = "x-mesh-agent"\n'
    )
    up = up_factory(["-c", str(cfg)], tmp_path)
    await asyncio.to_thread(up.wait_ready)
    grpc_at = next(x for x in up.banner if "ext_authz gRPC" in x).split()[-1]
    http_at = next(x for x in up.banner if "ext_authz HTTP" in x).split()[-1]
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(grpc_at) as channel:
        r = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert r.status == health_pb2.HealthCheckResponse.SERVING
    import httpx

    async with httpx.AsyncClient() as client:
        ok = await client.get(http_at + "/x", headers={"x-mesh-agent": "coder"})
        assert ok.status_code == 200
        assert ok.headers["x-interlock-agent"] == "coder"
        assert (await client.get(http_at + "/x")).status_code == 401
    assert await asyncio.to_thread(up.stop) == 0


async def test_up_runs_the_ssh_proxy(tmp_path: Path, up_factory: Any) -> None:
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[admin]\nlisten = "127.0.0.1:{free_port()}"\n'
        f'[ssh]\nlisten = "127.0.0.1:{free_port()}"\n'
    )
    up = up_factory(["-c", str(cfg)], tmp_path)
    await asyncio.to_thread(up.wait_ready)
    where = next(x for x in up.banner if x.strip().startswith("ssh ")).split()[-1]
    key = next(x for x in up.banner if "ssh host key" in x).split()[-1]
    assert (await asyncio.to_thread(Path(key).read_text)).startswith("ssh-ed25519 ")
    host, port = where.removeprefix("ssh://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"SSH-2.0-")
    writer.close()
    assert await asyncio.to_thread(up.stop) == 0


async def test_agents_cli_changes_posture_through_the_running_instance(
    tmp_path: Path, up_factory: Any
) -> None:
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[agents.coder]\ntoken = "coder-token-0123456789"\n'
        f'[admin]\nlisten = "127.0.0.1:{free_port()}"\n'
    )
    up = up_factory(["-c", str(cfg)], tmp_path)
    await asyncio.to_thread(up.wait_ready)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "interlock.cli", "agents", *args, "-c", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert (await asyncio.to_thread(cli, "list")).stdout.split() == ["coder", "normal"]
    out = await asyncio.to_thread(cli, "restrict", "coder", "read_only", "no_egress")
    assert '"read_only"' in out.stdout
    assert "no_egress, read_only" in (await asyncio.to_thread(cli, "list")).stdout
    assert '"isolated": true' in (await asyncio.to_thread(cli, "isolate", "coder")).stdout
    assert '"isolated": false' in (await asyncio.to_thread(cli, "restore", "coder")).stdout
    missing = await asyncio.to_thread(cli, "show", "nobody")
    assert missing.returncode == 2
    assert "404" in missing.stderr
    shadow = (await asyncio.to_thread(cli, "mode", "coder", "shadow")).stdout.splitlines()
    assert "postgres   shadow   (admin API, agent coder)" in shadow
    shown = json.loads((await asyncio.to_thread(cli, "show", "coder")).stdout)
    assert shown["modes"]["http"] == {"mode": "shadow", "why": "admin API, agent coder"}
    back = (await asyncio.to_thread(cli, "mode", "coder", "config")).stdout
    assert "http       enforce  ([policy] mode)" in back
    assert await asyncio.to_thread(up.stop) == 0


def test_only_runs_the_named_components(tmp_path: Path, up_factory: Any) -> None:
    grpc, http, admin = free_port(), free_port(), free_port()
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[admin]\nlisten = "127.0.0.1:{admin}"\n'
        f'[extauthz]\ngrpc_listen = "127.0.0.1:{grpc}"\nhttp_listen = "127.0.0.1:{http}"\n'
    )
    up = up_factory(["-c", str(cfg), "--only", "extauthz"], tmp_path)
    assert up.proc.stdout is not None
    banner = []
    for line in up.proc.stdout:
        banner.append(line.strip())
        if line.strip().startswith("audit key"):
            break
    names = [line.split()[0] for line in banner[1:]]
    assert "ext_authz" in names
    assert "admin" not in names, "the admin server was left to another process"
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=2)
    assert up.stop() == 0
    bad = subprocess.run(
        [sys.executable, "-m", "interlock.cli", "up", "-c", str(cfg), "--only", "ssh"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "--only ssh: not configured" in bad.stderr


async def test_sigterm_under_load_loses_no_acknowledged_record(
    tmp_path: Path, up_factory: Any
) -> None:
    """Every decision a client got an answer for is in the log after a SIGTERM in the
    middle of traffic, and the log ends with a signed checkpoint that verifies."""
    import httpx

    cfg = tmp_path / "interlock.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[agents.coder]\ntoken = "coder-token-0123456789"\n'
        f'[admin]\nlisten = "127.0.0.1:{free_port()}"\n'
        f'[extauthz]\ngrpc_listen = "127.0.0.1:{free_port()}"\n'
        f'http_listen = "127.0.0.1:{free_port()}"\nidentity_header = "x-mesh-agent"\n'
    )
    up = up_factory(["-c", str(cfg)], tmp_path)
    await asyncio.to_thread(up.wait_ready)
    http_at = next(x for x in up.banner if "ext_authz HTTP" in x).split()[-1]
    answered: list[str] = []

    async def agent(n: int) -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            for i in range(10_000):
                try:
                    r = await client.get(f"{http_at}/w{n}/{i}", headers={"x-mesh-agent": "coder"})
                except httpx.TransportError:
                    return  # interlock stopped accepting
                answered.append(r.headers["x-interlock-decision-id"])

    workers = [asyncio.create_task(agent(n)) for n in range(4)]
    await asyncio.sleep(1.5)
    up.proc.send_signal(signal.SIGTERM)
    await asyncio.gather(*workers)
    assert await asyncio.to_thread(up.proc.wait, 30) == 0
    assert len(answered) > 50, "there was load when the signal came"
    tail = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "interlock.cli", "audit", "tail", "-n", "100000", "-c", str(cfg)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert tail.returncode == 0, tail.stderr
    missing = [d for d in answered if d not in tail.stdout]
    assert missing == [], f"{len(missing)} acknowledged decisions missing from the log"
    verify = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "interlock.cli", "audit", "verify", "-c", str(cfg)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout
    assert "signed checkpoint" in verify.stdout


MALFORMED = [
    b"NOT HTTP\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nX-A: a\x00b\r\n\r\n",
    b"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: z\r\n\r\n",
]
"""Refusals anyone can cause: not HTTP, no Host, no credentials (407), a NUL in a
value, a Content-Length that is not a number."""


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def test_a_flood_of_refusals_is_accounted_for_in_the_log_after_a_stop(
    tmp_path: Path, up_factory: Any
) -> None:
    """A flood from one address right before SIGTERM: most refusals are only counted
    (the flood limit), and the shutdown writes the counts still waiting before the log
    closes, so the records and their counts add up to every refusal, in a log that
    verifies."""
    http = free_port()
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[http]\nlisten = "127.0.0.1:{http}"\n'
        f'[admin]\nlisten = "127.0.0.1:{free_port()}"\n'
    )
    up = up_factory(["-c", str(cfg)], tmp_path)
    up.wait_ready()
    answers = [_exchange(http, MALFORMED[i % len(MALFORMED)]) for i in range(30)]
    assert all(a.split(b" ", 2)[1] in (b"400", b"407") for a in answers), answers[:3]
    assert up.stop() == 0
    tail = subprocess.run(
        [sys.executable, "-m", "interlock.cli", "audit", "tail", "-n", "1000", "-c", str(cfg)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert tail.returncode == 0, tail.stderr
    records = [json.loads(line) for line in tail.stdout.splitlines() if line.startswith("{")]
    details = [r["action"]["details"] for r in records if r["action"]["protocol"] == "http"]
    assert len(details) < 30, "a flood is not a record per refusal"
    accounted = sum((0 if d.get("summary") else 1) + d["suppressed_since_last"] for d in details)
    assert accounted == 30
    assert any(d.get("summary") for d in details), "the shutdown wrote the waiting count"
    verify = subprocess.run(
        [sys.executable, "-m", "interlock.cli", "audit", "verify", "-c", str(cfg)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout


async def test_json_logs_carry_the_decision_id_of_a_denial(
    tmp_path: Path, up_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    cfg = tmp_path / "interlock.toml"
    admin_port = free_port()
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[agents.coder]\ntoken = "coder-token-0123456789"\n'
        f'[admin]\nlisten = "127.0.0.1:{admin_port}"\ntoken = "admin-token-0123456789"\n'
        f'[extauthz]\ngrpc_listen = "127.0.0.1:{free_port()}"\n'
        f'http_listen = "127.0.0.1:{free_port()}"\nidentity_header = "x-mesh-agent"\n'
    )
    monkeypatch.setenv("INTERLOCK_LOG_FORMAT", "json")
    up = up_factory(["-c", str(cfg)], tmp_path)
    await asyncio.to_thread(up.wait_ready)
    http_at = next(x for x in up.banner if "ext_authz HTTP" in x).split()[-1]
    async with httpx.AsyncClient() as client:
        r = await client.post(
            f"http://127.0.0.1:{admin_port}/v1/agents/coder/restrict",
            json={"restrictions": ["read_only"]},
            headers={"Authorization": "Bearer admin-token-0123456789"},
        )
        assert r.status_code == 200
        denied = await client.post(http_at + "/things", headers={"x-mesh-agent": "coder"})
        assert denied.status_code == 403
    decision_id = denied.headers["x-interlock-decision-id"]
    assert await asyncio.to_thread(up.stop) == 0
    assert up.proc.stderr is not None
    lines = [json.loads(line) for line in up.proc.stderr.read().splitlines() if line.strip()]
    (entry,) = [x for x in lines if x.get("decision_id") == decision_id]
    assert entry["effect"] == "deny"
    assert entry["agent"] == "coder"
    assert entry["protocol"] == "envoy"
    assert entry["level"] == "info"
    assert "read_only" in entry["message"]


@pytest.mark.integration
async def test_sighup_reloads_agents_and_ends_the_sessions_of_a_removed_one(
    tmp_path: Path, up_factory: Any, postgres: Any
) -> None:
    """[agents] is re-read on SIGHUP: a removed agent's open session ends and it cannot
    log in again, a kept agent's session goes on, a new agent can log in; a config file
    that does not validate changes nothing and the log says why."""
    import asyncpg

    from tests.audit.conftest import fresh_database

    upstream = await fresh_database(postgres)
    pg_port = free_port()
    head = (
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[admin]\nlisten = "127.0.0.1:{free_port()}"\n'
        f'[postgres]\nlisten = "127.0.0.1:{pg_port}"\nupstream = "{upstream}"\n'
    )
    keep = '[agents.keeper]\ntoken = "keeper-token-0123456789"\n'
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(head + keep + '[agents.leaver]\ntoken = "leaver-token-0123456789"\n')
    up = up_factory(["-c", str(cfg)], tmp_path)
    await asyncio.to_thread(up.wait_ready)
    database = upstream.rsplit("/", 1)[1]

    def connect(user: str) -> Any:
        return asyncpg.connect(
            host="127.0.0.1",
            port=pg_port,
            user=user,
            password=f"{user}-token-0123456789",
            database=database,
        )

    keeper, leaver = await connect("keeper"), await connect("leaver")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await connect("newcomer")
    # A broken file first: nothing changes. Then one that validates but holds a SCRAM
    # verifier the proxy cannot parse, while removing `leaver`: refused as a whole, so
    # `leaver` is not half-removed either.
    cfg.write_text(head + keep + "[agents.leaver]\ntoken = 'short'\n")
    up.proc.send_signal(signal.SIGHUP)
    await asyncio.sleep(1.0)
    assert await leaver.fetchval("select 1") == 1
    bad_scram = '[agents.odd]\npostgres_scram = "SCRAM-SHA-256$4096:!!!$x:y"\n'
    cfg.write_text(head + keep + bad_scram)
    up.proc.send_signal(signal.SIGHUP)
    await asyncio.sleep(1.0)
    assert await leaver.fetchval("select 1") == 1
    again = await connect("leaver")
    assert await again.fetchval("select 1") == 1
    await again.close()
    # Now remove `leaver` and add `newcomer`.
    cfg.write_text(head + keep + '[agents.newcomer]\ntoken = "newcomer-token-0123456789"\n')
    up.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while not leaver.is_closed() and time.monotonic() < deadline:
        with contextlib.suppress(asyncpg.PostgresError, ConnectionError, asyncpg.InterfaceError):
            await leaver.fetchval("select 1")
        await asyncio.sleep(0.1)
    assert leaver.is_closed(), "the removed agent's session ended"
    assert await keeper.fetchval("select 2") == 2, "the kept agent's session goes on"
    newcomer = await connect("newcomer")
    assert await newcomer.fetchval("select 3") == 3
    with pytest.raises(asyncpg.InvalidPasswordError):
        await connect("leaver")
    await keeper.close()
    await newcomer.close()
    assert await asyncio.to_thread(up.stop) == 0
    assert up.proc.stderr is not None
    log = await asyncio.to_thread(up.proc.stderr.read)
    assert log.count("SIGHUP: config refused, agents unchanged") == 2
    assert "ScramError" in log
    assert "SIGHUP: 2 agents (1 added, 1 removed)" in log
