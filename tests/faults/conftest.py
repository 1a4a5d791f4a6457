"""One interlock with every proxy, its dependencies behind fault proxies, and real clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from interlock.config import (
    AdminConfig,
    AgentConfig,
    AuditConfig,
    Config,
    ExtAuthzConfig,
    HttpConfig,
    PostgresConfig,
    SshConfig,
    SshTarget,
    StateConfig,
)
from interlock.runtime import Runtime, build, start
from interlock.testing import serve_app
from interlock.testing.faultproxy import FaultProxy
from interlock.testing.services import Postgres, Redis, Sshd
from tests.audit.conftest import fresh_database
from tests.services import redis_server, sshd_server

TOKEN = "coder-token-0123456789"
ADMIN = "admin-token-0123456789abcdef"
MESH_HEADER = "x-mesh-agent"
DECISION = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")


class RedisSlot:
    """A real redis-server that can be killed and brought back on its port (empty, as a
    restarted Redis without persistence is), or frozen with SIGSTOP."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self.server: Redis = self._stack.enter_context(redis_server())
        self.port = self.server.port

    def kill(self) -> None:
        self.server.process.kill()
        self._stack.close()

    def revive(self) -> None:
        self._stack = contextlib.ExitStack()
        self.server = self._stack.enter_context(redis_server(self.port))

    def freeze(self) -> None:
        os.kill(self.server.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.server.process.pid, signal.SIGCONT)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.thaw()
        self._stack.close()


@dataclass
class Answer:
    ok: bool
    text: str

    @property
    def decision(self) -> str:
        found = DECISION.search(self.text)
        assert found is not None, f"no decision id in {self.text!r}"
        return found.group(0)


@dataclass
class World:
    runtime: Runtime
    redis: RedisSlot
    redis_link: FaultProxy
    audit_link: FaultProxy
    db_link: FaultProxy
    database: str
    site: str
    known_hosts: Path
    agent_key: Path
    measured: dict[str, float] = field(default_factory=dict)

    def endpoint(self, name: str) -> str:
        return self.runtime.endpoints[name].split("//", 1)[1]

    @property
    def dsn(self) -> str:
        return f"postgresql://coder:{TOKEN}@{self.endpoint('postgres')}/{self.database}"

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.runtime.endpoints["admin"],
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=10,
        )

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        async with self.api() as api:
            r = await api.get("/readyz")
        return r.status_code, r.json()

    async def records(self) -> list[dict[str, Any]]:
        """Every audit record stored so far (the queue flushed first)."""
        audit = self.runtime.audit
        await audit.flush()
        stored = await audit.store.records(0, await audit.store.size())
        return [json.loads(r.data) for r in stored]

    async def record(self, decision_id: str) -> dict[str, Any]:
        for doc in await self.records():
            if doc["decision_id"] == decision_id:
                return doc
        pytest.fail(f"no audit record for decision {decision_id}")


async def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, list(cmd), capture_output=True, text=True, timeout=30
    )


async def psql(world: World, sql: str = "select 1") -> Answer:
    p = await run("psql", "-X", "-At", "-c", sql, world.dsn)
    return Answer(p.returncode == 0 and p.stdout.strip() == "1", p.stderr)


async def curl_proxy(world: World) -> Answer:
    p = await run(
        "curl", "-sS", "--max-time", "20", "-x", f"http://coder:{TOKEN}@{world.endpoint('http')}",
        f"{world.site}/ok", "-w", "\n%{http_code}",
    )  # fmt: skip
    return Answer(p.stdout.endswith("\n200") and "fine" in p.stdout, p.stdout + p.stderr)


async def ssh(world: World) -> Answer:
    host, port = world.endpoint("ssh").rsplit(":", 1)
    p = await run(
        "ssh", "-p", port, "-i", str(world.agent_key), "-F", "/dev/null",
        "-o", f"UserKnownHostsFile={world.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10",
        f"coder@{host}", "cat /etc/hostname",
    )  # fmt: skip
    return Answer(p.returncode == 0 and p.stdout.strip() != "", f"exit {p.returncode}: {p.stderr}")


async def authz(world: World) -> Answer:
    """NGINX auth_request's subrequest, as curl sends it."""
    p = await run(
        "curl", "-sS", "--max-time", "20", f"http://{world.endpoint('ext_authz HTTP')}/",
        "-H", f"{MESH_HEADER}: coder", "-H", "X-Original-URI: /reports",
        "-H", "X-Original-Method: GET", "-H", "X-Original-Host: reports.mesh",
        "-w", "\n%{http_code}", "-D", "-",
    )  # fmt: skip
    return Answer(p.stdout.endswith("\n200"), p.stdout + p.stderr)


async def curl_untrusted(world: World, path: str = "/ok") -> Answer:
    """A page from a host that is not trusted (`localhost`): its text taints the agent."""
    port = world.site.rsplit(":", 1)[1]
    p = await run(
        "curl", "-sS", "--max-time", "20", "-x", f"http://coder:{TOKEN}@{world.endpoint('http')}",
        f"http://localhost:{port}{path}", "-w", "\n%{http_code}",
    )  # fmt: skip
    return Answer(p.stdout.endswith("\n200"), p.stdout + p.stderr)


async def curl_cut(world: World) -> Answer:
    """An untrusted host's page whose response arrives after Redis died."""
    return await curl_untrusted(world, "/cut")


CLIENTS: dict[str, Callable[[World], Awaitable[Answer]]] = {
    "postgres": psql,
    "http": curl_proxy,
    "ssh": ssh,
    "extauthz": authz,
}


async def until_ok(
    world: World, client: Callable[[World], Awaitable[Answer]], bound: float
) -> float:
    """Seconds until `client` succeeds again (fails the test past `bound`)."""
    started = time.monotonic()
    while True:
        answer = await client(world)
        elapsed = time.monotonic() - started
        if answer.ok:
            return elapsed
        assert elapsed < bound, f"not recovered within {bound} s: {answer.text}"
        await asyncio.sleep(0.05)


async def until_ready(world: World, bound: float) -> float:
    started = time.monotonic()
    while True:
        status, body = await world.readyz()
        elapsed = time.monotonic() - started
        if status == 200 and body["status"] == "ok":
            return elapsed
        assert elapsed < bound, f"not ready within {bound} s: {body}"
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def sshd() -> Iterator[Sshd]:
    with sshd_server() as s:
        yield s


@pytest.fixture(scope="module")
def redis_slot() -> Iterator[RedisSlot]:
    slot = RedisSlot()
    yield slot
    slot.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(
    tmp_path_factory: pytest.TempPathFactory, postgres: Postgres, sshd: Sshd, redis_slot: RedisSlot
) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("faults")
    upstream = await fresh_database(postgres)
    audit_db = await fresh_database(postgres)
    links = [
        FaultProxy("127.0.0.1", redis_slot.port),
        FaultProxy("127.0.0.1", postgres.port),
        FaultProxy("127.0.0.1", postgres.port),
    ]
    for link in links:
        await link.start()
    redis_link, audit_link, db_link = links

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="fine")

    async def cut(request: web.Request) -> web.Response:
        """Redis dies while this response is on its way back through the proxy."""
        redis_slot.kill()
        return web.Response(text="outside text")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/cut", cut)
    stack = contextlib.AsyncExitStack()
    site = await stack.enter_async_context(serve_app(app))

    agent_key = tmp / "agent_key"
    await run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(agent_key))
    database = upstream.rsplit("/", 1)[1]
    agent_pub = await asyncio.to_thread((tmp / "agent_key.pub").read_text)

    def via(dsn: str, link: FaultProxy) -> str:
        return dsn.replace(f":{postgres.port}/", f":{link.port}/")

    config = Config(
        data_dir=tmp / "data",
        state=StateConfig(store=f"redis://127.0.0.1:{redis_link.port}/0"),
        audit=AuditConfig(store=via(audit_db, audit_link), write_timeout=1.0),
        agents={
            "coder": AgentConfig(
                token=TOKEN, owner="alice@example.com", ssh_keys=[agent_pub]
            )
        },
        postgres=PostgresConfig(
            listen="127.0.0.1:0", upstream=via(upstream, db_link), approval_timeout=30,
            login_timeout=3,
        ),
        http=HttpConfig(
            listen="127.0.0.1:0", allow_networks=["127.0.0.0/8"], trusted_hosts=["127.0.0.1"]
        ),
        ssh=SshConfig(
            listen="127.0.0.1:0",
            targets={
                "web1": SshTarget(
                    host="127.0.0.1", port=sshd.port, user=sshd.user, key=sshd.client_key,
                    known_hosts=sshd.known_hosts,
                )
            },
            routes={"coder": "web1"},
            login_timeout=5,
            approval_timeout=10,
        ),
        extauthz=ExtAuthzConfig(
            grpc_listen="127.0.0.1:0", http_listen="127.0.0.1:0", identity_header=MESH_HEADER
        ),
        admin=AdminConfig(listen="127.0.0.1:0", token=ADMIN),
    )  # fmt: skip
    rt = build(config)
    await start(rt)
    host_pub = (await asyncio.to_thread(Path(rt.endpoints["ssh host key"]).read_text)).split()
    known = tmp / "proxy_known_hosts"
    ssh_host, ssh_port = rt.endpoints["ssh"].split("//", 1)[1].rsplit(":", 1)
    known.write_text(f"[{ssh_host}]:{ssh_port} {host_pub[0]} {host_pub[1]}\n")
    world = World(
        rt, redis_slot, redis_link, audit_link, db_link, database,
        site, known, agent_key,
    )  # fmt: skip
    yield world
    if world.measured:
        print("\nmeasured recovery (s):", json.dumps(world.measured, indent=1, sort_keys=True))
    await rt.stop()
    await stack.aclose()
    for link in links:
        await link.stop()
