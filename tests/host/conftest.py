"""A network namespace (loopback only) holding real services, interlock's proxies and
`interlock host`, with two real unprivileged users: the agent's and a control user's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from interlock.config import Config, parse_config
from interlock.runtime import Runtime, build, start
from interlock.testing import serve_app
from interlock.testing.services import Postgres, Sshd, free_port, serving
from tests.services import postgres_server, redis_server, sshd_server

TOKEN = "coder-token-0123456789"
TOOL = "probe"
NAME = "probe.test"
"""Answered with 127.0.0.1 by the namespace's resolver, dnsmasq on 127.0.0.1:53 (which
the agent may query) and 127.0.0.2:53 (which it may not)."""
ROOT = str(Path(__file__).resolve().parents[2])
"""This checkout, for the enforcer's process."""
CUT_S = 1.0
"""How soon a posture change must reach the firewall (issue 29)."""


@dataclass(frozen=True)
class User:
    name: str
    uid: int


@dataclass
class Result:
    code: int
    out: str
    err: str

    def answered(self, out: str) -> bool:
        """Exit 0 printing `out`: the client reached the other end."""
        return self.code == 0 and self.out.strip() == out

    @property
    def dropped(self) -> bool:
        """Failed by timing out: the connection never opened (a proxy's refusal is an
        answer, and does not count)."""
        return self.code != 0 and any(s in self.err for s in TIMEOUTS)


TIMEOUTS = ("timeout expired", "timed out", "Timeout was reached", "Connection timeout after")
"""How psql, ssh and curl say a connection did not open in time (curl words it one way
or another depending on the code path that gave up: a CI run met "Connection timeout
after 1000 ms")."""


async def run_as(user: User | None, *argv: str, limit: float = 20) -> Result:
    """Run a real client as `user` (None: root). Spawned from the loop's thread, so it is
    in the test's namespace (a thread pool's older threads are not)."""
    prefix = ["runuser", "-u", user.name, "--"] if user is not None else []
    proc = await asyncio.create_subprocess_exec(
        *prefix, *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), limit)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


async def start_as(user: User, *argv: str) -> asyncio.subprocess.Process:
    """A long-running process as `user`, in a session of its own: `end_session` kills
    runuser and what it started (killing runuser alone would leave its child running)."""
    return await asyncio.create_subprocess_exec(
        "runuser", "-u", user.name, "--", *argv, start_new_session=True,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def end_session(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


@dataclass
class HostWorld:
    tmp: Path
    config_file: Path
    config: Config
    runtime: Runtime
    agent: User
    other: User
    tool: Path
    pg: Postgres
    sshd: Sshd
    site: int
    agent_key: Path
    proxy_known_hosts: Path
    enforcer: asyncio.subprocess.Process | None = None

    def port(self, kind: str) -> int:
        section = getattr(self.config, kind)
        return int(section.listen.rsplit(":", 1)[1])

    # --- clients ---------------------------------------------------------------------------

    async def psql(self, user: User, dsn: str) -> Result:
        return await run_as(user, "psql", "-X", "-At", "-c", "select 1", dsn)

    def proxy_dsn(self) -> str:
        return f"postgresql://coder:{TOKEN}@127.0.0.1:{self.port('postgres')}/postgres?connect_timeout=2"

    def direct_dsn(self) -> str:
        return self.pg.dsn() + "?connect_timeout=2"

    async def ssh(self, user: User, port: int, login: str, key: Path, known: Path) -> Result:
        return await run_as(
            user, "ssh", "-p", str(port), "-i", str(key), "-F", "/dev/null",
            "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=1",
            f"{login}@127.0.0.1", "echo reached",
        )  # fmt: skip

    async def ssh_proxy(self, user: User) -> Result:
        return await self.ssh(
            user, self.port("ssh"), "coder", self.agent_key, self.proxy_known_hosts
        )

    async def ssh_direct(self, user: User) -> Result:
        known = self.tmp / "sshd_known_hosts"
        return await self.ssh(user, self.sshd.port, "root", self.agent_key, known)

    async def curl_proxy(self, user: User) -> Result:
        return await run_as(
            user, "curl", "-sS", "--connect-timeout", "1", "--max-time", "10",
            "-x", f"http://coder:{TOKEN}@127.0.0.1:{self.port('http')}",
            f"http://127.0.0.1:{self.site}/ok",
        )  # fmt: skip

    async def curl_by_name(self, user: User, resolver: int) -> Result:
        """curl resolving `NAME` through resolver 127.0.0.`resolver` (1 is allowed, 2 is
        not; the host's resolv.conf swapped in a private mount namespace for this one
        command)."""
        return await run_as(
            None, "unshare", "-m", "sh", "-c",
            'mount --bind "$0" /etc/resolv.conf && exec runuser -u "$1" -- '
            'curl -sS --connect-timeout 1 "$2"',
            str(self.tmp / f"resolv{resolver}.conf"), user.name,
            f"http://{NAME}:{self.site}/ok",
        )  # fmt: skip

    async def curl_direct(self, user: User) -> Result:
        return await run_as(
            user, "curl", "-sS", "--connect-timeout", "1", f"http://127.0.0.1:{self.site}/ok"
        )

    # --- the enforcer ----------------------------------------------------------------------

    async def start_enforcer(self, config_file: Path | None = None) -> None:
        """`interlock host` as its own process, until it prints its banner."""
        env = {**os.environ, "PYTHONPATH": ROOT}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m", "interlock.cli", "host", "-c", str(config_file or self.config_file),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        assert proc.stdout is not None
        seen = []
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            seen.append(line.decode(errors="replace"))
            if not line:
                pytest.fail(f"interlock host exited: {''.join(seen)}")
            if line.startswith(b"interlock host:"):
                break
        self.enforcer = proc
        self._drain = asyncio.create_task(self._read_rest(proc))

    async def _read_rest(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while await proc.stdout.readline():
            pass

    async def stop_enforcer(self) -> None:
        proc, self.enforcer = self.enforcer, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
        await self._drain

    async def table(self) -> str:
        r = await run_as(None, "nft", "list", "table", "inet", "interlock")
        return r.out if r.code == 0 else ""

    async def until_table(self, needle: str, present: bool = True) -> float:
        """Seconds until the kernel's table does (or no longer does) contain `needle`."""
        started = time.monotonic()
        while (needle in await self.table()) != present:
            assert time.monotonic() - started < 10, (
                f"table never {'had' if present else 'lost'} {needle!r}"
            )
            await asyncio.sleep(0.01)
        return time.monotonic() - started

    async def dropped_packets(self) -> int:
        """The agent chain's drop counter."""
        found = re.search(r"counter packets (\d+) bytes \d+ drop", await self.table())
        return int(found.group(1)) if found else 0

    async def records(self) -> list[dict[str, Any]]:
        audit = self.runtime.audit
        await audit.flush()
        stored = await audit.store.records(0, await audit.store.size())
        return [json.loads(r.data) for r in stored]

    async def host_denials(
        self, port: int, target: str | None = None, bound: float = 5.0
    ) -> list[dict[str, Any]]:
        """The enforcer's audit records of dropped connections to `port` (and `target`,
        if given); waits for one."""
        started = time.monotonic()
        while True:
            found = [
                r for r in await self.records()
                if r["action"]["protocol"] == "host" and r["action"]["details"]["port"] == port
                and target in (None, r["action"]["target"])
            ]  # fmt: skip
            if found or time.monotonic() - started > bound:
                return found
            await asyncio.sleep(0.05)


@contextlib.contextmanager
def _namespace() -> Iterator[None]:
    """Move this thread (the event loop's) into a new network namespace with only `lo`;
    every socket and child process made from it lives there. Restored afterwards."""
    if os.geteuid() != 0:
        pytest.fail("tests/host run as root (they create a network namespace and users)")
    for tool, package in (("nft", "nftables"), ("setfacl", "acl")):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is required: apt-get install {package} (or scripts/system-deps)")
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        os.unshare(os.CLONE_NEWNET)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        yield
    finally:
        os.setns(original, os.CLONE_NEWNET)
        os.close(original)


@contextlib.contextmanager
def _user(name: str) -> Iterator[User]:
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield User(name, pwd.getpwnam(name).pw_uid)
    finally:
        gone = subprocess.run(["userdel", name], capture_output=True, text=True)
        assert gone.returncode == 0, f"test user {name} left behind: {gone.stderr}"


def config_text(w: dict[str, Any], **host: str) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in host.items())
    return f"""
data_dir = "{w["tmp"] / "data"}"
[state]
store = "{w["redis"]}"
[audit]
store = "sqlite:///{w["tmp"] / "audit.db"}"
[agents.coder]
token = "{TOKEN}"
ssh_keys = ["{w["agent_pub"]}"]
[postgres]
listen = "127.0.0.1:{w["pg_port"]}"
upstream = "{w["upstream"]}"
login_timeout = 3
[http]
listen = "127.0.0.1:{w["http_port"]}"
allow_networks = ["127.0.0.0/8"]
trusted_hosts = ["127.0.0.1"]
[ssh]
listen = "127.0.0.1:{w["ssh_port"]}"
routes = {{ coder = "web1" }}
login_timeout = 5
[ssh.targets.web1]
host = "127.0.0.1"
port = {w["sshd"].port}
user = "{w["sshd"].user}"
key = "{w["sshd"].client_key}"
known_hosts = "{w["sshd"].known_hosts}"
[host]
nflog_group = 29
dns = ["127.0.0.1"]
resync_interval = 1.0
{extra}[host.agents]
coder = {{ uid = {w["agent"].uid} }}
[host.tools]
{TOOL} = "{w["tool"]}"
"""


@dataclass
class Prepared:
    tmp: Path
    agent: User
    other: User
    tool: Path
    pg: Postgres
    sshd: Sshd
    agent_key: Path
    config_file: Path
    config: Config
    ssh_port: int


def _prepare(stack: contextlib.ExitStack) -> Prepared:
    """Namespace, users, services and the config file, before anything async starts."""
    stack.enter_context(_namespace())
    tag = f"{os.getpid() % 100000}"
    agent = stack.enter_context(_user(f"ilk{tag}agent"))
    other = stack.enter_context(_user(f"ilk{tag}other"))
    tmp = Path(tempfile.mkdtemp(prefix="interlock-host-"))
    stack.callback(shutil.rmtree, tmp, True)
    tmp.chmod(0o755)  # the users run clients with files from here
    tool = tmp / TOOL
    shutil.copy2("/usr/bin/id", tool)
    pg = stack.enter_context(postgres_server())
    sshd = stack.enter_context(sshd_server())
    redis = stack.enter_context(redis_server())
    (tmp / "hosts").write_text(f"127.0.0.1 {NAME}\n")
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    stack.enter_context(serving([
        dnsmasq, "--keep-in-foreground", "--port=53", "--listen-address=127.0.0.1",
        "--listen-address=127.0.0.2", "--bind-interfaces", "--no-resolv", "--no-hosts",
        f"--addn-hosts={tmp / 'hosts'}", "--conf-file=/dev/null", "--pid-file=",
        "--user=root", "--log-facility=-",
    ], 53, "dnsmasq"))  # fmt: skip
    for n in (1, 2):
        (tmp / f"resolv{n}.conf").write_text(
            f"nameserver 127.0.0.{n}\noptions timeout:1 attempts:1\n"
        )
        (tmp / f"resolv{n}.conf").chmod(0o644)
    agent_key = tmp / "agent_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(agent_key)], check=True
    )
    # The agent's own key; the control user cannot read it, and sshd refusing it is
    # what shows its connection got through.
    os.chown(agent_key, agent.uid, -1)
    shutil.copy(sshd.known_hosts, tmp / "sshd_known_hosts")
    (tmp / "sshd_known_hosts").chmod(0o644)
    values = {
        "tmp": tmp, "redis": redis.url, "agent_pub": (tmp / "agent_key.pub").read_text().strip(),
        "pg_port": free_port(), "http_port": free_port(), "ssh_port": free_port(),
        "upstream": pg.dsn(), "sshd": sshd, "agent": agent, "tool": tool,
    }  # fmt: skip
    text = config_text(values, kill_on_isolate="true")
    config_file = tmp / "interlock.toml"
    config_file.write_text(text)
    config = parse_config(tomllib.loads(text))
    return Prepared(
        tmp, agent, other, tool, pg, sshd, agent_key, config_file, config, values["ssh_port"]
    )


def _known_hosts(p: Prepared, host_key: str) -> Path:
    host_pub = Path(host_key).read_text().split()
    known = p.tmp / "proxy_known_hosts"
    known.write_text(f"[127.0.0.1]:{p.ssh_port} {host_pub[0]} {host_pub[1]}\n")
    known.chmod(0o644)
    return known


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world() -> AsyncIterator[HostWorld]:
    with contextlib.ExitStack() as stack:
        p = _prepare(stack)
        rt = build(p.config)
        await start(rt)

        async def ok(request: web.Request) -> web.Response:
            return web.Response(text="fine")

        app = web.Application()
        app.router.add_get("/ok", ok)
        async with serve_app(app) as site:
            known = _known_hosts(p, rt.endpoints["ssh host key"])
            w = HostWorld(
                p.tmp, p.config_file, p.config, rt, p.agent, p.other, p.tool, p.pg, p.sshd,
                int(site.rsplit(":", 1)[1]), p.agent_key, known,
            )  # fmt: skip
            await w.start_enforcer()
            try:
                yield w
            finally:
                await w.stop_enforcer()
                await rt.stop()
